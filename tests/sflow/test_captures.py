"""The decoder on every shared capture: counts equal SOURCES.md, chosen fields equal values read with tshark
or by hand from the hex, and decode -> encode gives the same bytes."""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from peerlab_tui.core.sflow import Datagram, count_by_type, decode_datagram, encode_datagram
from tests.sflow.capture import payloads
from tests.sflow.conftest import Expected

# The 29 data files: 19 pcap at the top, 5 derived pcap, 5 raw .bin datagrams (checked against their
# derived/*.wrapped.pcap row, which SOURCES.md says holds the same bytes).
CAPTURES = [
    "akvorado__data-1140.pcap",
    "akvorado__data-discard-interface.pcap",
    "akvorado__data-encap-vxlan.pcap",
    "akvorado__data-icmpv4.pcap",
    "akvorado__data-icmpv6.pcap",
    "akvorado__data-local-interface.pcap",
    "akvorado__data-multiple-interfaces.pcap",
    "akvorado__data-qinq.pcap",
    "akvorado__data-sflow-ipv4-data.pcap",
    "akvorado__data-sflow-raw-ipv4.pcap",
    "generated__hsflowd_netns.pcap",
    "generated__pmacct_sfprobe_netns.pcap",
    "nDPI__sflow.pcap",
    "overflowd__sflow.pcap",
    "sflow-parser__sflow.pcap",
    "tcpdump__sflow-print-v6.pcap",
    "tcpdump__sflow_expanded.pcap",
    "tcpdump__sflow_multiple_counter_30_pdus.pcap",
    "tcpdump__sflow_print-segv.pcap",
    "derived/sflow-parser__sflow.wrapped.pcap",
    "derived/telegraf__sflow_issue_15375__sflow_drop_1036.wrapped.pcap",
    "derived/telegraf__sflow_issue_15918__message.wrapped.pcap",
    "derived/telegraf__sflow_issue_18876__message.wrapped.pcap",
    "derived/telegraf__sflow_v5_example__sflow_v5.wrapped.pcap",
    "sflow-parser__sflow.bin",
    "telegraf__sflow_issue_15375__sflow_drop_1036.bin",
    "telegraf__sflow_issue_15918__message.bin",
    "telegraf__sflow_issue_18876__message.bin",
    "telegraf__sflow_v5_example__sflow_v5.bin",
]


def _row_name(name: str) -> str:
    return f"derived/{name[:-4]}.wrapped.pcap" if name.endswith(".bin") else name


@cache
def _load(path: Path) -> tuple[list[bytes], list[Datagram]]:
    packets = payloads(path)
    return packets, [decode_datagram(p) for p in packets]


def load(sflow_data: Path, name: str) -> tuple[list[bytes], list[Datagram]]:
    """UDP payloads of a capture and their decodes (cached: each capture is decoded once per session)."""
    return _load(sflow_data / name)


def test_every_data_file_is_covered(sflow_data: Path, expected_counts: dict[str, Expected]) -> None:
    """The list above names every capture of the shared folder, and each has a SOURCES.md row."""
    on_disk = {str(p.relative_to(sflow_data)) for p in sflow_data.rglob("*") if p.suffix in (".pcap", ".bin")}
    assert on_disk == set(CAPTURES)
    assert len(CAPTURES) == 29
    assert {_row_name(n) for n in CAPTURES} == set(expected_counts)


@pytest.mark.parametrize("name", CAPTURES)
def test_counts_match_sources_md(sflow_data: Path, expected_counts: dict[str, Expected], name: str) -> None:
    """Datagrams, NetFlow errors, samples and flow/counter/discard records by type equal SOURCES.md."""
    exp = expected_counts[_row_name(name)]
    _packets, datagrams = load(sflow_data, name)
    counts = count_by_type(datagrams)
    assert counts["datagrams"] == exp.datagrams
    assert counts["errors"] == exp.errors
    assert counts["samples"] == exp.samples
    assert counts["flow_records"] == exp.flow_records
    assert counts["counter_records"] == exp.counter_records
    assert counts["discard_records"] == exp.discard_records
    protocols = Counter(
        r.fields["protocol"]
        for d in datagrams
        for s in d.samples
        for r in s.records
        if r.tag == "0:1" and r.kind == "flow" and r.issue is None
    )
    assert dict(protocols) == exp.header_protocols


