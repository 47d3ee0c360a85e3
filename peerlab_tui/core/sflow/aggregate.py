"""What a user watches: traffic rates and top talkers computed from decoded flow samples.

An :class:`Aggregator` is fed :class:`~peerlab_tui.core.sflow.fast.FlowBatch` objects from any source (file,
live listener) and keeps per-second buckets; :meth:`Aggregator.snapshot` returns plain data for each sliding
window (e.g. 10 s and 60 s). Every batch is reduced with numpy (``np.unique`` + ``np.bincount``); Python
only touches the distinct keys of a batch. ``add`` and ``snapshot`` take a lock, so a reader thread can feed
the aggregator while a UI pulls snapshots on its own interval (:class:`LiveFeed` is such a reader).

Estimates: each flow sample stands for ``sampling_rate`` packets and ``frame_length * sampling_rate`` bytes
(``frame_length`` from the sampled header, else the ``length`` of sampled_ipv4/ipv6). Addresses come from the
sampled header, else from sampled_ipv4/ipv6. For a prefix, traffic *in* is traffic whose destination is in the
prefix, *out* whose source is (traffic inside the prefix counts in both). The port of a flow is the lower of
its two TCP/UDP ports (the service side, as a rule).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from peerlab_tui.core.errors import InputError
from peerlab_tui.core.sflow.fast import FlowBatch

log = logging.getLogger(__name__)

U64 = npt.NDArray[np.uint64]


@dataclass
class _Tally:
    bytes: int = 0
    packets: int = 0
    samples: int = 0

    def add(self, b: int, p: int, s: int) -> None:
        self.bytes += b
        self.packets += p
        self.samples += s


@dataclass
class _Bucket:
    second: int
    total: _Tally = field(default_factory=_Tally)
    prefix_in: list[_Tally] = field(default_factory=list)
    prefix_out: list[_Tally] = field(default_factory=list)
    src: dict[bytes, list[int]] = field(default_factory=dict)  # key -> [bytes, packets]
    dst: dict[bytes, list[int]] = field(default_factory=dict)
    ports: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    protocols: dict[int, list[int]] = field(default_factory=dict)


def _halves(addr: npt.NDArray[np.uint8]) -> tuple[U64, U64]:
    """The two big-endian 64-bit halves of (n, 16) addresses."""
    a = np.ascontiguousarray(addr)
    v = a.view(">u8").reshape(-1, 2)
    return v[:, 0].astype(np.uint64), v[:, 1].astype(np.uint64)


class Prefix:
    """An IPv4 or IPv6 prefix matched against 16-byte (IPv4-mapped) addresses."""

    def __init__(self, text: str) -> None:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InputError(f"not an IP prefix: {text!r}") from None
        self.text = str(net)
        if net.version == 4:
            packed = b"\0" * 10 + b"\xff\xff" + net.network_address.packed
            bits = net.prefixlen + 96
        else:
            packed = net.network_address.packed
            bits = net.prefixlen
        mask = (((1 << bits) - 1) << (128 - bits)) if bits else 0
        self.mask_hi = np.uint64(mask >> 64)
        self.mask_lo = np.uint64(mask & 0xFFFFFFFFFFFFFFFF)
        value = int.from_bytes(packed, "big") & mask
        self.net_hi = np.uint64(value >> 64)
        self.net_lo = np.uint64(value & 0xFFFFFFFFFFFFFFFF)

    def contains(self, hi: U64, lo: U64) -> npt.NDArray[np.bool_]:
        """Which addresses (given as halves) fall in the prefix."""
        return ((hi & self.mask_hi) == self.net_hi) & ((lo & self.mask_lo) == self.net_lo)


def format_address(raw: bytes) -> str:
    """Text form of a 16-byte address (IPv4-mapped shown as IPv4)."""
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


class Aggregator:
    """Sliding-window traffic statistics over flow batches (thread-safe)."""

    def __init__(
        self,
        prefixes: Sequence[str] = (),
        *,
        windows: Sequence[float] = (10.0, 60.0),
        top: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not windows or min(windows) <= 0:
            raise InputError("windows must be positive numbers of seconds")
        self.prefixes = [Prefix(p) for p in prefixes]
        self.windows = sorted(float(w) for w in windows)
        self.top = top
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[_Bucket] = deque()
        self._horizon = int(np.ceil(self.windows[-1])) + 1
        self.totals = {"batches": 0, "samples": 0, "bytes": 0, "packets": 0, "datagrams": 0, "errors": 0}
        self._last_time: float | None = None

    # ----------------------------------------------------------------------------------------- feeding

    def add(
        self,
        flows: FlowBatch,
        now: float | npt.NDArray[np.float64] | None = None,
        *,
        datagrams: int = 0,
        errors: int = 0,
    ) -> None:
        """Account a batch. ``now`` is the time of the batch or of each row (defaults to the clock)."""
        n = len(flows)
        times = np.asarray(self.clock() if now is None else now, np.float64)
        with self._lock:
            self.totals["batches"] += 1
            self.totals["datagrams"] += datagrams
            self.totals["errors"] += errors
            if n == 0:
                return
            rate = np.asarray(flows.sampling_rate, np.int64).clip(min=0)
            length = np.where(flows.frame_length >= 0, flows.frame_length, flows.rec_length).clip(min=0)
            nbytes = length * rate
            use_rec = (flows.ip_version < 0) & (flows.rec_ip_version >= 0)
            src = np.where(use_rec[:, None], flows.rec_src_ip, flows.src_ip)
            dst = np.where(use_rec[:, None], flows.rec_dst_ip, flows.dst_ip)
            has_ip = (flows.ip_version >= 0) | use_rec
            proto = np.where(use_rec, flows.rec_protocol, flows.ip_proto)
            sport = np.where(use_rec, flows.rec_src_port, flows.src_port)
            dport = np.where(use_rec, flows.rec_dst_port, flows.dst_port)
            second = np.floor(np.broadcast_to(times, (n,))).astype(np.int64)
            self.totals["samples"] += n
            self.totals["bytes"] += int(nbytes.sum())
            self.totals["packets"] += int(rate.sum())
            latest = float(times.max())
            self._last_time = latest if self._last_time is None else max(self._last_time, latest)
            seconds = np.unique(second)
            for sec in seconds.tolist():
                rows = np.flatnonzero(second == sec) if seconds.size > 1 else None
                self._add_rows(int(sec), rows, nbytes, rate, src, dst, has_ip, proto, sport, dport)
            self._expire()

    def _bucket(self, sec: int) -> _Bucket:
        for b in reversed(self._buckets):
            if b.second == sec:
                return b
            if b.second < sec:
                break
        b = _Bucket(
            sec, prefix_in=[_Tally() for _ in self.prefixes], prefix_out=[_Tally() for _ in self.prefixes]
        )
        self._buckets.append(b)
        if len(self._buckets) > 1 and self._buckets[-2].second > sec:  # late data: keep buckets ordered
            self._buckets = deque(sorted(self._buckets, key=lambda x: x.second))
        return b

    def _add_rows(
        self,
        sec: int,
        rows: npt.NDArray[np.intp] | None,
        nbytes: Any,
        rate: Any,
        src: Any,
        dst: Any,
        has_ip: Any,
        proto: Any,
        sport: Any,
        dport: Any,
    ) -> None:
        if rows is not None:
            nbytes, rate, src, dst = nbytes[rows], rate[rows], src[rows], dst[rows]
            has_ip, proto, sport, dport = has_ip[rows], proto[rows], sport[rows], dport[rows]
        b = self._bucket(sec)
        b.total.add(int(nbytes.sum()), int(rate.sum()), int(nbytes.size))
        if self.prefixes:
            shi, slo = _halves(src)
            dhi, dlo = _halves(dst)
            for i, p in enumerate(self.prefixes):
                inn = p.contains(dhi, dlo) & has_ip
                out = p.contains(shi, slo) & has_ip
                b.prefix_in[i].add(int(nbytes[inn].sum()), int(rate[inn].sum()), int(inn.sum()))
                b.prefix_out[i].add(int(nbytes[out].sum()), int(rate[out].sum()), int(out.sum()))
        ip_rows = np.flatnonzero(has_ip)
        if ip_rows.size:
            wb, wp = nbytes[ip_rows], rate[ip_rows]
            _merge(b.src, _group_addr(src[ip_rows], wb, wp))
            _merge(b.dst, _group_addr(dst[ip_rows], wb, wp))
            pr = proto[ip_rows]
            _merge(b.protocols, _group_int(pr, wb, wp))
            sp, dp = sport[ip_rows], dport[ip_rows]
            has_port = (sp >= 0) & (dp >= 0)
            if has_port.any():
                port = np.minimum(sp, dp)[has_port]
                key = pr[has_port] * 65536 + port
                grouped = _group_int(key, wb[has_port], wp[has_port])
                _merge(b.ports, {(k >> 16, k & 0xFFFF): v for k, v in grouped.items()})

    def _expire(self) -> None:
        if self._last_time is None:
            return
        oldest = int(np.floor(self._last_time)) - self._horizon
        while self._buckets and self._buckets[0].second < oldest:
            self._buckets.popleft()

    # ----------------------------------------------------------------------------------------- reading

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Rates and top talkers per window, as plain JSON-ready data.

        A window of W seconds covers the W whole seconds up to and including the current one; rates are the
        window's totals divided by W.
        """
        t = self.clock() if now is None else now
        current = int(np.floor(t))
        with self._lock:
            buckets = list(self._buckets)
            totals = dict(self.totals)
        out: dict[str, Any] = {"time": t, "totals": totals, "windows": {}}
        for w in self.windows:
            lo = current - int(np.ceil(w)) + 1
            sel = [b for b in buckets if lo <= b.second <= current]
            out["windows"][_window_name(w)] = self._window(sel, w)
        return out

    def _window(self, sel: list[_Bucket], w: float) -> dict[str, Any]:
        total = _Tally()
        for b in sel:
            total.add(b.total.bytes, b.total.packets, b.total.samples)
        res: dict[str, Any] = {"seconds": w, **_rates(total, w)}
        prefixes = []
        for i, p in enumerate(self.prefixes):
            tin, tout = _Tally(), _Tally()
            for b in sel:
                tin.add(b.prefix_in[i].bytes, b.prefix_in[i].packets, b.prefix_in[i].samples)
                tout.add(b.prefix_out[i].bytes, b.prefix_out[i].packets, b.prefix_out[i].samples)
            prefixes.append({"prefix": p.text, "in": _rates(tin, w), "out": _rates(tout, w)})
        res["prefixes"] = prefixes
        res["top_src"] = [{"address": format_address(k), **_kv(v, w)} for k, v in self._top(sel, "src")]
        res["top_dst"] = [{"address": format_address(k), **_kv(v, w)} for k, v in self._top(sel, "dst")]
        res["top_ports"] = [{"protocol": k[0], "port": k[1], **_kv(v, w)} for k, v in self._top(sel, "ports")]
        res["top_protocols"] = [{"protocol": k, **_kv(v, w)} for k, v in self._top(sel, "protocols")]
        return res

    def _top(self, sel: list[_Bucket], attr: str) -> list[tuple[Any, list[int]]]:
        merged: dict[Any, list[int]] = {}
        for b in sel:
            _merge(merged, getattr(b, attr))
        return sorted(merged.items(), key=lambda kv: (-kv[1][0], -kv[1][1], str(kv[0])))[: self.top]


