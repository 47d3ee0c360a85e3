"""Capture files (pcap, pcapng, raw) and the UDP listener deliver datagrams in batches."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import dpkt
import pytest

from peerlab_tui.core.errors import InputError
from peerlab_tui.core.sflow import datagram, encode_datagram, flow_sample, sampled_header
from peerlab_tui.core.sflow.fast import decode_batch_ex
from peerlab_tui.core.sflow.sources import CaptureError, RawBatch, UdpListener, read_file

DGRAM = encode_datagram(datagram([flow_sample([sampled_header(bytes(60))], sampling_rate=10)]))
DGRAM2 = encode_datagram(datagram([flow_sample([sampled_header(bytes(64))], sampling_rate=20)] * 2))


def _udp4(payload: bytes, *, frag: int = 0, proto: int = 17) -> bytes:
    udp = struct.pack(">HHHH", 5000, 6343, 8 + len(payload), 0) + payload
    body = udp if proto == 17 else bytes(20)
    return (
        struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(body),
            1,
            frag,
            64,
            proto,
            0,
            bytes([10, 0, 0, 1]),
            bytes([10, 0, 0, 2]),
        )
        + body
    )


def _udp6(payload: bytes) -> bytes:
    udp = struct.pack(">HHHH", 5000, 6343, 8 + len(payload), 0) + payload
    return (
        struct.pack(">IHBB16s16s", 0x60000000, len(udp), 17, 64, bytes(15) + b"\1", bytes(15) + b"\2") + udp
    )


def _eth(l3: bytes, ethertype: int = 0x0800, vlan: int | None = None) -> bytes:
    tag = struct.pack(">HH", 0x8100, vlan) if vlan is not None else b""
    return bytes(6) + bytes(5) + b"\1" + tag + struct.pack(">H", ethertype) + l3


def _pcap(path: Path, frames: list[bytes], linktype: int, *, endian: str = "<", nano: bool = False) -> Path:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        out += struct.pack(endian + "IIII", 1_700_000_000 + i, 500, len(f), len(f)) + f
    path.write_bytes(out)
    return path


def test_classic_pcap_shared(shared_dir: Path) -> None:
    """The 1000-datagram overflowd capture: every datagram found, with timestamps."""
    cap = read_file(shared_dir / "data" / "sflow" / "overflowd__sflow.pcap")
    assert cap.kind == "pcap" and len(cap.batch) == 1000 and cap.stats.udp == 1000
    assert cap.batch.times is not None and cap.batch.times.size == 1000
    assert decode_batch_ex(cap.batch.buffer, cap.batch.offsets, cap.batch.lengths).datagrams == 1000


@pytest.mark.parametrize(
    ("linktype", "wrap"),
    [
        (1, lambda p: _eth(_udp4(p))),
        (1, lambda p: _eth(_udp4(p), vlan=42)),
        (1, lambda p: _eth(_udp6(p), 0x86DD)),
        (113, lambda p: struct.pack(">HHH8sH", 0, 1, 6, bytes(8), 0x0800) + _udp4(p)),
        (276, lambda p: struct.pack(">HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, bytes(8)) + _udp6(p)),
        (101, _udp4),
        (101, _udp6),
        (0, lambda p: struct.pack("<I", 2) + _udp4(p)),
    ],
)
def test_link_types(tmp_path: Path, linktype: int, wrap: object) -> None:
    """Ethernet (+802.1Q), Linux SLL/SLL2, raw IP and loopback; IPv4 and IPv6 UDP on any port."""
    frames = [wrap(DGRAM), wrap(DGRAM2)]  # type: ignore[operator]
    cap = read_file(_pcap(tmp_path / "x.pcap", frames, linktype))
    assert [cap.batch.datagram(i) for i in range(len(cap.batch))] == [DGRAM, DGRAM2]


def test_big_endian_nanosecond_pcap(tmp_path: Path) -> None:
    """Byte order and timestamp resolution come from the magic number."""
    cap = read_file(_pcap(tmp_path / "be.pcap", [_eth(_udp4(DGRAM))], 1, endian=">", nano=True))
    assert cap.batch.datagram(0) == DGRAM
    assert cap.batch.times is not None and cap.batch.times[0] == pytest.approx(1_700_000_000 + 500e-9)


def test_non_udp_is_reported_not_decoded(tmp_path: Path) -> None:
    """TCP, ICMP, ARP, fragments and truncated frames are counted in the stats and skipped."""
    frames = [
        _eth(_udp4(DGRAM)),
        _eth(_udp4(b"", proto=6)),
        _eth(_udp4(b"", proto=1)),
        _eth(bytes(28), 0x0806),
        _eth(_udp4(DGRAM, frag=0x2000)),
        _eth(_udp4(DGRAM))[:30],
    ]
    cap = read_file(_pcap(tmp_path / "mix.pcap", frames, 1))
    st = cap.stats
    assert len(cap.batch) == 1 and cap.batch.datagram(0) == DGRAM
    assert (st.packets, st.udp, st.non_udp, st.non_ip, st.fragments, st.truncated) == (6, 1, 2, 1, 1, 1)


def test_pcapng(tmp_path: Path) -> None:
    """pcapng files are read through dpkt."""
    path = tmp_path / "x.pcapng"
    with path.open("wb") as fh:
        w = dpkt.pcapng.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
        w.writepkt(_eth(_udp4(DGRAM)), ts=1_700_000_000.5)
        w.writepkt(_eth(_udp6(DGRAM2), 0x86DD), ts=1_700_000_001.0)
    cap = read_file(path)
    assert cap.kind == "pcapng"
    assert [cap.batch.datagram(i) for i in range(2)] == [DGRAM, DGRAM2]
    assert cap.batch.times is not None and cap.batch.times.tolist() == [1_700_000_000.5, 1_700_000_001.0]


def test_raw_datagram_file(tmp_path: Path) -> None:
    """A .bin file holding one UDP payload (the shared data's layout) is one datagram."""
    path = tmp_path / "d.bin"
    path.write_bytes(DGRAM)
    cap = read_file(path)
    assert cap.kind == "raw" and len(cap.batch) == 1 and cap.batch.datagram(0) == DGRAM


def test_truncated_last_record(tmp_path: Path) -> None:
    """A capture cut in the middle of its last record keeps the complete ones."""
    path = _pcap(tmp_path / "t.pcap", [_eth(_udp4(DGRAM)), _eth(_udp4(DGRAM2))], 1)
    path.write_bytes(path.read_bytes()[:-10])
    cap = read_file(path)
    assert len(cap.batch) == 1 and cap.batch.datagram(0) == DGRAM


@pytest.mark.parametrize("content", [None, b"", b"hello, not a capture\n", b"\0\0\0\x04" + bytes(20)])
def test_bad_files_are_input_errors(tmp_path: Path, content: bytes | None) -> None:
    """Missing, empty or foreign files raise CaptureError (an InputError: exit code 2)."""
    path = tmp_path / "bad"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CaptureError) as info:
        read_file(path)
    assert isinstance(info.value, InputError) and info.value.exit_code == 2