@pytest.mark.parametrize("name", CAPTURES)
def test_decode_encode_gives_the_same_bytes(sflow_data: Path, name: str) -> None:
    """Re-encoding a decoded datagram reproduces its bytes; only non-zero XDR padding (reported as an issue,
    a violation of XDR by the agent) is re-encoded as zeros, exactly at the reported offsets."""
    packets, datagrams = load(sflow_data, name)
    checked = 0
    for packet, dgram in zip(packets, datagrams, strict=True):
        structural = [
            i for i in dgram.issues if i.message != "non-zero XDR padding" and "trailing" not in i.message
        ]
        if not dgram.ok or structural:  # not well-formed (NetFlow, the fuzzer case): nothing to reproduce
            continue
        checked += 1
        wire = encode_datagram(dgram)
        assert len(wire) == len(packet)
        if wire == packet:
            continue
        pads = {i.offset for i in dgram.issues if i.message == "non-zero XDR padding"}
        assert pads, "bytes differ without a padding issue"
        differing = {i for i in range(len(packet)) if wire[i] != packet[i]}
        assert all(any(0 <= i - p < 3 for p in pads) for i in differing)
        assert all(wire[i] == 0 for i in differing)
    malformed = name == "tcpdump__sflow_print-segv.pcap"
    assert checked == (0 if malformed else sum(d.ok for d in datagrams))


def _sample(sflow_data: Path, name: str, dgram: int = 0, sample: int = 0) -> Any:
    return load(sflow_data, name)[1][dgram].samples[sample]


def test_akvorado_1140_fields(sflow_data: Path) -> None:
    """Values read with `tshark -d udp.port==6343,sflow -V`."""
    d = load(sflow_data, "akvorado__data-1140.pcap")[1][0]
    assert (d.agent_address, d.sub_agent_id, d.sequence_number, d.uptime_ms) == (
        "172.16.0.3",
        0,
        812646826,
        930960704,
    )
    s = d.samples[0]
    assert (s.sequence_number, s.sampling_rate, s.sample_pool, s.drops) == (588827825, 1024, 1664271360, 0)
    assert s.input is not None and s.input.ifindex == 27 and s.output is not None and s.output.ifindex == 28
    switch, header = s.records
    assert switch.fields == {"src_vlan": 100, "src_priority": 0, "dst_vlan": 100, "dst_priority": 0}
    assert (header.fields["protocol"], header.fields["frame_length"], header.fields["stripped"]) == (
        1,
        1518,
        4,
    )
    assert len(header.fields["header"]) == 128
    dec = header.fields["decoded"]
    assert dec["src_mac"] == "24:6e:96:90:7a:50" and dec["dst_mac"] == "24:6e:96:04:3c:08"
    assert dec["eth_type"] == 0x86DD and dec["ip_version"] == 6 and dec["ip_ttl"] == 64
    assert dec["src_ip"] == "2a0c:8880:2:0:185:21:130:38" and dec["dst_ip"] == "2a0c:8880:2:0:185:21:130:39"
    assert (dec["ip_protocol"], dec["src_port"], dec["dst_port"], dec["tcp_flags"]) == (6, 46026, 22, 0x010)
    s2 = d.samples[1]
    assert s2.input is not None and s2.input.ifindex == 49001
    assert s2.records[0].fields["src_vlan"] == 0xFFFFFFFF  # "unknown" per the sflow.org errata


def test_interface_encodings(sflow_data: Path) -> None:
    """Output interface as discard (0x40000001), internal (0x3fffffff) and multiple (0x80000007)."""
    discard = _sample(sflow_data, "akvorado__data-discard-interface.pcap").output
    assert (discard.kind, discard.value, discard.reason_name) == ("discard", 1, "host_unreachable")
    internal = _sample(sflow_data, "akvorado__data-local-interface.pcap").output
    assert (internal.kind, internal.ifindex) == ("internal", None)
    multiple = _sample(sflow_data, "akvorado__data-multiple-interfaces.pcap").output
    assert (multiple.kind, multiple.value, multiple.to_compact()) == ("multiple", 7, 0x80000007)


def test_trailing_bytes_after_declared_samples(sflow_data: Path) -> None:
    """The three edited akvorado packets carry 964 bytes after their single declared sample."""
    d = load(sflow_data, "akvorado__data-local-interface.pcap")[1][0]
    assert d.ok and len(d.samples) == 1 and len(d.trailing) == 964
    assert [i.offset for i in d.issues] == [244]


def test_qinq_expanded_sample(sflow_data: Path) -> None:
    """Expanded flow sample with two 802.1Q tags (tshark: VLAN 1062 then 1493)."""
    d = load(sflow_data, "akvorado__data-qinq.pcap")[1][0]
    assert (d.agent_address, d.sub_agent_id) == ("172.17.128.58", 100)
    s = d.samples[0]
    assert s.expanded and (s.source_id_type, s.source_id_index, s.sampling_rate) == (0, 369098852, 4096)
    assert s.input == s.input.__class__(0, 369098852) and s.output is not None and s.output.value == 369098851
    dec = s.records[0].fields["decoded"]
    assert dec["vlans"] == [1062, 1493] and dec["vlan"] == 1062 and dec["vlan_priority"] == 2
    assert dec["src_mac"] == "4c:ae:a3:52:0f:f6" and dec["dst_mac"] == "00:01:10:62:14:93"
    assert (dec["src_ip"], dec["dst_ip"], dec["ip_ttl"], dec["ip_length"]) == (
        "49.49.49.2",
        "49.49.49.109",
        62,
        80,
    )
    assert (dec["src_port"], dec["dst_port"], dec["tcp_flags"]) == (32017, 443, 0x10)


