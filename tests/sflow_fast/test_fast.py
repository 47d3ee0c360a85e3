"""The vectorised decoder gives the same columns as the per-record decoder, and falls back safely."""

from __future__ import annotations

import random
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerlab_tui.core.sflow import (
    counter_record,
    counter_sample,
    datagram,
    encode_datagram,
    flow_record,
    flow_sample,
    sampled_header,
)
from peerlab_tui.core.sflow.fast import decode_batch, decode_batch_ex
from peerlab_tui.core.sflow.sources import read_file
from tests.sflow_fast.helpers import assert_same_columns, capture_names, reference


def _datagrams(path: Path) -> list[bytes]:
    b = read_file(path).batch
    return [b.datagram(i) for i in range(len(b))]


@pytest.mark.parametrize("name", capture_names())
def test_fast_equals_per_record_decoder_on_every_capture(shared_dir: Path, name: str) -> None:
    """Every column of every flow and counter sample is identical to the per-record decoder's."""
    datagrams = _datagrams(shared_dir / "data" / "sflow" / name)
    flows, counters = decode_batch(datagrams)
    ref_flows, ref_counters = reference(datagrams)
    assert_same_columns(flows, ref_flows, f"{name} flows")
    assert_same_columns(counters, ref_counters, f"{name} counters")
    # The same answer from the file buffer with unaligned offsets (pcap) as from separate datagrams.
    b = read_file(shared_dir / "data" / "sflow" / name).batch
    f2, c2 = decode_batch(b.buffer, b.offsets, b.lengths)
    assert_same_columns(f2, ref_flows, f"{name} flows from buffer")
    assert_same_columns(c2, ref_counters, f"{name} counters from buffer")


@pytest.mark.parametrize(
    ("name", "flows", "counters"),
    [
        ("overflowd__sflow.pcap", 5855, 502),
        ("generated__pmacct_sfprobe_netns.pcap", 459, 3),
        ("akvorado__data-1140.pcap", 5, 0),
        ("tcpdump__sflow-print-v6.pcap", 13, 48),
    ],
)
def test_common_captures_take_the_vectorised_path(
    shared_dir: Path, name: str, flows: int, counters: int
) -> None:
    """Ordinary agent output never needs the fallback, so the comparison above exercises the fast code."""
    res = decode_batch_ex(_datagrams(shared_dir / "data" / "sflow" / name), fallback=False)
    assert res.fallback == 0
    assert (len(res.flows), len(res.counters)) == (flows, counters)


def test_overflowd_values(shared_dir: Path) -> None:
    """Spot values of the first flow sample of the overflowd capture, read with tshark beforehand."""
    flows, _ = decode_batch(_datagrams(shared_dir / "data" / "sflow" / "overflowd__sflow.pcap"))
    r = flows.row(0)
    assert r["agent"] == bytes(10) + b"\xff\xff" + bytes([192, 168, 1, 1])
    assert (r["sampling_rate"], r["frame_length"], r["ip_proto"], r["src_port"], r["dst_port"]) == (
        300,
        1518,
        6,
        60565,
        36875,
    )
    assert r["src_ip"][-4:] == bytes([192, 168, 1, 2]) and r["dst_ip"][-4:] == bytes([192, 168, 1, 3])
    assert r["tcp_flags"] == 0x10 and r["src_vlan"] == 1 and r["rec_ip_version"] == -1


