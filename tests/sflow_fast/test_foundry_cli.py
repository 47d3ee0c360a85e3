"""Flow samples inside a Foundry 1991:1 wrapper reach the columns (and ``sflow top``); ``sflow decode --json``
names the decoded header fields of a known packet."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from peerlab_tui.cli import main
from peerlab_tui.core.sflow import (
    Sample,
    counter_record,
    counter_sample,
    datagram,
    encode_datagram,
    flow_record,
    flow_sample,
    sampled_header,
)
from peerlab_tui.core.sflow.count import count_batch
from peerlab_tui.core.sflow.fast import decode_batch_ex
from peerlab_tui.core.sflow.sources import RawBatch, read_file
from tests.sflow_fast.helpers import assert_same_columns, capture_names, reference, sources_counts
from tests.sflow_fast.test_fast_layouts import _eth, _ipv4, _tcp


def _foundry(inner: Sample) -> Sample:
    return Sample(1991, 1, "foundry_acl_sample", fields={"flags": 1, "group_id": 42}, inner=inner)


def _foundry_datagrams() -> list[bytes]:
    tcp = _eth(0x0800, _ipv4(6, _tcp(443, 54321)), ((0x8100, 0x0064),))
    wrapped_flow = _foundry(
        flow_sample(
            [
                sampled_header(tcp, frame_length=1500),
                flow_record("extended_switch", src_vlan=100, dst_vlan=100),
            ],
            sampling_rate=2048,
            sequence_number=77,
            input=5,
            output=6,
        )
    )
    wrapped_expanded = _foundry(
        flow_sample([sampled_header(tcp, frame_length=64)], sampling_rate=4096, expanded=True, input=9)
    )
    wrapped_ctr = _foundry(counter_sample([counter_record("if_counters", if_index=5, if_in_octets=123)]))
    plain = flow_sample([sampled_header(tcp, frame_length=900)], sampling_rate=1, sequence_number=3)
    return [
        encode_datagram(datagram([wrapped_flow, plain], agent_address="192.0.2.9", sequence_number=1)),
        encode_datagram(datagram([wrapped_expanded, wrapped_ctr], agent_address="2001:db8::9")),
    ]


def test_foundry_wrapped_samples_produce_rows_identical_on_both_paths() -> None:
    """The inner flow samples of 1991:1 wrappers are rows, with the inner sample's values, the same as the
    per-record reference; the wrapper's ordinal is kept as sample_index."""
    dgs = _foundry_datagrams()
    res = decode_batch_ex(dgs)
    ref_f, ref_c = reference(dgs)
    assert_same_columns(res.flows, ref_f, "foundry flows")
    assert_same_columns(res.counters, ref_c, "foundry counters")
    assert res.datagrams == 2 and res.errors == 0 and res.samples == 4
    f = res.flows
    assert len(f) == 3
    assert f.datagram.tolist() == [0, 0, 1] and f.sample_index.tolist() == [0, 1, 0]
    assert f.sampling_rate.tolist() == [2048, 1, 4096]
    assert f.sample_format.tolist() == [1, 1, 3]
    assert f.sequence.tolist()[0] == 77 and f.input_value.tolist() == [5, 1, 9]
    assert f.src_port.tolist() == [443, 443, 443] and f.vlan.tolist() == [100, 100, 100]
    assert f.frame_length.tolist() == [1500, 900, 64] and f.src_vlan.tolist()[0] == 100
    c = res.counters
    assert len(c) == 1 and c.if_in_octets.tolist() == [123] and c.sample_index.tolist() == [1]
    # Each datagram alone, as the live listener may receive it.
    for i, one in enumerate(dgs):
        alone = decode_batch_ex([one])
        ref1, _ = reference([one])
        assert_same_columns(alone.flows, ref1, f"foundry datagram {i}")


def test_foundry_counts_and_top(tmp_path: Path) -> None:
    """The counter sees the wrapper and its inner records; `sflow top` counts the wrapped packets."""
    dgs = _foundry_datagrams()
    b = RawBatch.from_datagrams(dgs)
    counts = count_batch(b.buffer, b.offsets, b.lengths)
    assert counts["samples"] == {"1991:1": 3, "0:1": 1}
    assert counts["flow_records"] == {"0:1": 3, "0:1001": 1} and counts["counter_records"] == {"0:1": 1}
    path = tmp_path / "foundry.bin"
    path.write_bytes(dgs[0])  # one raw datagram: a wrapped flow sample (rate 2048) and a plain one (rate 1)
    r = CliRunner().invoke(main, ["sflow", "top", str(path), "--json"])
    assert r.exit_code == 0, r.stderr
    (w,) = json.loads(r.stdout)["windows"].values()
    assert w["samples"] == 2


def test_shared_captures_with_foundry_samples(shared_dir: Path) -> None:
    """Captures holding 1991:1 samples are exactly those SOURCES.md lists, and give the reference's rows."""
    expected = {n for n, row in sources_counts(shared_dir).items() if "1991:1" in row["samples"]}
    found = set()
    for name in capture_names():
        b = read_file(shared_dir / "data" / "sflow" / name).batch
        if "1991:1" not in count_batch(b.buffer, b.offsets, b.lengths)["samples"]:
            continue
        found.add(name)
        dgs = [b.datagram(i) for i in range(len(b))]
        res = decode_batch_ex(dgs)
        ref_f, ref_c = reference(dgs)
        assert_same_columns(res.flows, ref_f, name)
        assert_same_columns(res.counters, ref_c, name)
    assert {Path(n).name for n in found} == {Path(n).name for n in expected}


def _pcap_udp(path: Path, payload: bytes) -> Path:
    """A classic pcap with one Ethernet/IPv4/UDP frame to port 6343 carrying ``payload``."""
    udp = struct.pack(">HHHH", 40000, 6343, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2])) + udp  # fmt: skip
    frame = bytes(6) + bytes(5) + b"\1" + b"\x08\x00" + ip
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    out += struct.pack("<IIII", 1_700_000_000, 0, len(frame), len(frame)) + frame
    path.write_bytes(out)
    return path


@pytest.mark.parametrize("kind", ["pcap", "raw"])
def test_decode_json_names_the_decoded_header_fields(tmp_path: Path, kind: str) -> None:
    """`sflow decode FILE --json` on a VLAN-tagged TCP sample: every named field with its value."""
    header = _eth(0x0800, _ipv4(6, _tcp(443, 54321, 0x018), tos=0xB8, ttl=61), ((0x8100, 0x3064),))
    wire = encode_datagram(datagram([flow_sample([sampled_header(header, frame_length=1514)])]))
    path = _pcap_udp(tmp_path / "tcp.pcap", wire) if kind == "pcap" else tmp_path / "tcp.bin"
    if kind == "raw":
        path.write_bytes(wire)
    r = CliRunner().invoke(main, ["sflow", "decode", str(path), "--json"])
    assert r.exit_code == 0, r.stderr
    (obj,) = [json.loads(line) for line in r.stdout.splitlines()]
    (rec,) = obj["records"]
    decoded = rec["fields"]["decoded"]
    expected = {
        "src_mac": "02:00:00:00:00:01",
        "dst_mac": "02:00:00:00:00:02",
        "vlan": 100,
        "eth_type": 0x0800,
        "src_ip": "198.51.100.1",
        "dst_ip": "203.0.113.5",
        "ip_protocol": 6,
        "ip_tos": 0xB8,
        "ip_ttl": 61,
        "src_port": 443,
        "dst_port": 54321,
        "tcp_flags": 0x018,
    }
    assert {k: decoded.get(k) for k in expected} == expected
