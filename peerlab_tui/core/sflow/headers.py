"""Decode the sampled packet header of a flow 0:1 record into named fields, as far as the bytes go.

The fast hand-written walk covers what flow accounting needs: Ethernet (802.1Q/QinQ, LLC/SNAP), raw IPv4,
raw IPv6 (extension headers), MPLS, PPP/POS, 802.11 data frames (and A-MPDU / A-MSDU subframes), and inside
IPv4/IPv6 the TCP/UDP ports and flags, ICMP/ICMPv6 type and code, and a VXLAN (UDP 4789) inner frame whose
fields are prefixed ``inner_``. A header cut short decodes as far as it goes and says ``truncated: True``.
:func:`dpkt_packet` gives the complete dpkt object for a full decode of any layer.

Field names: ``src_mac dst_mac vlan (outer VLAN id) vlans (all, outermost first) eth_type src_ip dst_ip
ip_version ip_protocol ip_tos ip_ttl ip_length fragment_offset src_port dst_port tcp_flags icmp_type
icmp_code mpls_labels vni inner_*``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

_AF6 = socket.AF_INET6
_ntop = socket.inet_ntop
_H = struct.Struct(">H")
_HH = struct.Struct(">HH")
_I = struct.Struct(">I")

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TYPES = (0x8100, 0x88A8, 0x9100, 0x9200)
ETH_MPLS = (0x8847, 0x8848)
VXLAN_PORTS = (4789, 8472)
_IPV6_EXT = (0, 43, 60, 51, 44, 135, 139, 140)
_MAX_DEPTH = 3  # VXLAN in VXLAN in ... stops here


def mac_str(raw: bytes) -> str:
    """``aa:bb:cc:dd:ee:ff`` of 6 bytes."""
    return raw.hex(":")


def decode_header(protocol: int, data: bytes) -> dict[str, Any]:
    """Named fields of a sampled header of the given ``header_protocol`` (never raises)."""
    out: dict[str, Any] = {}
    try:
        _dispatch(protocol, bytes(data), out, "", 0)
    except (struct.error, IndexError, ValueError, OSError):  # pragma: no cover - every read is bounds-checked
        out["truncated"] = True
    return out


def _dispatch(protocol: int, data: bytes, out: dict[str, Any], pre: str, depth: int) -> None:
    if protocol == 1:
        _ethernet(data, 0, out, pre, depth)
    elif protocol == 11:
        _ipv4(data, 0, out, pre, depth)
    elif protocol == 12:
        _ipv6(data, 0, out, pre, depth)
    elif protocol == 13:
        _mpls(data, 0, out, pre, depth)
    elif protocol in (7, 14):
        _ppp(data, 0, out, pre, depth)
    elif protocol == 15:
        _ieee80211(data, 0, out, pre, depth)
    elif protocol == 16:  # A-MPDU: 4-byte MPDU delimiter, then an 802.11 MAC frame
        if len(data) < 4:
            out["truncated"] = True
            return
        _ieee80211(data, 4, out, pre, depth)
    elif protocol == 17:  # A-MSDU subframe: DA, SA, length, then LLC/SNAP
        if len(data) < 14:
            out["truncated"] = True
            return
        out[pre + "dst_mac"] = mac_str(data[0:6])
        out[pre + "src_mac"] = mac_str(data[6:12])
        _llc(data, 14, out, pre, depth)


def _ethernet(data: bytes, off: int, out: dict[str, Any], pre: str, depth: int) -> None:
    n = len(data)
    if n - off < 14:
        if n - off >= 12:
            out[pre + "dst_mac"] = mac_str(data[off : off + 6])
            out[pre + "src_mac"] = mac_str(data[off + 6 : off + 12])
        out["truncated"] = True
        return
    out[pre + "dst_mac"] = mac_str(data[off : off + 6])
    out[pre + "src_mac"] = mac_str(data[off + 6 : off + 12])
    (eth_type,) = _H.unpack_from(data, off + 12)
    off += 14
    vlans: list[int] = []
    while eth_type in ETH_VLAN_TYPES:
        if n - off < 4:
            out["truncated"] = True
            break
        tci, eth_type = _HH.unpack_from(data, off)
        vlans.append(tci & 0x0FFF)
        if len(vlans) == 1:
            out[pre + "vlan_priority"] = tci >> 13
        off += 4
    if vlans:
        out[pre + "vlan"] = vlans[0]
        out[pre + "vlans"] = vlans
    if eth_type < 0x0600:  # 802.3 length field: LLC (maybe SNAP) follows
        _llc(data, off, out, pre, depth)
        return
    out[pre + "eth_type"] = eth_type
    _ethertype(eth_type, data, off, out, pre, depth)


def _llc(data: bytes, off: int, out: dict[str, Any], pre: str, depth: int) -> None:
    if len(data) - off < 8:
        out["truncated"] = True
        return
    if data[off] == 0xAA and data[off + 1] == 0xAA and data[off + 2] == 0x03:
        (eth_type,) = _H.unpack_from(data, off + 6)
        out[pre + "eth_type"] = eth_type
        _ethertype(eth_type, data, off + 8, out, pre, depth)


def _ethertype(eth_type: int, data: bytes, off: int, out: dict[str, Any], pre: str, depth: int) -> None:
    if eth_type == ETH_IPV4:
        _ipv4(data, off, out, pre, depth)
    elif eth_type == ETH_IPV6:
        _ipv6(data, off, out, pre, depth)
    elif eth_type in ETH_MPLS:
        _mpls(data, off, out, pre, depth)


def _ppp(data: bytes, off: int, out: dict[str, Any], pre: str, depth: int) -> None:
    if len(data) - off >= 2 and data[off] == 0xFF and data[off + 1] == 0x03:
        off += 2  # HDLC-like framing (POS)
    if len(data) - off < 2:
        out["truncated"] = True
        return
    (proto,) = _H.unpack_from(data, off)
    if proto == 0x0021:
        _ipv4(data, off + 2, out, pre, depth)
    elif proto == 0x0057:
        _ipv6(data, off + 2, out, pre, depth)
    elif proto in (0x0281, 0x0283):
        _mpls(data, off + 2, out, pre, depth)


def _mpls(data: bytes, off: int, out: dict[str, Any], pre: str, depth: int) -> None:
    labels: list[int] = []
    n = len(data)
    while True:
        if n - off < 4:
            out["truncated"] = True
            out[pre + "mpls_labels"] = labels
            return
        (word,) = _I.unpack_from(data, off)
        labels.append(word >> 12)
        off += 4
        if word & 0x100:  # bottom of stack
            break
    out[pre + "mpls_labels"] = labels
    if off < n:
        version = data[off] >> 4
        if version == 4:
            _ipv4(data, off, out, pre, depth)
        elif version == 6:
            _ipv6(data, off, out, pre, depth)


def _ieee80211(data: bytes, off: int, out: dict[str, Any], pre: str, depth: int) -> None:
    n = len(data)
    if n - off < 24:
        out["truncated"] = True
        return
    fc0, fc1 = data[off], data[off + 1]
    ftype = (fc0 >> 2) & 3
    subtype = fc0 >> 4
    to_ds, from_ds = fc1 & 1, (fc1 >> 1) & 1
    out[pre + "wlan_type"] = ftype
    out[pre + "wlan_subtype"] = subtype
    a1, a2, a3 = data[off + 4 : off + 10], data[off + 10 : off + 16], data[off + 16 : off + 22]
    hdr = 24
    a4 = b""
    if to_ds and from_ds:
        if n - off < 30:
            out["truncated"] = True
            return
        a4 = data[off + 24 : off + 30]
        hdr = 30
    if ftype != 2:  # management/control: addresses only
        out[pre + "dst_mac"] = mac_str(a1)
        out[pre + "src_mac"] = mac_str(a2)
        return
    dst, src = {(0, 0): (a1, a2), (1, 0): (a3, a2), (0, 1): (a1, a3), (1, 1): (a3, a4)}[(to_ds, from_ds)]
    out[pre + "dst_mac"] = mac_str(dst)
    out[pre + "src_mac"] = mac_str(src)
    out[pre + "bssid"] = mac_str({(0, 0): a3, (1, 0): a1, (0, 1): a2, (1, 1): a2}[(to_ds, from_ds)])
    if subtype & 0x8:  # QoS data: 2-byte QoS control
        hdr += 2
        if fc1 & 0x80:  # +HTC/order
            hdr += 4
    if fc1 & 0x40:  # protected: payload is encrypted
        return
    if subtype & 0x4:  # null function: no payload
        return
    _llc(data, off + hdr, out, pre, depth)


def _ipv4(data: bytes, off: int, out: dict[str, Any], pre: str, depth: int) -> None:
    n = len(data)
    if n - off < 20:
        out["truncated"] = True
        return
    vihl = data[off]
    out[pre + "ip_version"] = vihl >> 4
    ihl = (vihl & 0x0F) * 4
    out[pre + "ip_tos"] = data[off + 1]
    (total,) = _H.unpack_from(data, off + 2)
    out[pre + "ip_length"] = total
    (frag,) = _H.unpack_from(data, off + 6)
    out[pre + "ip_ttl"] = data[off + 8]
    proto = data[off + 9]
    out[pre + "ip_protocol"] = proto
    out[pre + "src_ip"] = _ntop(socket.AF_INET, data[off + 12 : off + 16])
    out[pre + "dst_ip"] = _ntop(socket.AF_INET, data[off + 16 : off + 20])
    if frag & 0x1FFF:  # not the first fragment: no transport header
        out[pre + "fragment_offset"] = (frag & 0x1FFF) * 8
        return
    if ihl < 20:
        return
    _transport(proto, data, off + ihl, out, pre, depth, icmp6=False)


def _ipv6(data: bytes, off: int, out: dict[str, Any], pre: str, depth: int) -> None:
    n = len(data)
    if n - off < 40:
        out["truncated"] = True
        return
    (word,) = _I.unpack_from(data, off)
    out[pre + "ip_version"] = word >> 28
    out[pre + "ip_tos"] = (word >> 20) & 0xFF
    out[pre + "ip_flow_label"] = word & 0xFFFFF
    (plen,) = _H.unpack_from(data, off + 4)
    out[pre + "ip_length"] = plen + 40
    nxt = data[off + 6]
    out[pre + "ip_ttl"] = data[off + 7]
    out[pre + "src_ip"] = _ntop(_AF6, data[off + 8 : off + 24])
    out[pre + "dst_ip"] = _ntop(_AF6, data[off + 24 : off + 40])
    off += 40
    for _ in range(8):  # walk extension headers (bounded)
        if nxt not in _IPV6_EXT:
            break
        if n - off < 8:
            out[pre + "ip_protocol"] = nxt
            out["truncated"] = True
            return
        if nxt == 44:  # fragment header: 8 bytes; later fragments carry no transport header
            (frag,) = _H.unpack_from(data, off + 2)
            nxt = data[off]
            off += 8
            if frag & 0xFFF8:
                out[pre + "ip_protocol"] = nxt
                out[pre + "fragment_offset"] = frag & 0xFFF8
                return
            continue
        length = (data[off + 1] + 2) * 4 if nxt == 51 else (data[off + 1] + 1) * 8
        nxt = data[off]
        off += length
    out[pre + "ip_protocol"] = nxt
    _transport(nxt, data, off, out, pre, depth, icmp6=True)


def _transport(
    proto: int, data: bytes, off: int, out: dict[str, Any], pre: str, depth: int, icmp6: bool
) -> None:
    left = len(data) - off
    if proto == 6 or proto == 17 or proto == 132:  # TCP, UDP, SCTP: ports first
        if left < 4:
            out["truncated"] = True
            return
        sport, dport = _HH.unpack_from(data, off)
        out[pre + "src_port"] = sport
        out[pre + "dst_port"] = dport
        if proto == 6:
            if left < 14:
                out["truncated"] = True
                return
            out[pre + "tcp_flags"] = ((data[off + 12] & 1) << 8) | data[off + 13]
        elif proto == 17 and dport in VXLAN_PORTS and not pre and depth < _MAX_DEPTH:
            if left < 16:
                out["truncated"] = True
                return
            if data[off + 8] & 0x08:  # VNI present
                out["vni"] = _I.unpack_from(data, off + 12)[0] >> 8
                _ethernet(data, off + 16, out, "inner_", depth + 1)
    elif (proto == 1 and not icmp6) or (proto == 58 and icmp6):
        if left < 2:
            out["truncated"] = True
            return
        out[pre + "icmp_type"] = data[off]
        out[pre + "icmp_code"] = data[off + 1]


def dpkt_packet(protocol: int, data: bytes) -> Any:
    """The full dpkt decode of a sampled header (None when dpkt has no decoder for this protocol).

    dpkt raises on truncated input; this returns None then, and the named fields of :func:`decode_header`
    remain the robust way to read a header.
    """
    import dpkt

    classes: dict[int, Any] = {
        1: dpkt.ethernet.Ethernet,
        11: dpkt.ip.IP,
        12: dpkt.ip6.IP6,
        13: dpkt.mpls.MPLSlabel if hasattr(dpkt, "mpls") else None,
        15: dpkt.ieee80211.IEEE80211,
    }
    cls = classes.get(protocol)
    if cls is None:
        return None
    try:
        return cls(bytes(data))
    except (dpkt.UnpackError, struct.error, ValueError, IndexError, KeyError, TypeError):
        return None
