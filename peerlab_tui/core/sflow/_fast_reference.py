"""The columns of :mod:`peerlab_tui.core.sflow.fast` built from the per-record decoder's objects.

This is both the fallback of the fast path (datagrams it does not cover are decoded one by one and converted
here) and the reference the tests compare the vectorised path against, column by column.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import numpy as np

from peerlab_tui.core.sflow.fast import ETHERNET_FIELDS, FOUNDRY, GENERIC_FIELDS, CounterBatch, FlowBatch

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def addr16(text: str | None) -> tuple[bytes, int]:
    """16-byte form (IPv4-mapped for IPv4) and version of an address string.

    The XDR address union's type 0 ("unknown", decoded as None) is legal on the wire (agents, next hops):
    it becomes 16 zero bytes and version 0, distinct from the -1 of an absent record.
    """
    if not text:
        return bytes(16), 0
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return _V4_MAPPED + ip.packed, 4
    return ip.packed, 6


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _first(sample: Any, fmt: int) -> dict[str, Any] | None:
    for r in sample.records:
        if r.enterprise == 0 and r.format == fmt and r.issue is None and r.raw is None:
            return r.fields
    return None


def _sample_row(d: Any, index: int, k: int, s: Any) -> dict[str, Any]:
    """The columns every flow and counter row starts with."""
    return {
        "datagram": index,
        "sample_index": k,
        "datagram_sequence": d.sequence_number,
        "sub_agent": d.sub_agent_id,
        "sample_format": s.format,
        "sequence": s.sequence_number,
        "source_id_type": s.source_id_type,
        "source_id_index": s.source_id_index,
    }


def _flow_row(d: Any, index: int, k: int, s: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        **_sample_row(d, index, k, s),
        "sampling_rate": s.sampling_rate,
        "sample_pool": s.sample_pool,
        "drops": s.drops,
        "agent": addr16(d.agent_address)[0],
    }
    if s.input is not None:
        row["input_format"], row["input_value"] = s.input.format, s.input.value
    if s.output is not None:
        row["output_format"], row["output_value"] = s.output.format, s.output.value
    h = _first(s, 1)
    if h is not None:
        row["header_protocol"] = h["protocol"]
        row["frame_length"] = h["frame_length"]
        row["stripped"] = h["stripped"]
        row["header_length"] = len(h["header"])
        dec = h.get("decoded") or {}
        if "dst_mac" in dec and h["protocol"] == 1:
            row["has_eth"] = True
            row["dst_mac"] = _mac(dec["dst_mac"])
            row["src_mac"] = _mac(dec["src_mac"])
        if h["protocol"] == 1:
            row["vlan"] = dec.get("vlan")
            row["ethertype"] = dec.get("eth_type")
        if "src_ip" in dec:
            row["src_ip"], _ = addr16(dec["src_ip"])
            row["dst_ip"], _ = addr16(dec["dst_ip"])
            row["ip_version"] = dec.get("ip_version")
        for col, key in (
            ("ip_proto", "ip_protocol"),
            ("tos", "ip_tos"),
            ("ttl", "ip_ttl"),
            ("src_port", "src_port"),
            ("dst_port", "dst_port"),
            ("tcp_flags", "tcp_flags"),
            ("icmp_type", "icmp_type"),
            ("icmp_code", "icmp_code"),
        ):
            row[col] = dec.get(key)
    for fmt, version, tos in ((3, 4, "tos"), (4, 6, "priority")):
        f = _first(s, fmt)
        if f is not None and "rec_ip_version" not in row:
            row["rec_ip_version"] = version
            row["rec_length"] = f["length"]
            row["rec_protocol"] = f["protocol"]
            row["rec_src_ip"], _ = addr16(f["src_ip"])
            row["rec_dst_ip"], _ = addr16(f["dst_ip"])
            row["rec_src_port"] = f["src_port"]
            row["rec_dst_port"] = f["dst_port"]
            row["rec_tcp_flags"] = f["tcp_flags"]
            row["rec_tos"] = f[tos]
    f = _first(s, 1001)
    if f is not None:
        for name in ("src_vlan", "src_priority", "dst_vlan", "dst_priority"):
            row[name] = f[name]
    f = _first(s, 1002)
    if f is not None:
        row["nexthop"], row["nexthop_version"] = addr16(f["nexthop"])
        row["src_mask_len"] = f["src_mask_len"]
        row["dst_mask_len"] = f["dst_mask_len"]
    f = _first(s, 1003)
    if f is not None:
        row["gw_nexthop"], row["gw_nexthop_version"] = addr16(f["nexthop"])
        row["gw_as"] = f["as"]
        row["gw_src_as"] = f["src_as"]
        row["gw_src_peer_as"] = f["src_peer_as"]
        asns = [a for seg in f["dst_as_path"] for a in seg["value"]]
        row["gw_dst_peer_as"] = asns[0] if asns else None
        row["gw_dst_as"] = asns[-1] if asns else None
        row["gw_communities"] = len(f["communities"])
        row["gw_localpref"] = f["localpref"]
    return row


def _counter_row(d: Any, index: int, k: int, s: Any) -> dict[str, Any]:
    row: dict[str, Any] = _sample_row(d, index, k, s)
    for fmt, flag, fields in ((1, "has_generic", GENERIC_FIELDS), (2, "has_ethernet", ETHERNET_FIELDS)):
        f = next(
            (
                r.fields
                for r in s.records
                if r.kind == "counter"
                and r.enterprise == 0
                and r.format == fmt
                and r.issue is None
                and r.raw is None
            ),
            None,
        )
        if f is not None:
            row[flag] = True
            for name in fields:
                row[name] = f[name]
    return row


def _build(cls: Any, rows: list[dict[str, Any]]) -> Any:
    n = len(rows)
    batch = cls.empty(n)
    cols = batch.columns
    for i, row in enumerate(rows):
        for key, value in row.items():
            if value is None:
                continue
            col = cols[key]
            if col.ndim == 2:
                col[i] = np.frombuffer(value, np.uint8)
            else:
                col[i] = value
    return batch


def _unwrap(sample: Any) -> Any:
    """The standard sample a row is made of: the sample itself, or the inner sample of a Foundry 1991:1
    wrapper (Brocade's ACL-based sFlow wraps ordinary flow samples); None for every other vendor sample.

    The row keeps the wrapper's ordinal (``sample_index``) and the inner sample's format (1/3, 2/4)."""
    if sample.enterprise == FOUNDRY[0] and sample.format == FOUNDRY[1] and sample.inner is not None:
        sample = sample.inner
    return sample if sample.enterprise == 0 else None


def rows_from_datagram(d: Any, index: int = 0) -> tuple[FlowBatch, CounterBatch]:
    """Flow and counter rows of one decoded datagram (``index`` is its position in the batch)."""
    flows: list[dict[str, Any]] = []
    ctrs: list[dict[str, Any]] = []
    if d.ok:
        for k, outer in enumerate(d.samples):
            s = _unwrap(outer)
            if s is None:
                continue
            if s.format in (1, 3):
                flows.append(_flow_row(d, index, k, s))
            elif s.format in (2, 4):
                ctrs.append(_counter_row(d, index, k, s))
    return _build(FlowBatch, flows), _build(CounterBatch, ctrs)


__all__ = ["addr16", "rows_from_datagram"]
