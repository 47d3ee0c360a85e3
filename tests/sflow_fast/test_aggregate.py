"""Aggregated rates and top talkers from a synthetic batch made with the encoder: exact expected values."""

from __future__ import annotations

import ipaddress
import struct
import threading

import pytest

from peerlab_tui.core.errors import InputError
from peerlab_tui.core.sflow import datagram, encode_datagram, flow_sample, sampled_header
from peerlab_tui.core.sflow.aggregate import Aggregator, LiveFeed
from peerlab_tui.core.sflow.fast import FlowBatch, decode_batch

MINE = "2001:db8:1::/48"


def _l4(proto: int, sport: int, dport: int) -> bytes:
    if proto == 6:
        return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x10, 1024, 0, 0)
    if proto == 17:
        return struct.pack(">HHHH", sport, dport, 8, 0)
    return bytes([8, 0, 0, 0, 0, 0, 0, 0])  # ICMP echo


def _eth(src: str, dst: str, proto: int, sport: int = 0, dport: int = 0) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    l4 = _l4(proto, sport, dport)
    if s.version == 6:
        ip = struct.pack(">IHBB", 0x60000000, len(l4), proto, 64) + s.packed + d.packed
        et = 0x86DD
    else:
        ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0) + s.packed + d.packed
        et = 0x0800
    return bytes(6) + bytes(5) + b"\1" + struct.pack(">H", et) + ip + l4


def _batch(*flows: tuple[str, str, int, int, int, int, int]) -> FlowBatch:
    samples = [
        flow_sample([sampled_header(_eth(s, d, p, sp, dp), frame_length=fl)], sampling_rate=rate)
        for s, d, p, sp, dp, fl, rate in flows
    ]
    f, _ = decode_batch([encode_datagram(datagram(samples))])
    return f


A = ("2001:db8:2::5", "2001:db8:1::10", 6, 443, 50000, 1500, 100)  # into my prefix: 150000 B, 100 pkts
B = ("2001:db8:1::10", "2001:db8:3::7", 17, 40000, 53, 200, 50)  # out of it: 10000 B, 50 pkts
C = ("192.0.2.1", "192.0.2.2", 1, 0, 0, 100, 10)  # elsewhere (ICMP): 1000 B, 10 pkts


def test_rates_per_prefix_direction_and_top_talkers() -> None:
    """bits/s and packets/s = frame_length * sampling_rate over the window, split in/out of the prefix."""
    agg = Aggregator([MINE, "192.0.2.0/24"], windows=(10,), clock=lambda: 1000.5)
    agg.add(_batch(A, B, C), 1000.2)
    w = agg.snapshot(1000.5)["windows"]["10s"]
    assert (w["bytes"], w["packets"], w["samples"]) == (161000, 160, 3)
    assert w["bps"] == 161000 * 8 / 10 and w["pps"] == 16.0
    mine, v4 = w["prefixes"]
    assert mine["prefix"] == MINE
    assert (mine["in"]["bps"], mine["in"]["pps"]) == (120000.0, 10.0)
    assert (mine["out"]["bps"], mine["out"]["pps"]) == (8000.0, 5.0)
    assert (v4["in"]["bytes"], v4["out"]["bytes"]) == (1000, 1000)  # inside the prefix: both directions
    assert [e["address"] for e in w["top_src"]] == ["2001:db8:2::5", "2001:db8:1::10", "192.0.2.1"]
    assert [e["bytes"] for e in w["top_dst"]] == [150000, 10000, 1000]
    assert [(e["protocol"], e["port"], e["bytes"]) for e in w["top_ports"]] == [
        (6, 443, 150000),
        (17, 53, 10000),
    ]
    assert [(e["protocol"], e["packets"]) for e in w["top_protocols"]] == [(6, 100), (17, 50), (1, 10)]


def test_sliding_windows_and_expiry() -> None:
    """Each window holds its last W seconds; old seconds drop out."""
    agg = Aggregator([MINE], windows=(5, 10), clock=lambda: 0.0)
    agg.add(_batch(A), 1000.0)
    agg.add(_batch(B), 1005.0)
    snap = agg.snapshot(1009.5)
    assert snap["windows"]["10s"]["bytes"] == 160000
    assert snap["windows"]["5s"]["bytes"] == 10000 and snap["windows"]["5s"]["bps"] == 10000 * 8 / 5
    assert agg.snapshot(1020.0)["windows"]["10s"]["bytes"] == 0
    agg.add(_batch(C), 1030.0)  # buckets older than the longest window are discarded
    assert agg.snapshot(1030.0)["windows"]["10s"]["bytes"] == 1000
    assert agg.totals["bytes"] == 161000 and agg.totals["samples"] == 3


def test_per_row_times_and_top_limit() -> None:
    """Rows carry their own times (capture timestamps); top lists are cut to ``top``."""
    agg = Aggregator(windows=(2,), top=1)
    f = _batch(A, B)
    agg.add(f, [100.0, 101.0])
    w = agg.snapshot(101.0)["windows"]["2s"]
    assert w["bytes"] == 160000 and len(w["top_src"]) == 1
    assert agg.snapshot(102.0)["windows"]["2s"]["bytes"] == 10000


def test_snapshot_is_thread_safe() -> None:
    """A writer thread and a reader pulling snapshots concurrently: totals add up exactly."""
    agg = Aggregator([MINE], windows=(60,), clock=lambda: 500.0)
    batch = _batch(A, B, C)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(200):
                agg.add(batch, 500.0)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    while t.is_alive():
        agg.snapshot()
    t.join()
    assert not errors
    w = agg.snapshot()["windows"]["60s"]
    assert w["bytes"] == 200 * 161000 and w["prefixes"][0]["in"]["packets"] == 200 * 100


def test_bad_prefix() -> None:
    """A malformed prefix is an input error."""
    with pytest.raises(InputError):
        Aggregator(["2001:db8::/129"])


def test_live_feed_aggregates_off_thread() -> None:
    """LiveFeed reads UDP in its own thread; the caller only pulls snapshots."""
    import socket
    import time

    agg = Aggregator([MINE], windows=(60,))
    feed = LiveFeed(agg, "127.0.0.1", 0, interval=0.02).start()
    try:
        dgram = encode_datagram(
            datagram([flow_sample([sampled_header(_eth(*A[:5]), frame_length=1500)], sampling_rate=100)])
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(10):
                s.sendto(dgram, ("127.0.0.1", feed.port))
        deadline = time.monotonic() + 10
        while agg.totals["samples"] < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        snap = agg.snapshot()
    finally:
        feed.stop()
    assert snap["windows"]["60s"]["prefixes"][0]["in"]["bytes"] == 10 * 150000
    assert feed.stats["datagrams"] == 10
