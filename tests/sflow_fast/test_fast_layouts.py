"""The fast paths added for speed give the reference's answer: header layouts, row moves, counting, frames."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from peerlab_tui.core.sflow import (
    count_by_type,
    counter_record,
    counter_sample,
    datagram,
    decode_datagram,
    encode_datagram,
    flow_record,
    flow_sample,
    sampled_header,
)
from peerlab_tui.core.sflow.count import count_batch
from peerlab_tui.core.sflow.fast import decode_batch, decode_batch_ex, put_rows, take_rows
from peerlab_tui.core.sflow.sources import _frame_heads, read_file
from tests.sflow_fast.helpers import assert_same_columns, reference

MAC_D = bytes.fromhex("020000000002")
MAC_S = bytes.fromhex("020000000001")


def _eth(ethertype: int, payload: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    head = MAC_D + MAC_S
    for tpid, tci in tags:
        head += struct.pack(">HH", tpid, tci)
    return head + struct.pack(">H", ethertype) + payload


def _ipv4(proto: int, l4: bytes, *, ihl: int = 5, frag: int = 0, tos: int = 0xB8, ttl: int = 61) -> bytes:
    options = bytes(4 * (ihl - 5))
    total = 4 * ihl + len(l4)
    head = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, tos, total, 7, frag, ttl, proto, 0, b"\xc6\x33\x64\x01",
                       b"\xcb\x00\x71\x05")  # fmt: skip
    return head + options + l4


def _ipv6(nh: int, l4: bytes, *, tc: int = 0x2A, hlim: int = 63) -> bytes:
    first = (6 << 28) | (tc << 20) | 0x12345
    src = bytes.fromhex("20010db8000100000000000000000001")
    dst = bytes.fromhex("20010db8000200000000000000000002")
    return struct.pack(">IHBB", first, len(l4), nh, hlim) + src + dst + l4


def _tcp(sport: int = 443, dport: int = 54321, flags: int = 0x118) -> bytes:
    # data offset 5, NS bit from flags >> 8, then the 8 flag bits
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50 | (flags >> 8), flags & 0xFF, 512, 0, 0)


def _udp(sport: int = 53, dport: int = 49152) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8, 0)


def _icmp(typ: int, code: int) -> bytes:
    return struct.pack(">BBHI", typ, code, 0, 0)


# (name, header protocol, header bytes): the four fixed layouts and every way out of them.
LAYOUTS: list[tuple[str, int, bytes]] = [
    ("eth ipv4 tcp", 1, _eth(0x0800, _ipv4(6, _tcp()))),
    ("802.1Q ipv4 udp", 1, _eth(0x0800, _ipv4(17, _udp()), ((0x8100, 0x2010),))),
    ("802.1ad ipv6 tcp", 1, _eth(0x86DD, _ipv6(6, _tcp(80, 1024, 0x02)), ((0x88A8, 0x0FFF),))),
    ("eth ipv6 icmpv6", 1, _eth(0x86DD, _ipv6(58, _icmp(128, 0)))),
    ("eth ipv6 udp", 1, _eth(0x86DD, _ipv6(17, _udp(123, 123)))),
    ("eth ipv4 icmp", 1, _eth(0x0800, _ipv4(1, _icmp(8, 0)))),
    ("eth ipv4 sctp", 1, _eth(0x0800, _ipv4(132, _udp(2905, 2905)))),
    ("ipv4 later fragment", 1, _eth(0x0800, _ipv4(17, _udp(), frag=0x00B9))),
    ("ipv4 first fragment", 1, _eth(0x0800, _ipv4(6, _tcp(), frag=0x2000))),
    ("tcp cut before flags", 1, _eth(0x0800, _ipv4(6, _tcp()))[: 14 + 20 + 8]),
    ("udp cut before ports", 1, _eth(0x0800, _ipv4(17, _udp()))[: 14 + 20 + 2]),
    ("icmp cut after type", 1, _eth(0x0800, _ipv4(1, _icmp(3, 1)))[: 14 + 20 + 1]),
    ("ipv6 cut in header", 1, _eth(0x86DD, _ipv6(6, _tcp()))[:40]),
    ("ipv4 cut in header", 1, _eth(0x0800, _ipv4(6, _tcp()))[:30]),
    ("QinQ ipv4", 1, _eth(0x0800, _ipv4(6, _tcp()), ((0x88A8, 5), (0x8100, 6)))),
    ("ipv4 options", 1, _eth(0x0800, _ipv4(6, _tcp(), ihl=6))),
    ("ipv6 hop-by-hop", 1, _eth(0x86DD, _ipv6(0, bytes([6, 0]) + bytes(6) + _tcp()))),
    ("ethertype v6, bytes v4", 1, _eth(0x86DD, _ipv4(6, _tcp()) + bytes(40))),
    ("ethertype v4, bytes v6", 1, _eth(0x0800, _ipv6(6, _tcp()))),
    ("arp", 1, _eth(0x0806, bytes(28))),
    ("802.3 llc", 1, MAC_D + MAC_S + struct.pack(">H", 46) + bytes(46)),
    ("vlan tag cut", 1, _eth(0x0800, b"", ((0x8100, 7),))[:16]),
    ("short ethernet", 1, MAC_D + MAC_S),
    ("raw ipv4", 11, _ipv4(17, _udp())),
    ("raw ipv6", 12, _ipv6(6, _tcp())),
]


def _datagram_of(headers: list[tuple[int, bytes]], seq: int = 1) -> bytes:
    samples = [
        flow_sample(
            [
                sampled_header(h, protocol=p, frame_length=len(h) + 100),
                flow_record("extended_switch", src_vlan=i),
            ],
            sampling_rate=100 + i,
            input=1,
            output=2,
        )
        for i, (p, h) in enumerate(headers)
    ]
    samples.append(counter_sample([counter_record("if_counters", if_index=9)], source_id_index=9))
    return encode_datagram(datagram(samples, agent_address="192.0.2.10", sequence_number=seq))


@pytest.mark.parametrize(("name", "proto", "header"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_each_layout_alone(name: str, proto: int, header: bytes) -> None:
    """A batch of one layout (the all-rows branches) equals the per-record decoder."""
    dgs = [_datagram_of([(proto, header)] * 3, seq) for seq in range(4)]
    flows, counters = decode_batch(dgs)
    ref_f, ref_c = reference(dgs)
    assert_same_columns(flows, ref_f, name)
    assert_same_columns(counters, ref_c, name)


def test_mixed_layouts_in_one_batch() -> None:
    """Every layout mixed in every datagram (the row-subset branches) equals the per-record decoder."""
    pairs = [(p, h) for _, p, h in LAYOUTS]
    dgs = [_datagram_of(pairs[k:] + pairs[:k], k) for k in range(len(pairs))]
    res = decode_batch_ex(dgs)
    ref_f, ref_c = reference(dgs)
    assert_same_columns(res.flows, ref_f, "mixed layouts")
    assert_same_columns(res.counters, ref_c, "mixed layouts")


def test_fixed_layouts_need_no_fallback_and_read_right() -> None:
    """The four common layouts are decoded by the vectorised path itself, with the right values."""
    common = [(p, h) for name, p, h in LAYOUTS[:10]]
    res = decode_batch_ex([_datagram_of(common)], fallback=False)
    assert res.fallback == 0
    f = res.flows
    assert f.vlan.tolist()[:3] == [-1, 0x010, 0xFFF]
    assert f.ethertype.tolist()[:3] == [0x0800, 0x0800, 0x86DD]
    assert f.ip_version.tolist()[:5] == [4, 4, 6, 6, 6]
    assert f.tos.tolist()[:3] == [0xB8, 0xB8, 0x2A] and f.ttl.tolist()[:3] == [61, 61, 63]
    assert f.src_port.tolist() == [443, 53, 80, -1, 123, -1, 2905, -1, 443, 443]
    assert f.tcp_flags.tolist() == [0x118, -1, 0x02, -1, -1, -1, -1, -1, 0x118, -1]
    assert f.icmp_type.tolist()[3] == 128 and f.icmp_type.tolist()[5] == 8
    assert bytes(f.src_ip[0]) == bytes(10) + b"\xff\xff\xc6\x33\x64\x01"
    assert bytes(f.dst_ip[2]) == bytes.fromhex("20010db8000200000000000000000002")
    assert bytes(f.src_mac[1]) == MAC_S and bytes(f.dst_mac[1]) == MAC_D


def test_mixed_v4_v6_agents_and_rows() -> None:
    """IPv4 and IPv6 agents in one batch: the 16-byte agent rows are moved as whole rows correctly."""
    v4 = _datagram_of([(1, LAYOUTS[0][2])])
    samples = [flow_sample([sampled_header(LAYOUTS[2][2])], sampling_rate=7)]
    v6 = encode_datagram(datagram(samples, agent_address="2001:db8::10", sequence_number=3))
    dgs = [v4, v6, v4, v6, v6]
    flows, _ = decode_batch(dgs)
    ref_f, _ = reference(dgs)
    assert_same_columns(flows, ref_f, "agents")
    assert bytes(flows.agent[1]) == bytes.fromhex("20010db8000000000000000000000010")


def test_absent_columns_are_shared_read_only_constants() -> None:
    """Columns no row has are read-only views of the right value, for any batch size."""
    small, _ = decode_batch([_datagram_of([(1, LAYOUTS[0][2])])])
    big, _ = decode_batch([_datagram_of([(1, LAYOUTS[0][2])] * 50)] * 60)
    for f in (small, big):
        assert not f.gw_as.flags.writeable and (f.gw_as == -1).all() and f.gw_as.shape == (len(f),)
        assert not f.nexthop.flags.writeable and f.nexthop.shape == (len(f), 16) and not f.nexthop.any()
    assert (small.gw_as == -1).all()  # growing the shared array for the big batch left this one intact


@pytest.mark.parametrize("width", [1, 6, 16])
def test_take_and_put_rows_match_numpy(width: int) -> None:
    """Row moves as single items give numpy's fancy-indexing answer (contiguous or not, 1-D or 2-D)."""
    rng = np.random.default_rng(width)
    a = rng.integers(0, 256, (50, width), dtype=np.uint8)
    idx = rng.integers(0, 50, 80)
    assert np.array_equal(take_rows(a, idx), a[idx])
    strided = np.ascontiguousarray(np.concatenate([a, a], axis=1))[:, ::2]
    assert np.array_equal(take_rows(strided, idx), strided[idx])
    assert np.array_equal(take_rows(a[:, 0], idx), a[idx, 0])
    col = np.zeros((50, width), np.uint8)
    want = col.copy()
    rows = np.array([3, 7, 49])
    put_rows(col, rows, a[:3])
    want[rows] = a[:3]
    assert np.array_equal(col, want)
    put_rows(col, rows, 5)  # a scalar fills the rows
    want[rows] = 5
    assert np.array_equal(col, want)