def _synthetic() -> list[bytes]:
    """Datagrams made with the encoder: every structure the fast path reads, compact and expanded."""
    eth_v4 = bytes.fromhex(
        "020000000002"
        "020000000001"
        "8100"
        "0064"
        "0800"  # MACs, VLAN 100
        "45b80034"
        "00004000"
        "4006"
        "0000"
        "c6336401"
        "cb007105"  # IPv4 TCP 198.51.100.1 -> 203.0.113.5
        "01bb"
        "d431"
        "00000001"
        "00000000"
        "8018"
        "0100"
        "0000"
        "0000"  # TCP 443 -> 54321, ACK+PSH
    )
    eth_v6 = bytes.fromhex(
        "020000000002"
        "020000000001"
        "86dd"
        "6a000000"
        "0008"
        "11"
        "40" + "20010db8000100000000000000000001" + "20010db8000200000000000000000002" + "0035"
        "c000"
        "0008"
        "0000"  # UDP 53 -> 49152
    )
    raw_v4_icmp = bytes.fromhex("450000540000000040010000c0000201c00002020800f7ff00000000")
    samples = [
        flow_sample(
            [
                sampled_header(eth_v4, frame_length=1500),
                flow_record("extended_switch", src_vlan=100, dst_vlan=200),
                flow_record("extended_router", nexthop="192.0.2.254", src_mask_len=24, dst_mask_len=16),
            ],
            sampling_rate=1000,
            input=3,
            output=4,
        ),
        flow_sample(
            [
                sampled_header(eth_v6),
                flow_record(
                    "extended_gateway",
                    nexthop="2001:db8::fe",
                    **{"as": 64500},
                    src_as=64501,
                    src_peer_as=64502,
                    dst_as_path=[{"type": 2, "value": [64510, 64511, 64512]}],
                    communities=[1, 2],
                    localpref=100,
                ),
            ],
            sampling_rate=512,
            expanded=True,
            input=7,
            output=8,
        ),
        flow_sample(
            [
                sampled_header(raw_v4_icmp, protocol=11),
                flow_record(
                    "sampled_ipv4", length=84, protocol=1, src_ip="192.0.2.1", dst_ip="192.0.2.2", tos=3
                ),
            ],
            sampling_rate=1,
        ),
        flow_sample(
            [
                flow_record(
                    "sampled_ipv6",
                    length=100,
                    protocol=17,
                    src_ip="2001:db8::1",
                    dst_ip="2001:db8::2",
                    src_port=1,
                    dst_port=2,
                    priority=5,
                )
            ],
            sampling_rate=2,
        ),
        counter_sample(
            [
                counter_record("if_counters", if_index=3, if_speed=10**10, if_in_octets=2**40 + 5),
                counter_record("ethernet_counters", dot3_stats_fcs_errors=9),
            ],
            source_id_index=3,
        ),
        counter_sample([counter_record("if_counters", if_index=4)], expanded=True, source_id_index=4),
    ]
    return [
        encode_datagram(datagram(samples[:3], agent_address="192.0.2.10", sequence_number=1)),
        encode_datagram(datagram(samples[3:], agent_address="2001:db8::10", sequence_number=2)),
    ]


def test_synthetic_structures_match_and_are_read() -> None:
    """Encoder-built datagrams with every covered structure: identical columns, and the right values."""
    dgs = _synthetic()
    res = decode_batch_ex(dgs, fallback=False)
    assert res.fallback == 0 and res.datagrams == 2
    ref_f, ref_c = reference(dgs)
    assert_same_columns(res.flows, ref_f, "synthetic flows")
    assert_same_columns(res.counters, ref_c, "synthetic counters")
    f = res.flows
    assert f.vlan.tolist() == [100, -1, -1, -1]
    assert f.ip_version.tolist() == [4, 6, 4, -1]
    assert f.src_port.tolist()[:2] == [443, 53] and f.tcp_flags.tolist()[0] == 0x18
    assert f.icmp_type.tolist()[2] == 8 and f.tos.tolist()[0] == 0xB8
    assert f.gw_dst_peer_as.tolist()[1] == 64510 and f.gw_dst_as.tolist()[1] == 64512
    assert f.gw_as.tolist()[1] == 64500 and f.gw_communities.tolist()[1] == 2
    assert f.rec_ip_version.tolist() == [-1, -1, 4, 6] and f.rec_tos.tolist()[3] == 5
    assert f.input_value.tolist()[:2] == [3, 7] and f.sample_format.tolist()[:2] == [1, 3]
    c = res.counters
    assert c.if_in_octets.tolist()[0] == 2**40 + 5 and c.has_ethernet.tolist() == [True, False]