def test_vxlan_inner_packet(sflow_data: Path) -> None:
    """VXLAN (UDP 4789, VNI 100) carrying Ethernet + IPv6 + ICMPv6 echo request (type 128)."""
    s = _sample(sflow_data, "akvorado__data-encap-vxlan.pcap")
    assert s.input.kind == "internal" and s.output.kind == "internal"
    dec = s.records[1].fields["decoded"]
    assert (dec["src_ip"], dec["dst_ip"], dec["ip_protocol"]) == ("192.168.108.40", "192.168.15.14", 17)
    assert (dec["src_port"], dec["dst_port"], dec["vni"]) == (45833, 4789, 100)
    assert dec["inner_src_mac"] == "ca:6e:98:f8:49:8f" and dec["inner_dst_mac"] == "01:02:03:04:05:06"
    assert (dec["inner_src_ip"], dec["inner_dst_ip"]) == ("2001:db8:4::1", "2001:db8:4::3")
    assert (dec["inner_ip_protocol"], dec["inner_icmp_type"], dec["inner_icmp_code"]) == (58, 128, 0)


def test_icmp_headers(sflow_data: Path) -> None:
    """ICMPv4 echo request; ICMPv6 neighbour solicitation (type 135) with hop limit 255."""
    v4 = _sample(sflow_data, "akvorado__data-icmpv4.pcap").records[1].fields["decoded"]
    assert (v4["src_ip"], v4["dst_ip"], v4["ip_protocol"], v4["icmp_type"], v4["icmp_code"]) == (
        "203.0.113.4",
        "203.0.113.5",
        1,
        8,
        0,
    )
    v6 = _sample(sflow_data, "akvorado__data-icmpv6.pcap").records[1].fields["decoded"]
    assert (v6["src_ip"], v6["dst_ip"], v6["ip_ttl"], v6["icmp_type"], v6["icmp_code"]) == (
        "fe80::d05b:45ff:feee:5ecf",
        "2001:db8::",
        255,
        135,
        0,
    )


def test_raw_ipv4_header(sflow_data: Path) -> None:
    """header_protocol 11: no link layer; ICMP echo replies from 69.58.92.107."""
    d = load(sflow_data, "akvorado__data-sflow-raw-ipv4.pcap")[1][0]
    assert (d.agent_address, d.sub_agent_id) == ("172.19.64.116", 100000)
    dsts = [s.records[0].fields["decoded"]["dst_ip"] for s in d.samples]
    assert dsts == ["92.222.186.1", "92.222.184.1"]
    dec = d.samples[0].records[0].fields["decoded"]
    assert "src_mac" not in dec and (dec["src_ip"], dec["icmp_type"], dec["ip_length"]) == (
        "69.58.92.107",
        0,
        32,
    )


def test_sampled_ethernet_and_ipv4_records(sflow_data: Path) -> None:
    """Flow records 0:2 and 0:3 next to the sampled header (tshark: type 2048, UDP 46622 -> 58631)."""
    s = _sample(sflow_data, "akvorado__data-sflow-ipv4-data.pcap")
    by_tag = {r.tag: r.fields for r in s.records}
    assert by_tag["0:2"]["type"] == 2048 and by_tag["0:2"]["src_mac"] == "00:fe:c8:99:05:47"
    assert by_tag["0:3"]["protocol"] == 17
    assert (by_tag["0:3"]["src_ip"], by_tag["0:3"]["dst_ip"]) == ("50.50.50.50", "51.51.51.51")
    assert (by_tag["0:3"]["src_port"], by_tag["0:3"]["dst_port"]) == (46622, 58631)
    assert by_tag["0:1001"]["dst_vlan"] == 3001


def test_ipv6_agent_and_counters(sflow_data: Path) -> None:
    """IPv6 agent 30::1:1:1; generic counters of ifIndex 23001 at 400 Gbit/s (tshark)."""
    d = load(sflow_data, "tcpdump__sflow-print-v6.pcap")[1][0]
    assert (d.agent_address, d.sequence_number, d.uptime_ms) == ("30::1:1:1", 109, 113000)
    s = d.samples[0]
    assert (s.tag, s.sequence_number) == ("0:2", 28)
    generic = next(r.fields for r in s.records if r.tag == "0:1")
    assert (generic["if_index"], generic["if_type"], generic["if_speed"]) == (23001, 6, 400_000_000_000)
    assert (generic["if_direction"], generic["if_out_octets"], generic["if_out_multicast_pkts"]) == (
        1,
        9717,
        79,
    )