def test_count_batch_any_alignment_and_truncated_end(shared_dir: Path) -> None:
    """Datagrams at any offset modulo 4 of a misaligned buffer, the last one cut: counted as the reference."""
    b = read_file(shared_dir / "data" / "sflow" / "tcpdump__sflow-print-v6.pcap").batch
    dgs = [b.datagram(i) for i in range(len(b))] + [_datagram_of([(p, h) for _, p, h in LAYOUTS])]
    dgs.append(dgs[0][:-9])  # truncated: a malformed datagram for the per-record decoder
    raw = bytearray(b"\x55")  # the buffer itself starts misaligned in memory as well
    offsets, lengths = [], []
    for i, d in enumerate(dgs):
        raw += bytes(i % 4)
        offsets.append(len(raw))
        lengths.append(len(d))
        raw += d
    arr = np.frombuffer(bytes(raw), np.uint8)[1:]  # ends right after the truncated datagram
    got = count_batch(arr, np.array(offsets) - 1, np.array(lengths))
    ref = count_by_type(decode_datagram(d, decode_headers=False) for d in dgs)
    assert got == ref
    # The cut datagram still counts (its whole samples decode), as the per-record decoder says.
    assert got["datagrams"] == len(dgs) and got["errors"] == 0 and got["flow_records"]["0:1"] > 25


