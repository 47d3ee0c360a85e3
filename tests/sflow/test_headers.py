"""Sampled-header decoding by header_protocol, on packets built with dpkt (independent of our decoder), and a
cross-check against dpkt's full decode on every header of the overflowd capture."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dpkt
import pytest

from peerlab_tui.core.sflow import decode_header
from peerlab_tui.core.sflow.headers import dpkt_packet
from tests.sflow.capture import payloads
from tests.sflow.gen import ethernet_tcp_header

V4 = socket.inet_pton(socket.AF_INET, "198.51.100.1"), socket.inet_pton(socket.AF_INET, "198.51.100.2")
V6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1"), socket.inet_pton(socket.AF_INET6, "2001:db8::2")


def _ipv4_udp(sport: int = 5000, dport: int = 53, payload: bytes = b"x" * 8) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(bytes(udp))
    ip = dpkt.ip.IP(src=V4[0], dst=V4[1], p=17, ttl=9, data=udp)
    ip.len = len(bytes(ip))
    return bytes(ip)


def _ipv6_tcp(flags: int = dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK) -> bytes:
    tcp = dpkt.tcp.TCP(sport=443, dport=40000, flags=flags)
    ip6 = dpkt.ip6.IP6(src=V6[0], dst=V6[1], nxt=6, hlim=33, fc=0xB8, plen=len(bytes(tcp)), data=tcp)
    return bytes(ip6)


def test_ethernet_vlan_ipv4_tcp() -> None:
    """Ethernet + 802.1Q + IPv4 + TCP SYN: every named field."""
    dec = decode_header(1, ethernet_tcp_header().fields["header"])
    assert dec == {
        "dst_mac": "02:00:00:00:00:02",
        "src_mac": "02:00:00:00:00:01",
        "vlan": 10,
        "vlans": [10],
        "vlan_priority": 3,
        "eth_type": 0x0800,
        "ip_version": 4,
        "ip_tos": 0x10,
        "ip_length": 40,
        "ip_ttl": 63,
        "ip_protocol": 6,
        "src_ip": "192.0.2.1",
        "dst_ip": "192.0.2.2",
        "src_port": 51000,
        "dst_port": 179,
        "tcp_flags": 0x02,
    }


def test_truncated_header_decodes_as_far_as_it_goes() -> None:
    """Cut in the TCP header: addresses and ports decode, flags do not, and truncated is set."""
    header = ethernet_tcp_header().fields["header"]
    dec = decode_header(1, header[: 18 + 20 + 6])
    assert (dec["src_ip"], dec["src_port"], dec["dst_port"], dec["truncated"]) == (
        "192.0.2.1",
        51000,
        179,
        True,
    )
    assert "tcp_flags" not in dec
    cut_ip = decode_header(1, header[: 18 + 10])
    assert cut_ip["vlan"] == 10 and cut_ip["truncated"] and "src_ip" not in cut_ip
    assert decode_header(1, header[:8]) == {"truncated": True}


def test_raw_ipv6_with_extension_header() -> None:
    """header_protocol 12 with a hop-by-hop header before UDP; traffic class and hop limit."""
    udp = dpkt.udp.UDP(sport=546, dport=547, data=b"abcd")
    udp.ulen = len(bytes(udp))
    hop = b"\x11\x00" + b"\x01\x04\x00\x00\x00\x00"  # next=UDP, len 0 (8 bytes), PadN
    fixed = struct.pack(">IHBB", (6 << 28) | (0x20 << 20) | 0x12345, len(hop) + len(bytes(udp)), 0, 1)
    dec = decode_header(12, fixed + V6[0] + V6[1] + hop + bytes(udp))
    assert (dec["ip_version"], dec["ip_tos"], dec["ip_flow_label"], dec["ip_ttl"]) == (6, 0x20, 0x12345, 1)
    assert (dec["ip_protocol"], dec["src_port"], dec["dst_port"]) == (17, 546, 547)
    assert (dec["src_ip"], dec["dst_ip"]) == ("2001:db8::1", "2001:db8::2")


def test_raw_ipv6_tcp_flags() -> None:
    """TCP SYN+ACK in raw IPv6."""
    dec = decode_header(12, _ipv6_tcp())
    assert (dec["ip_tos"], dec["ip_ttl"], dec["src_port"], dec["dst_port"], dec["tcp_flags"]) == (
        0xB8,
        33,
        443,
        40000,
        0x12,
    )


def test_mpls_label_stack() -> None:
    """header_protocol 13: two labels (16, 17 bottom of stack) then IPv4/UDP."""
    stack = struct.pack(">II", (16 << 12) | 64, (17 << 12) | 0x100 | 64)
    dec = decode_header(13, stack + _ipv4_udp())
    assert dec["mpls_labels"] == [16, 17]
    assert (dec["src_ip"], dec["dst_ip"], dec["ip_ttl"], dec["dst_port"]) == (
        "198.51.100.1",
        "198.51.100.2",
        9,
        53,
    )


def test_ethernet_mpls_ipv6() -> None:
    """Ethernet 0x8847 + one label + IPv6/TCP."""
    eth = bytes.fromhex("0200000000020200000000018847") + struct.pack(">I", (1000 << 12) | 0x100 | 1)
    dec = decode_header(1, eth + _ipv6_tcp())
    assert dec["eth_type"] == 0x8847 and dec["mpls_labels"] == [1000] and dec["src_ip"] == "2001:db8::1"


def test_qinq_8021ad() -> None:
    """802.1ad outer tag (0x88a8) then 802.1Q inner tag."""
    eth = bytes.fromhex("020000000002020000000001") + struct.pack(">HHHHH", 0x88A8, 100, 0x8100, 200, 0x0800)
    dec = decode_header(1, eth + _ipv4_udp())
    assert (
        dec["vlans"] == [100, 200]
        and dec["vlan"] == 100
        and dec["eth_type"] == 0x0800
        and dec["src_port"] == 5000
    )


def test_ieee80211_data_frame() -> None:
    """header_protocol 15: QoS data frame to the DS (addr1 BSSID, addr2 SA, addr3 DA) + LLC/SNAP + IPv4."""
    bssid, sa, da = (
        bytes.fromhex("0a0000000001"),
        bytes.fromhex("0a0000000002"),
        bytes.fromhex("0a0000000003"),
    )
    fc = bytes([0x88, 0x01])  # type data, subtype QoS data; ToDS
    frame = (
        fc + b"\0\0" + bssid + sa + da + b"\0\0" + b"\0\0" + bytes.fromhex("aaaa030000000800") + _ipv4_udp()
    )
    dec = decode_header(15, frame)
    assert (dec["src_mac"], dec["dst_mac"], dec["bssid"]) == (
        "0a:00:00:00:00:02",
        "0a:00:00:00:00:03",
        "0a:00:00:00:00:01",
    )
    assert (dec["eth_type"], dec["src_ip"], dec["dst_port"]) == (0x0800, "198.51.100.1", 53)
    assert dpkt_packet(15, frame) is not None  # dpkt decodes the same frame fully


def test_pos_ppp_and_fragments() -> None:
    """POS (HDLC ff03 + PPP 0x0021) to IPv4; a non-first IPv4 fragment has no ports."""
    dec = decode_header(14, b"\xff\x03\x00\x21" + _ipv4_udp())
    assert dec["src_ip"] == "198.51.100.1" and dec["dst_port"] == 53
    frag = bytearray(_ipv4_udp())
    struct.pack_into(">H", frag, 6, 185)  # fragment offset 185 * 8
    dec = decode_header(11, bytes(frag))
    assert dec["fragment_offset"] == 1480 and "src_port" not in dec


def test_vxlan_inner_fields() -> None:
    """UDP 4789 with VNI 5001 carrying Ethernet/IPv6/TCP: inner_* fields."""
    inner = bytes.fromhex("0200000000bb0200000000aa86dd") + _ipv6_tcp()
    vxlan = struct.pack(">II", 0x08000000, 5001 << 8) + inner
    eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + _ipv4_udp(40000, 4789, vxlan)
    dec = decode_header(1, eth)
    assert (
        dec["vni"] == 5001 and dec["inner_src_mac"] == "02:00:00:00:00:aa" and dec["inner_eth_type"] == 0x86DD
    )
    assert (dec["inner_src_ip"], dec["inner_dst_port"], dec["inner_tcp_flags"]) == (
        "2001:db8::1",
        40000,
        0x12,
    )
    assert dec["dst_port"] == 4789 and dec["src_ip"] == "198.51.100.1"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5, 6, 8, 9, 10, 18, 99])
def test_protocols_without_a_decoder(protocol: int) -> None:
    """Header protocols we do not walk give no fields (the raw header stays in the record)."""
    assert decode_header(protocol, _ipv4_udp()) == {}


def test_matches_dpkt_on_every_overflowd_header(sflow_data: Path) -> None:
    """Addresses, protocol and ports agree with dpkt's full decode on all 5855 sampled headers."""
    from peerlab_tui.core.sflow import decode_datagram

    checked = 0
    for payload in payloads(sflow_data / "overflowd__sflow.pcap"):
        for sample in decode_datagram(payload).samples:
            for rec in sample.records:
                if rec.tag != "0:1" or rec.kind != "flow":
                    continue
                eth = dpkt_packet(1, rec.fields["header"])
                ours = rec.fields["decoded"]
                assert ours["src_mac"] == eth.src.hex(":") and ours["dst_mac"] == eth.dst.hex(":")
                ip = eth.data
                if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                    family = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
                    assert ours["src_ip"] == socket.inet_ntop(family, ip.src)
                    assert ours["dst_ip"] == socket.inet_ntop(family, ip.dst)
                    l4 = ip.data
                    if isinstance(l4, dpkt.tcp.TCP | dpkt.udp.UDP):
                        assert (ours["src_port"], ours["dst_port"]) == (l4.sport, l4.dport)
                        checked += 1
    assert checked > 5000
