"""Where sFlow datagrams come from: capture files (pcap, pcapng), raw datagram files, and a live UDP socket.

Every source yields :class:`RawBatch` objects — one byte buffer plus the offset and length of each datagram —
which is exactly what :func:`peerlab_tui.core.sflow.fast.decode_batch` takes, so no per-datagram object is
built between the wire and the columns.

Capture files: classic pcap (µs and ns, both byte orders) is read with a record walk and a vectorised
link/IP/UDP parse; pcapng goes through dpkt. Link types: Ethernet (with 802.1Q tags), Linux SLL and SLL2, raw
IP (101, 12, 14, 228, 229) and BSD loopback. IPv4 and IPv6 UDP on any port is taken; anything else (TCP,
ICMP, IPv4 fragments, other link types) is counted in :class:`CaptureStats` and skipped. Raw ``.bin`` files
hold exactly one datagram (the UDP payload, as in the shared test data).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import mmap
import os
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from peerlab_tui.core.errors import InputError
from peerlab_tui.core.sflow._fast_walk import PAD

if TYPE_CHECKING:  # asyncio is imported where the listener runs: reading files does not pay for it
    import asyncio

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),
    b"\xa1\xb2\x3c\x4d": (">", True),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_RAW_TYPES = {LINKTYPE_RAW, 12, 14, 228, 229}
_MMAP_MIN = 1 << 20  # files from this size on are memory-mapped
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux; cmsg carries the socket's cumulative drop count


class CaptureError(InputError):
    """The file is missing, unreadable, or not a capture / sFlow datagram file."""


@dataclass
class CaptureStats:
    """What a capture held besides the datagrams."""

    packets: int = 0  # records in the file
    udp: int = 0  # UDP datagrams extracted
    non_udp: int = 0  # IP packets that are not UDP (TCP, ICMP, ...)
    non_ip: int = 0  # frames that are not IPv4/IPv6 (ARP, LLDP, ...)
    fragments: int = 0  # IPv4 fragments (not reassembled)
    truncated: int = 0  # frames cut before the end of their UDP header
    unsupported_link: int = 0  # frames of a link type we do not read

    def to_json(self) -> dict[str, int]:
        """Plain dict."""
        return dict(self.__dict__)


@dataclass
class RawBatch:
    """Datagrams as one buffer: ``buffer[offsets[i] : offsets[i] + lengths[i]]`` is datagram ``i``."""

    buffer: U8
    offsets: I64
    lengths: I64
    times: npt.NDArray[np.float64] | None = None  # capture timestamps (seconds since the epoch), if known

    def __len__(self) -> int:
        return int(self.offsets.size)

    def datagram(self, i: int) -> bytes:
        """Datagram ``i`` as bytes."""
        o = int(self.offsets[i])
        return self.buffer[o : o + int(self.lengths[i])].tobytes()

    def slice(self, start: int, stop: int) -> RawBatch:
        """Datagrams ``start:stop`` (sharing the buffer)."""
        times = None if self.times is None else self.times[start:stop]
        return RawBatch(self.buffer, self.offsets[start:stop], self.lengths[start:stop], times)

    @classmethod
    def from_datagrams(cls, datagrams: list[bytes]) -> RawBatch:
        """A batch from separate datagrams (each start padded to a multiple of 4)."""
        lens = np.fromiter(map(len, datagrams), np.int64, len(datagrams))
        if (lens & 3).any():
            datagrams = [d + b"\0" * (-len(d) & 3) for d in datagrams]
        padded = (lens + 3) & ~3
        offs = np.zeros(lens.size, np.int64)
        if lens.size > 1:
            np.cumsum(padded[:-1], out=offs[1:])
        # Trailing zero padding lets the decoders use this buffer without copying it.
        return cls(np.frombuffer(b"".join([*datagrams, bytes(PAD)]), np.uint8), offs, lens)


@dataclass
class Capture:
    """Every datagram of a file, plus its statistics."""

    batch: RawBatch
    stats: CaptureStats = field(default_factory=CaptureStats)
    kind: str = "pcap"

    def batches(self, size: int = 1000) -> Iterator[RawBatch]:
        """The datagrams in batches of ``size``."""
        n = len(self.batch)
        for i in range(0, n, size):
            yield self.batch.slice(i, min(i + size, n))


# --------------------------------------------------------------------------------------------- files


def read_file(path: str | os.PathLike[str], *, timestamps: bool = True) -> Capture:
    """Read a pcap, pcapng or raw datagram file; raises :class:`CaptureError` for anything else.

    ``timestamps=False`` skips collecting the capture times of pcap records (counting does not need them).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size >= _MMAP_MIN:
                # Map the file: page-cache pages map in cheaply, where reading into fresh anonymous memory
                # costs a page fault per 4 KiB (dominant for big captures on VMs). Reads past the end of the
                # last datagram (the decoders' padding) make that one batch copy its span.
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                arr = np.frombuffer(mm, np.uint8)
                data = memoryview(mm)
            else:
                # Small files: an array with zero padding after the data, so no batch needs a copy.
                arr = np.zeros(size + PAD, np.uint8)
                got = fh.readinto(memoryview(arr.data)[:size])
                arr = arr[: got + PAD] if got < size else arr
                data = memoryview(arr.data)[:got]
    except FileNotFoundError:
        raise CaptureError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{p}: is a directory") from None
    except OSError as exc:
        raise CaptureError(f"{p}: cannot read ({exc.strerror})") from None
    head = bytes(data[:4])
    if head in PCAP_MAGICS:
        return _read_pcap(p, data, arr, timestamps)
    if head == PCAPNG_MAGIC:
        return _read_pcapng(p, bytes(data))
    # Agent address type 0 (unknown), 1 (IPv4) or 2 (IPv6): all legal.
    if (
        len(data) >= 8
        and head == b"\0\0\0\x05"
        and bytes(data[4:8])
        in (
            b"\0\0\0\x00",
            b"\0\0\0\x01",
            b"\0\0\0\x02",
        )
    ):
        # A raw sFlow v5 datagram (the UDP payload) as saved by collectors' test suites.
        batch = RawBatch(arr, np.zeros(1, np.int64), np.array([len(data)], np.int64))
        return Capture(batch, CaptureStats(packets=1, udp=1), kind="raw")
    raise CaptureError(f"{p}: not a pcap/pcapng capture nor a raw sFlow v5 datagram")