def test_frame_heads_pad_the_end_with_zeros() -> None:
    """The per-frame head rows equal the frame bytes, zero-filled past the end of the buffer."""
    u8 = np.arange(100, dtype=np.uint8)
    offs = np.array([0, 10, 59, 60, 61, 95, 99])
    heads = _frame_heads(u8, offs)
    for row, o in zip(heads, offs.tolist(), strict=True):
        want = bytes(u8[o : o + 40]).ljust(40, b"\0")
        assert bytes(row) == want
    tiny = _frame_heads(np.arange(5, dtype=np.uint8), np.array([0, 3]))
    assert bytes(tiny[1]) == b"\x03\x04".ljust(40, b"\0")


def test_count_batch_of_damaged_datagrams_equals_reference(shared_dir: Path) -> None:
    """Truncated, bit-flipped and overlong datagrams: the counter agrees with the per-record count."""
    from tests.sflow_fast.test_fast import _mutations, _synthetic

    base = [_datagram_of([(p, h) for _, p, h in LAYOUTS]), *_synthetic()]
    b = read_file(shared_dir / "data" / "sflow" / "generated__hsflowd_netns.pcap").batch
    base += [b.datagram(i) for i in range(20)]
    batch = _mutations(11, base, 300) + base
    raw = b"".join(batch)
    lengths = np.array([len(d) for d in batch])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    got = count_batch(np.frombuffer(raw, np.uint8), offsets, lengths)
    assert got == count_by_type(decode_datagram(d, decode_headers=False) for d in batch)