def test_discarded_packet_sample(sflow_data: Path) -> None:
    """telegraf drop datagram, read by hand from the hex: reason 1, one extended_egress_queue (queue 42)."""
    d = load(sflow_data, "telegraf__sflow_issue_15375__sflow_drop_1036.bin")[1][0]
    assert (d.agent_address, d.sub_agent_id, d.sequence_number, d.uptime_ms) == (
        "192.168.119.184",
        100000,
        3,
        12414,
    )
    s = d.samples[0]
    assert (s.name, s.sequence_number, s.source_id_type, s.source_id_index, s.drops) == (
        "discarded_packet",
        2,
        0,
        1,
        256,
    )
    assert (s.input.ifindex, s.output.ifindex, s.reason, s.reason_name) == (1, 2, 1, "host_unreachable")
    assert [(r.kind, r.tag, r.fields) for r in s.records] == [("flow", "0:1036", {"queue": 42})]


def test_port_name_counter(sflow_data: Path) -> None:
    """telegraf example: port_name (0:1005) "eno1" next to generic counters."""
    s = _sample(sflow_data, "telegraf__sflow_v5_example__sflow_v5.bin")
    assert next(r.fields for r in s.records if r.tag == "0:1005") == {"name": "eno1"}


def test_hsflowd_host_and_app_structures(sflow_data: Path) -> None:
    """hsflowd capture: host_descr (hostname, UUID, release), 80-byte host_cpu, rtmetric/rtflow."""
    _packets, datagrams = load(sflow_data, "generated__hsflowd_netns.pcap")
    records = [(s, r) for d in datagrams for s in d.samples for r in s.records]
    descr = next(r.fields for _s, r in records if r.kind == "counter" and r.tag == "0:2000")
    assert descr["hostname"] == "vm" and descr["os_release"] == "6.18.44-fc-v657"
    assert descr["uuid"] == "11111111-2222-3333-4444-555555555555"
    assert descr["os_name"] == 2  # linux
    cpu = next(r for _s, r in records if r.kind == "counter" and r.tag == "0:2003")
    assert "cpu_steal" in cpu.fields and cpu.tail == b""  # 80-byte form: the three optional fields decoded
    ts = [r.fields["nanoseconds"] for _s, r in records if r.tag == "0:1043"]
    assert len(ts) == 325 and all(1.7e18 < t < 2.0e18 for t in ts)  # plausible wall-clock ns timestamps
    rtmetric = [s for d in datagrams for s in d.samples if s.tag == "4300:1002"]
    assert rtmetric and all(s.fields["metrics"] and s.issue is None for s in rtmetric)
    rtflow = [s for d in datagrams for s in d.samples if s.tag == "4300:1003"]
    assert rtflow and all(s.sampling_rate and s.fields["flow_fields"] for s in rtflow)
    assert not [i for d in datagrams for i in d.issues if i.message != "non-zero XDR padding"]


def test_pmacct_tag_records(sflow_data: Path) -> None:
    """pmacct sfprobe capture: 459 pmacct tag records (43874:2); tshark shows the first one's bytes as
    000000000000012c0000000000000000 (tag 300, tag2 0)."""
    _packets, datagrams = load(sflow_data, "generated__pmacct_sfprobe_netns.pcap")
    tags = [r.fields for d in datagrams for s in d.samples for r in s.records if r.tag == "43874:2"]
    assert len(tags) == 459 and tags[0] == {"tag": 300, "tag2": 0}
    assert {t["tag2"] for t in tags} == {0} and {t["tag"] for t in tags} == {100, 200, 300}


def test_netflow_packets_are_errors(sflow_data: Path) -> None:
    """The 5 NetFlow v5 packets sent to 6343 are not sFlow: ok=False with an issue, never an exception."""
    _packets, datagrams = load(sflow_data, "tcpdump__sflow_multiple_counter_30_pdus.pcap")
    bad = [d for d in datagrams if not d.ok]
    assert len(bad) == 5 and all("NetFlow" in d.issues[0].message for d in bad)


def test_fuzzer_capture_reports_the_overrunning_record(sflow_data: Path) -> None:
    """tcpdump's segv case: record 0:13 claims 1.18 GB; it is reported with its offset, nothing raises."""
    d = load(sflow_data, "tcpdump__sflow_print-segv.pcap")[1][0]
    rec = d.samples[0].records[0]
    assert rec.tag == "0:13" and rec.issue is not None and "overruns" in rec.issue
    assert any(i.offset == rec.offset and "overruns" in i.message for i in d.issues)
    assert not d.samples[1:]  # the next "sample" runs past the datagram: kept as trailing bytes