def _window_name(w: float) -> str:
    return f"{int(w)}s" if float(w).is_integer() else f"{w}s"


def _rates(t: _Tally, w: float) -> dict[str, Any]:
    return {
        "bytes": t.bytes,
        "packets": t.packets,
        "samples": t.samples,
        "bps": t.bytes * 8 / w,
        "pps": t.packets / w,
    }


def _kv(v: list[int], w: float) -> dict[str, Any]:
    return {"bytes": v[0], "packets": v[1], "bps": v[0] * 8 / w, "pps": v[1] / w}


def _merge(into: dict[Any, list[int]], other: dict[Any, list[int]]) -> None:
    for k, v in other.items():
        cur = into.get(k)
        if cur is None:
            into[k] = [v[0], v[1]]
        else:
            cur[0] += v[0]
            cur[1] += v[1]


def _group_addr(addr: npt.NDArray[np.uint8], wb: Any, wp: Any) -> dict[bytes, list[int]]:
    a = np.ascontiguousarray(addr).view(np.dtype((np.void, 16))).ravel()
    keys, inv = np.unique(a, return_inverse=True)
    sb = np.bincount(inv, weights=wb, minlength=keys.size)
    sp = np.bincount(inv, weights=wp, minlength=keys.size)
    return {bytes(k): [int(x), int(y)] for k, x, y in zip(keys, sb.tolist(), sp.tolist(), strict=True)}


