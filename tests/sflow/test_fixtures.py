"""Fixtures made by our encoder: they are reproducible, they decode to the values we put in, and an
independent decoder (tshark) reads the same values from them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dpkt
import pytest

from peerlab_tui.core.sflow import (
    Datagram,
    count_by_type,
    datagram_to_json,
    decode_datagram,
    encode_datagram,
    sample_to_json,
)
from tests.sflow.make_fixtures import FIXTURES, build
from tests.support.requirements import require_binary


def _decode(name: str) -> Datagram:
    return decode_datagram((FIXTURES / name).read_bytes())


def test_fixture_files_are_what_the_encoder_builds() -> None:
    """The stored files equal a fresh build (regenerate with `python -m tests.sflow.make_fixtures`)."""
    built = build()
    assert sorted(p.name for p in FIXTURES.glob("*.bin")) == sorted(built)
    for name, data in built.items():
        assert (FIXTURES / name).read_bytes() == data, name
        assert encode_datagram(decode_datagram(data)) == data


def test_flow_fixture_fields() -> None:
    """Flow sample header fields, the decoded sampled header and the router/gateway records."""
    d = _decode("flow_ipv4_tcp.bin")
    assert d.ok and d.issues == [] and (d.agent_address, d.sequence_number) == ("192.0.2.1", 1000)
    s = d.samples[0]
    assert (s.sequence_number, s.source_id_index, s.sampling_rate, s.sample_pool, s.drops) == (
        42,
        3,
        512,
        21504,
        1,
    )
    assert s.input.ifindex == 3 and (s.output.kind, s.output.value) == ("multiple", 4)
    header, switch, router, gateway = s.records
    assert header.fields["decoded"]["src_ip"] == "192.0.2.1" and header.fields["decoded"]["tcp_flags"] == 2
    assert switch.fields == {"src_vlan": 10, "src_priority": 3, "dst_vlan": 20, "dst_priority": 0}
    assert router.fields == {"nexthop": "192.0.2.254", "src_mask_len": 24, "dst_mask_len": 16}
    assert gateway.fields["dst_as_path"] == [{"type": 2, "value": [64502, 64503]}]
    assert (gateway.fields["as"], gateway.fields["localpref"], gateway.fields["nexthop"]) == (
        64500,
        150,
        "2001:db8::fe",
    )


def test_discard_fixture_fields() -> None:
    """Discard sample: reason 258 = acl, the four dropmon records."""
    s = _decode("discard_acl.bin").samples[0]
    assert (s.reason, s.reason_name, s.drops, s.input.ifindex) == (258, "acl", 2, 3)
    assert [r.name for r in s.records] == [
        "extended_function",
        "extended_hw_trap",
        "extended_linux_drop_reason",
        "extended_timestamp",
    ]
    assert s.records[1].fields == {"group": "l3_drops", "trap": "blackhole_route"}
    counts = count_by_type([_decode("discard_acl.bin")])
    assert counts["discard_records"] == {"0:1038": 1, "0:1041": 1, "0:1042": 1, "0:1043": 1}
    assert counts["flow_records"] == {} and counts["samples"] == {"0:5": 1}


def test_sflowrt_fixture_fields() -> None:
    """rtmetric: datasource and typed metric values (gauge32, string, gaugeDouble)."""
    s = _decode("sflowrt_metric.bin").samples[0]
    assert s.fields["datasource"] == "lab"
    assert [(m["name"], m["value"]) for m in s.fields["metrics"]] == [
        ("peers", 12),
        ("state", "up"),
        ("load", 0.25),
    ]


def test_all_tags_fixture_counts() -> None:
    """The all-tags datagram decodes cleanly and counts one record of each flow and counter tag."""
    d = _decode("all_128_tags.bin")
    assert d.ok and d.issues == []
    counts = count_by_type([d])
    flows = set(counts["flow_records"]) | set(counts["discard_records"])
    assert len(set(counts["samples"])) == 8
    assert len(counts["counter_records"]) == 50 and len(flows) == 70


def test_json_output_is_serialisable_and_named() -> None:
    """JSON: snake_case names, bytes as hex, addresses as strings, interfaces and enum names spelled out."""
    d = _decode("flow_ipv4_tcp.bin")
    doc = datagram_to_json(d)
    text = json.dumps(doc)
    assert json.loads(text) == doc
    sample = sample_to_json(d.samples[0], d)
    assert (
        sample["agent_address"] == "192.0.2.1" and sample["type"] == "flow_sample" and sample["tag"] == "0:1"
    )
    assert sample["output"] == {"kind": "multiple", "format": 2, "value": 4}
    header = sample["records"][0]
    assert header["name"] == "sampled_header" and header["fields"]["protocol_name"] == "ETHERNET_ISO88023"
    assert header["fields"]["header"].startswith("020000000002")
    assert header["fields"]["decoded"]["dst_port"] == 179
    assert sample["records"][3]["fields"]["dst_as_path"][0]["type_name"] == "AS_SEQUENCE"
    counters = datagram_to_json(_decode("counters_ipv6_agent.bin"))
    generic = counters["samples"][0]["records"][0]["fields"]
    assert counters["agent_address"] == "2001:db8::1" and generic["if_in_octets"] == 123456789012
    json.dumps(datagram_to_json(_decode("all_128_tags.bin")))  # every field kind serialises
    drop = sample_to_json(_decode("discard_acl.bin").samples[0])
    assert (drop["reason"], drop["reason_name"]) == (258, "acl")


def test_json_of_bad_input() -> None:
    """A NetFlow packet and a broken record still produce JSON, with issues and raw hex."""
    doc = datagram_to_json(decode_datagram(b"\x00\x05\x00\x01" + b"\0" * 20))
    assert doc["ok"] is False and "NetFlow" in doc["issues"][0]["message"]


def _wrap_pcap(data: bytes, path: Path) -> None:
    udp = dpkt.udp.UDP(sport=6343, dport=6343, data=data)
    udp.ulen = len(bytes(udp))
    ip = dpkt.ip.IP(src=b"\x7f\0\0\1", dst=b"\x7f\0\0\1", p=17, data=udp)
    ip.len = len(bytes(ip))
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        writer.writepkt(bytes(dpkt.ethernet.Ethernet(src=b"\0" * 6, dst=b"\0" * 6, data=ip)), 0)


def _tshark(path: Path, fields: list[str]) -> list[str]:
    tshark = require_binary("tshark")["tshark"]
    cmd = [tshark, "-r", str(path), "-T", "fields", "-E", "separator=,"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip().split(",")


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        (
            "flow_ipv4_tcp.bin",
            [
                "sflow_245.agent",
                "sflow.flow_sample.sampling_rate",
                "sflow_245.nexthop",
                "sflow_245.nexthop.v6",
                "sflow_245.as",
                "sflow_245.localpref",
                "sflow_245.vlan.in",
                "sflow_245.vlan.out",
                "tcp.dstport",
            ],
            ["192.0.2.1", "512", "192.0.2.254", "2001:db8::fe", "64500", "150", "10", "20", "179"],
        ),
        (
            "counters_ipv6_agent.bin",
            [
                "sflow_245.agent.v6",
                "sflow_245.sub_agent_id",
                "sflow_245.ifindex",
                "sflow_245.dot3StatsFCSErrors",
            ],
            ["2001:db8::1", "2", "3", "5"],
        ),
    ],
)
def test_tshark_reads_our_fixtures(tmp_path: Path, name: str, fields: list[str], expected: list[str]) -> None:
    """Wireshark's sFlow dissector, an independent decoder, reads the values our encoder wrote."""
    pcap = tmp_path / "fixture.pcap"
    _wrap_pcap((FIXTURES / name).read_bytes(), pcap)
    assert _tshark(pcap, fields) == expected