async def _drain(listener: UdpListener, want: int, timeout: float = 10.0) -> list[RawBatch]:  # noqa: ASYNC109
    got: list[RawBatch] = []
    n = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while n < want and loop.time() < end:
        b = await listener.get(timeout=0.5)
        if b is not None:
            got.append(b)
            n += len(b)
    return got


async def test_udp_listener_batches() -> None:
    """Datagrams sent in a burst arrive as a few batches (<= batch_size), not one message per packet."""
    async with UdpListener("127.0.0.1", 0, batch_size=1000, interval=0.05) as listener:
        host, port = listener.address
        assert port != 0 and listener.stats.rcvbuf_granted > 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(2500):
                s.sendto(DGRAM if i % 2 else DGRAM2, (host, port))
                if i % 200 == 199:
                    await asyncio.sleep(0)  # let the reader run now and then
        batches = await _drain(listener, 2500 - listener.stats.kernel_drops)
    total = sum(len(b) for b in batches)
    assert total + listener.stats.kernel_drops == 2500
    assert all(len(b) <= 1000 for b in batches)
    assert len(batches) < total / 10
    datagrams = {b.datagram(i) for b in batches for i in range(len(b))}
    assert datagrams == {DGRAM, DGRAM2}
    assert listener.stats.datagrams == total


async def test_udp_listener_flushes_on_interval() -> None:
    """A lone datagram is delivered after the batching interval, not held until 1000 arrive."""
    async with UdpListener("127.0.0.1", 0, interval=0.05) as listener:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(DGRAM, listener.address)
        b = await listener.get(timeout=5)
    assert b is not None and len(b) == 1 and b.datagram(0) == DGRAM


async def test_udp_listener_drop_counters() -> None:
    """A full consumer queue counts queue drops; an overflowing socket buffer counts kernel drops."""
    listener = UdpListener("127.0.0.1", 0, batch_size=10, interval=0.02, queue_batches=1, rcvbuf=4096)
    await listener.start()
    try:
        host, port = listener.address
        assert listener.stats.rxq_ovfl
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # Nobody reads the queue: after one queued batch, further batches are dropped and counted.
            for _ in range(5):
                for _ in range(10):
                    s.sendto(DGRAM, (host, port))
                await asyncio.sleep(0.1)
            assert listener.stats.queue_drops >= 30
            # The event loop does not run while we flood: the small socket buffer overflows in the kernel.
            for _ in range(3000):
                s.sendto(DGRAM2, (host, port))
            await asyncio.sleep(0.3)
            s.sendto(DGRAM, (host, port))  # carries the kernel's cumulative drop count (SO_RXQ_OVFL)
            await asyncio.sleep(0.3)
        assert listener.stats.kernel_drops > 0
    finally:
        listener.close()


async def test_listener_bad_address() -> None:
    """A host name instead of an address is an input error."""
    with pytest.raises(InputError):
        await UdpListener("not-an-ip", 0).start()