def _read_pcap(p: Path, data: memoryview, arr: U8, timestamps: bool = True) -> Capture:
    n = len(data)
    if n < 24:
        raise CaptureError(f"{p}: truncated pcap header")
    endian, nanos = PCAP_MAGICS[bytes(data[:4])]
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    # Record walk, the only per-packet Python loop: records are contiguous, so only their starts are kept
    # (lengths are differences), read through four u32 views, one per alignment.
    fmt = "I" if endian == "<" and sys.byteorder == "little" else None
    starts: list[int] = []
    append = starts.append
    off = 24
    lim = n - 16
    if fmt is not None:
        views = [data[r : r + ((n - r) // 4) * 4].cast("I") for r in range(4)]
        while off <= lim:
            append(off)
            off += 16 + views[off & 3][(off >> 2) + 2]
    else:
        rec = struct.Struct(endian + "I").unpack_from
        while off <= lim:
            append(off)
            off += 16 + rec(data, off + 8)[0]
    rec_starts = np.array(starts, np.int64)
    ends = np.append(rec_starts[1:], off) if rec_starts.size else rec_starts
    if off > n:  # the last record runs past the end of the file
        log.warning("%s: last record truncated", p)
        rec_starts = rec_starts[:-1]
        ends = ends[:-1]
    offsets = rec_starts + 16
    ts = np.ndarray(shape=(n - 7,), dtype=endian + "u4", buffer=arr, strides=(1,)) if n >= 8 else None
    times = None
    if timestamps and ts is not None and rec_starts.size:
        times = ts[rec_starts].astype(np.float64) + ts[rec_starts + 4] / (1e9 if nanos else 1e6)
    frames = RawBatch(arr, offsets, ends - offsets, times)
    return Capture(*_extract_udp(frames, np.full(offsets.size, linktype, np.int64)), kind="pcap")


def _read_pcapng(p: Path, data: bytes) -> Capture:
    import io

    import dpkt

    frames: list[bytes] = []
    links: list[int] = []
    stamps: list[float] = []
    try:
        reader = dpkt.pcapng.Reader(io.BytesIO(data))
        linktype = int(reader.datalink())
        for ts, frame in reader:
            frames.append(bytes(frame))
            links.append(linktype)
            stamps.append(float(ts))
    except (ValueError, dpkt.dpkt.Error) as exc:
        raise CaptureError(f"{p}: malformed pcapng ({exc})") from None
    batch = (
        RawBatch.from_datagrams(frames)
        if frames
        else RawBatch(np.zeros(PAD, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))
    )
    batch.times = np.array(stamps, np.float64)
    return Capture(*_extract_udp(batch, np.array(links, np.int64)), kind="pcapng")


def _u16(u8: U8, off: I64) -> I64:
    return (u8[off].astype(np.int64) << 8) | u8[off + 1]


_HEAD = 40  # bytes of each frame read for the link/IP parse: link header (<= 22) + the IP fields we use


def _frame_heads(u8: U8, off: I64) -> U8:
    """The first ``_HEAD`` bytes of every frame as one (n, _HEAD) array (zero past the end of the buffer).

    One row gather instead of one scattered gather per field: the frames of a big capture are far apart in
    memory, so each field read would miss the cache again.
    """
    width = _HEAD
    lim = u8.size - width
    dtype = np.dtype((np.void, width))
    near = off > lim
    if not near.any():
        rows = np.ndarray(shape=(lim + 1,), dtype=dtype, buffer=u8, strides=(1,))[off]
    else:  # frames within ``width`` of the end: read them from a zero-padded copy of the tail
        start = max(lim, 0)
        tail = np.zeros(u8.size - start + width, np.uint8)
        tail[: u8.size - start] = u8[start:]
        rows = np.empty(off.size, dtype)
        if lim >= 0:
            far = ~near
            whole = np.ndarray(shape=(lim + 1,), dtype=dtype, buffer=u8, strides=(1,))
            rows[far] = whole[off[far]]
        tv = np.ndarray(shape=(tail.size - width + 1,), dtype=dtype, buffer=tail, strides=(1,))
        rows[near] = tv[off[near] - start]
    return rows.view(np.uint8).reshape(-1, width)


def _extract_udp(frames: RawBatch, linktype: I64) -> tuple[RawBatch, CaptureStats]:
    """Vectorised link -> IPv4/IPv6 -> UDP payload over every frame."""
    st = CaptureStats(packets=len(frames))
    u8 = frames.buffer
    o = frames.offsets
    ln = frames.lengths
    n = o.size
    if n == 0:
        return RawBatch(u8, o, ln, frames.times), st
    flat = _frame_heads(u8, o).reshape(-1)
    rowbase = np.arange(n, dtype=np.int64) * _HEAD

    def b(rel: I64 | int) -> I64:
        """Byte at ``rel`` bytes into each frame (positions past the head read as its last byte)."""
        return flat.take(rowbase + np.clip(rel, 0, _HEAD - 1)).astype(np.int64)

    def w(rel: I64 | int) -> I64:
        return (b(rel) << 8) | b(np.add(rel, 1))

    l3 = np.full(n, -1, np.int64)  # offset of the IP header inside the frame
    proto = np.full(n, -1, np.int64)  # 4 / 6 / other
    eth = linktype == LINKTYPE_ETHERNET
    if eth.any():
        pos: I64 | int = 12
        et = np.where(eth & (ln >= 14), w(12), -1)
        for _ in range(2):  # 802.1Q / QinQ (most captures have none: skip the work then)
            tag = (et == 0x8100) | (et == 0x88A8)
            if not tag.any():
                break
            pos = np.where(tag, pos + 4, pos)
            et = np.where(tag & (ln >= pos + 2), w(pos), np.where(tag, -1, et))
        l3 = np.where(eth & (et >= 0), pos + 2, l3)
        proto = np.where(eth & (et == 0x0800), 4, np.where(eth & (et == 0x86DD), 6, proto))
    sll = linktype == LINKTYPE_LINUX_SLL
    if sll.any():
        et = w(14)
        l3 = np.where(sll, 16, l3)
        proto = np.where(sll & (et == 0x0800), 4, np.where(sll & (et == 0x86DD), 6, proto))
    sll2 = linktype == LINKTYPE_LINUX_SLL2
    if sll2.any():
        et = w(0)
        l3 = np.where(sll2, 20, l3)
        proto = np.where(sll2 & (et == 0x0800), 4, np.where(sll2 & (et == 0x86DD), 6, proto))
    raw = np.isin(linktype, list(_RAW_TYPES))
    if raw.any():
        v = b(0) >> 4
        l3 = np.where(raw, 0, l3)
        proto = np.where(raw & (v == 4), 4, np.where(raw & (v == 6), 6, proto))
    null = linktype == LINKTYPE_NULL
    if null.any():
        fam_le = b(0) | (b(1) << 8)
        fam_be = b(3) | (b(2) << 8)
        fam = np.maximum(fam_le, fam_be)
        l3 = np.where(null, 4, l3)
        proto = np.where(null & (fam == 2), 4, np.where(null & np.isin(fam, [10, 24, 28, 30]), 6, proto))
    known = eth | sll | sll2 | raw | null
    st.unsupported_link = int(np.count_nonzero(~known))
    st.non_ip = int(np.count_nonzero(known & (proto < 0)))

    ip = o + l3
    udp_off = np.full(n, -1, np.int64)
    v4 = (proto == 4) & (ln >= l3 + 20)
    ihl = (b(l3) & 15) * 4
    frag = w(l3 + 6) & 0x3FFF  # MF flag or fragment offset
    v4_udp = v4 & (b(l3 + 9) == 17)
    st.fragments = int(np.count_nonzero(v4_udp & (frag != 0)))
    v4_udp &= frag == 0
    udp_off = np.where(v4_udp, ip + ihl, udp_off)
    v6 = (proto == 6) & (ln >= l3 + 40)
    v6_udp = v6 & (b(l3 + 6) == 17)
    udp_off = np.where(v6_udp, ip + 40, udp_off)
    ip_ok = v4 | v6
    st.truncated = int(np.count_nonzero((proto >= 0) & ~ip_ok))
    st.non_udp = int(np.count_nonzero(ip_ok & ~(v4_udp | v6_udp)) - st.fragments)
    has = udp_off >= 0
    frame_end = o + ln
    fits = has & (udp_off + 8 <= frame_end)
    st.truncated += int(np.count_nonzero(has & ~fits))
    # Payload length from the IP header (not the UDP length field, which fuzzed captures corrupt: tcpdump and
    # sflowtool also go by the IP length), bounded by the captured frame; Ethernet padding is cut off.
    ip_len = np.where(proto == 4, w(l3 + 2) - ihl, w(l3 + 4)) - 8
    payload = udp_off + 8
    plen = np.where((ip_len >= 0) & (payload + ip_len <= frame_end), ip_len, frame_end - payload)
    sel = np.flatnonzero(fits)
    st.udp = int(sel.size)
    times = None if frames.times is None else frames.times[sel]
    return RawBatch(u8, payload[sel], plen[sel], times), st


# --------------------------------------------------------------------------------------------- UDP


@dataclass
class ListenerStats:
    """Counters of a :class:`UdpListener` (cumulative)."""

    datagrams: int = 0
    bytes: int = 0
    batches: int = 0
    kernel_drops: int = 0  # from SO_RXQ_OVFL (0 when the kernel does not report it)
    queue_drops: int = 0  # datagrams dropped because the consumer was too slow
    rcvbuf_requested: int = 0
    rcvbuf_granted: int = 0
    rxq_ovfl: bool = False  # whether kernel drop reporting is active

    def to_json(self) -> dict[str, Any]:
        """Plain dict."""
        return dict(self.__dict__)


class UdpListener:
    """An asyncio UDP listener that hands out datagrams in batches (≤ ``batch_size`` or every ``interval`` s).

    It reads with ``recvmsg`` from the event loop's reader callback, draining the socket each time, so a burst
    becomes one batch rather than one callback per packet; batches go to a bounded queue, and when the
    consumer falls behind whole batches are dropped and counted (``queue_drops``) instead of growing memory.
    """

    def __init__(
        self,
        host: str = "::",
        port: int = 6343,
        *,
        batch_size: int = 1000,
        interval: float = 0.05,
        rcvbuf: int = 32 * 1024 * 1024,
        queue_batches: int = 64,
        sock: socket.socket | None = None,
    ) -> None:
        import asyncio

        self.host = host
        self.port = port
        self.batch_size = batch_size
        self.interval = interval
        self.stats = ListenerStats(rcvbuf_requested=rcvbuf)
        self._queue: asyncio.Queue[RawBatch | None] = asyncio.Queue(maxsize=queue_batches)
        self._pending: list[bytes] = []
        self._sock: socket.socket | None = None
        self._given = sock  # a bound UDP socket made elsewhere (e.g. inside another network namespace)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._last_flush = 0.0
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port) — the port is the real one when 0 was asked."""
        if self._sock is None:
            raise RuntimeError("listener not started")
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> None:
        """Bind the socket (unless one was given) and start reading."""
        import asyncio

        if self._given is not None:
            sock = self._given
            fam = sock.family
        else:
            try:
                fam = socket.AF_INET6 if ipaddress.ip_address(self.host).version == 6 else socket.AF_INET
            except ValueError:
                raise InputError(f"listen address must be an IP address, not {self.host!r}") from None
            sock = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            if fam == socket.AF_INET6 and self._given is None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.stats.rcvbuf_requested)
            # Above rmem_max only a privileged process gets the size it asks for.
            force = getattr(socket, "SO_RCVBUFFORCE", 33)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, force, self.stats.rcvbuf_requested)
            self.stats.rcvbuf_granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                self.stats.rxq_ovfl = True
            except OSError:
                self.stats.rxq_ovfl = False
            if self._given is None:
                sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise InputError(f"cannot listen on [{self.host}]:{self.port}: {exc.strerror}") from None
        sock.setblocking(False)
        self._sock = sock
        self.port = self.address[1]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._last_flush = time.monotonic()
        self._flusher = asyncio.create_task(self._flush_periodically())
        log.info(
            "listening on [%s]:%d, SO_RCVBUF requested %d granted %d",
            self.host,
            self.port,
            self.stats.rcvbuf_requested,
            self.stats.rcvbuf_granted,
        )

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        cmsg_space = socket.CMSG_SPACE(4)
        pending = self._pending
        # Drain what is queued, bounded so one busy socket cannot starve the loop.
        for _ in range(4 * self.batch_size):
            try:
                data, anc, _flags, _addr = sock.recvmsg(65535, cmsg_space)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("recvmsg failed: %s", exc)
                break
            for level, typ, value in anc:
                if level == socket.SOL_SOCKET and typ == SO_RXQ_OVFL and len(value) >= 4:
                    self.stats.kernel_drops = struct.unpack("=I", value[:4])[0]
            pending.append(data)
            self.stats.datagrams += 1
            self.stats.bytes += len(data)
            if len(pending) >= self.batch_size:
                self._flush()
                pending = self._pending

    def _flush(self) -> None:
        import asyncio

        self._last_flush = time.monotonic()
        if not self._pending:
            return
        batch = RawBatch.from_datagrams(self._pending)
        self._pending = []
        try:
            self._queue.put_nowait(batch)
            self.stats.batches += 1
        except asyncio.QueueFull:
            self.stats.queue_drops += len(batch)

    async def _flush_periodically(self) -> None:
        import asyncio

        while not self._closed:
            await asyncio.sleep(self.interval / 2)
            if time.monotonic() - self._last_flush >= self.interval:
                self._flush()

    async def batches(self) -> AsyncIterator[RawBatch]:
        """Yield batches until :meth:`close`."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def get(self, timeout: float | None = None) -> RawBatch | None:  # noqa: ASYNC109
        """The next batch, or None on timeout / after close."""
        import asyncio

        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        """Stop reading, flush what is pending and release the socket."""
        import asyncio

        if self._closed:
            return
        self._closed = True
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._flush()
        if self._flusher is not None:
            self._flusher.cancel()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def __aenter__(self) -> UdpListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "Capture",
    "CaptureError",
    "CaptureStats",
    "ListenerStats",
    "RawBatch",
    "UdpListener",
    "read_file",
]