def _mutations(seed: int, base: list[bytes], n: int) -> list[bytes]:
    rnd = random.Random(seed)
    out: list[bytes] = []
    for _ in range(n):
        d = bytearray(rnd.choice(base))
        kind = rnd.randrange(4)
        if kind == 0:  # truncate anywhere
            d = d[: rnd.randrange(len(d) + 1)]
        elif kind == 1:  # flip a byte
            if d:
                d[rnd.randrange(len(d))] ^= 1 << rnd.randrange(8)
        elif kind == 2:  # huge count or length word at a 4-aligned place
            if len(d) >= 8:
                i = rnd.randrange(len(d) // 4) * 4
                d[i : i + 4] = struct.pack(">I", rnd.choice([0xFFFFFFFF, 0x7FFFFFFF, 1 << 20, 3, 0]))
        else:  # garbage tail
            d += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
        out.append(bytes(d))
    return out


def test_truncated_and_malformed_datagrams_fall_back_identically(shared_dir: Path) -> None:
    """Hundreds of damaged datagrams mixed with good ones: no exception, same columns as the reference."""
    base = _datagrams(shared_dir / "data" / "sflow" / "akvorado__data-1140.pcap")
    base += _datagrams(shared_dir / "data" / "sflow" / "generated__hsflowd_netns.pcap")[:5]
    base += _synthetic()
    batch = _mutations(7, base, 400) + base
    random.Random(1).shuffle(batch)
    res = decode_batch_ex(batch)
    assert res.fallback > 0
    ref_f, ref_c = reference(batch)
    assert_same_columns(res.flows, ref_f, "mutated flows")
    assert_same_columns(res.counters, ref_c, "mutated counters")


def test_huge_declared_counts_do_not_allocate() -> None:
    """num_samples / num_records of 2**32-1 in tiny datagrams: bounded work and memory, no rows invented."""
    good = _synthetic()[0]
    evil = bytearray(good)
    struct.pack_into(">I", evil, 24, 0xFFFFFFFF)  # num_samples
    short = bytes(evil[:64])
    tracemalloc.start()
    try:
        res = decode_batch_ex([bytes(evil), short] * 50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024
    ref_f, _ = reference([bytes(evil), short] * 50)
    assert_same_columns(res.flows, ref_f, "huge counts")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=8), st.integers(0, 2**16))
def test_random_bytes_never_raise(blobs: list[bytes], seed: int) -> None:
    """Arbitrary bytes (some starting like sFlow v5) decode without exceptions, same as the reference."""
    rnd = random.Random(seed)
    dgs = [(b"\0\0\0\x05\0\0\0\x01" + b if rnd.random() < 0.7 else b) for b in blobs]
    res = decode_batch_ex(dgs)
    ref_f, ref_c = reference(dgs)
    assert_same_columns(res.flows, ref_f, "random flows")
    assert_same_columns(res.counters, ref_c, "random counters")


def test_unaligned_buffer_and_empty_batch() -> None:
    """Datagrams at odd offsets of one buffer decode like separate ones; an empty batch is empty."""
    dgs = _synthetic()
    buf = b"\x99" + dgs[0] + b"\x77\x77\x77" + dgs[1]
    offs = np.array([1, 1 + len(dgs[0]) + 3])
    f1, c1 = decode_batch(np.frombuffer(buf, np.uint8), offs, [len(d) for d in dgs])
    f2, c2 = decode_batch(dgs)
    assert_same_columns(f1, f2, "unaligned")
    assert_same_columns(c1, c2, "unaligned")
    f0, c0 = decode_batch([])
    assert len(f0) == 0 and len(c0) == 0


def _unknown_address_datagrams() -> list[bytes]:
    """Legal datagrams with the XDR address type 0 ("unknown") where the spec allows it."""
    router = flow_sample([flow_record("extended_router", nexthop=None, src_mask_len=24, dst_mask_len=16)])
    gateway = flow_sample([flow_record("extended_gateway", nexthop=None, src_as=64501)])
    plain = flow_sample(
        [flow_record("sampled_ipv4", length=84, protocol=1, src_ip="192.0.2.1", dst_ip="192.0.2.2")]
    )
    return [
        encode_datagram(datagram([router])),
        encode_datagram(datagram([gateway])),
        encode_datagram(datagram([plain], agent_address=None)),  # type: ignore[arg-type]
    ]


def test_unknown_addresses_decode_without_raising_and_match_the_reference() -> None:
    """An unknown next hop or agent address (type 0) once took the whole batch down; now it is a value."""
    dgs = _unknown_address_datagrams()
    for one in dgs:  # each alone, as the live listener may receive it
        res = decode_batch_ex([one])
        assert res.datagrams == 1 and len(res.flows) == 1
    res = decode_batch_ex(dgs)
    ref_f, _ = reference(dgs)
    assert_same_columns(res.flows, ref_f, "unknown addresses")
    assert res.flows.nexthop_version.tolist()[0] == 0 and bytes(res.flows.nexthop[0]) == bytes(16)
    assert res.flows.gw_nexthop_version.tolist()[1] == 0
    assert bytes(res.flows.agent[2]) == bytes(16)


def test_raw_datagram_file_with_unknown_agent_address_is_read(tmp_path: Path) -> None:
    """A raw .bin datagram whose agent address type is 0 is a datagram, not 'not a capture'."""
    path = tmp_path / "unknown-agent.bin"
    path.write_bytes(_unknown_address_datagrams()[2])
    capture = read_file(path)
    assert capture.kind == "raw" and capture.stats.packets == 1