def _group_int(keys_in: Any, wb: Any, wp: Any) -> dict[int, list[int]]:
    keys, inv = np.unique(np.asarray(keys_in, np.int64), return_inverse=True)
    sb = np.bincount(inv, weights=wb, minlength=keys.size)
    sp = np.bincount(inv, weights=wp, minlength=keys.size)
    return {int(k): [int(x), int(y)] for k, x, y in zip(keys.tolist(), sb.tolist(), sp.tolist(), strict=True)}


class LiveFeed:
    """A reader thread: a UDP listener whose batches are decoded and added to an aggregator.

    The UI thread never decodes: it calls ``aggregator.snapshot()`` (and reads :attr:`stats`) on its own
    interval. ``stop()`` ends the thread.
    """

    def __init__(self, aggregator: Aggregator, host: str = "::", port: int = 6343, **listener: Any) -> None:
        self.aggregator = aggregator
        self.host = host
        self.port = port
        self._listener_args = listener
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.listener: Any = None

    @property
    def stats(self) -> dict[str, Any]:
        """The listener's counters (datagrams, drops, socket buffer)."""
        return self.listener.stats.to_json() if self.listener is not None else {}

    def start(self, timeout: float = 5.0) -> LiveFeed:
        """Start the thread and wait until the socket is bound (raises what binding raised)."""
        self._thread = threading.Thread(target=self._run, name="sflow-feed", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the sFlow listener did not start")
        if self.error is not None:
            raise self.error
        return self

    def _run(self) -> None:
        import asyncio

        from peerlab_tui.core.sflow.fast import decode_batch_ex
        from peerlab_tui.core.sflow.sources import UdpListener

        async def main() -> None:
            listener = UdpListener(self.host, self.port, **self._listener_args)
            try:
                await listener.start()
            except BaseException as exc:
                self.error = exc
                self._ready.set()
                return
            self.listener = listener
            self.port = listener.port
            self._ready.set()
            try:
                while not self._stop.is_set():
                    batch = await listener.get(timeout=0.1)
                    if batch is None:
                        continue
                    res = decode_batch_ex(batch.buffer, batch.offsets, batch.lengths)
                    self.aggregator.add(res.flows, datagrams=res.datagrams, errors=res.errors)
            finally:
                listener.close()

        asyncio.run(main())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


__all__ = ["Aggregator", "LiveFeed", "Prefix", "format_address"]
