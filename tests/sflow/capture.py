"""A small private capture reader for the sFlow tests: UDP payloads of pcap/pcapng files, raw .bin files."""

from __future__ import annotations

from pathlib import Path

import dpkt


def _udp_payload(linktype: int, frame: bytes) -> bytes | None:
    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            pkt = dpkt.ethernet.Ethernet(frame).data
        elif linktype == dpkt.pcap.DLT_LINUX_SLL:
            pkt = dpkt.sll.SLL(frame).data
        elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            pkt = dpkt.loopback.Loopback(frame).data
        elif linktype in (dpkt.pcap.DLT_RAW, 101, 228, 229):
            pkt = dpkt.ip.IP(frame) if frame[0] >> 4 == 4 else dpkt.ip6.IP6(frame)
        else:
            return None
    except (dpkt.UnpackError, IndexError):
        return None
    if not isinstance(pkt, dpkt.ip.IP | dpkt.ip6.IP6):
        return None
    udp = pkt.data
    if not isinstance(udp, dpkt.udp.UDP):
        return None
    # dpkt trims the IP payload to the IP total length (Ethernet padding dropped); the UDP length field is
    # not trusted (the tcpdump fuzz capture has a bogus one).
    return bytes(udp.data)


def payloads(path: Path) -> list[bytes]:
    """Every UDP payload (any port) of a pcap/pcapng capture, or the whole of a raw ``.bin`` datagram."""
    if path.suffix == ".bin":
        return [path.read_bytes()]
    out: list[bytes] = []
    with path.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        linktype = reader.datalink()
        for _ts, frame in reader:
            payload = _udp_payload(linktype, bytes(frame))
            if payload is not None:
                out.append(payload)
    return out
