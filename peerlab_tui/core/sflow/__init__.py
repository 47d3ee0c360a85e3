"""sFlow v5: per-record decoder and encoder driven by field tables (issue 5).

API contract (stable; the fast path, sources, aggregator and CLI build on it)
-------------------------------------------------------------------------------

Decoding -- never raises, never allocates beyond the datagram's size::

    decode_datagram(data: bytes, *, decode_headers: bool = True) -> Datagram

``Datagram`` (dataclass, slots): ``version, agent_address (str), sub_agent_id, sequence_number, uptime_ms,
samples: list[Sample], issues: list[DecodeIssue], ok: bool, num_samples (declared), trailing: bytes``.
``ok`` is False when the packet is not decodable sFlow v5 (NetFlow, truncated header, bad address type).

``Sample``: ``enterprise, format, name, tag ("ent:fmt")``, header attributes ``sequence_number,
source_id_type, source_id_index, sampling_rate, sample_pool, drops, input, output`` (``Interface``), for
discards ``reason, reason_name``; ``records: list[Record]``; ``fields`` (sample-level values of
sFlow-RT/Foundry samples); ``inner`` (the sample wrapped by Foundry 1991:1); ``raw``/``issue`` when unknown
or bad.

``Record``: ``kind ("flow"|"counter"), enterprise, format, name, tag, fields: dict, raw, issue, offset,
tail``. A sampled_header (flow 0:1) record has ``fields = {"protocol", "frame_length", "stripped",
"header": bytes, "decoded": {...}}`` where ``decoded`` holds ``src_mac dst_mac vlan (outer) vlans eth_type
src_ip dst_ip ip_version ip_protocol ip_tos ip_ttl src_port dst_port tcp_flags icmp_type icmp_code
mpls_labels inner_* (VXLAN: vni, inner_src_mac ... inner_dst_port)``, as far as the header goes
(``truncated: True`` when it stopped early).

``Interface(format, value)``: ``kind`` in ``unknown|internal|ifindex|discard|multiple|reserved``,
``ifindex``, ``reason_name``, ``from_compact(word)``, ``to_compact()``, ``to_json()``.

``DecodeIssue(offset, message)``: offset in bytes from the datagram start. Besides real damage (bad
records, overrunning samples, counts larger than the bytes, trailing bytes) the decoder also notes
"non-zero XDR padding" (several agents leave garbage in padding; the values are unaffected, re-encoding
writes zeros there). Every other part of a well-formed datagram re-encodes byte for byte.

Encoding -- the same tables drive it::

    encode_datagram(datagram: Datagram) -> bytes
    datagram(samples, agent_address="192.0.2.1", ...) -> Datagram        # builders
    flow_sample(records, *, sampling_rate=..., input=..., output=..., expanded=False, ...) -> Sample
    counter_sample(records, *, source_id_index=..., expanded=False, ...) -> Sample
    discard_sample(records, *, reason=..., ...) -> Sample
    sampled_header(header: bytes, *, protocol=1, frame_length=None, stripped=4) -> Record
    flow_record(name_or_(ent, fmt), **fields) / counter_record(...) -> Record

JSON and counts::

    sample_to_json(sample, datagram=None) -> dict     # names snake_case, bytes hex, addresses strings
    datagram_to_json(datagram) -> dict
    count_by_type(datagrams: Iterable[Datagram]) -> {"datagrams", "errors", "samples": {"ent:fmt": n},
        "flow_records": {...}, "counter_records": {...}, "discard_records": {...}}

``datagrams`` counts decodable sFlow v5 datagrams, ``errors`` the packets that are not (ok False).
Records of a discarded_packet sample (0:5) are counted under ``discard_records``; a Foundry wrapper counts
as sample "1991:1" and its inner sample's records count as usual.

Tables: ``STRUCTURES`` maps ``(kind, enterprise, format)`` (kind ``sample``/``flow``/``counter``) to a
``Structure`` (name, fields); ``DROP_REASONS`` and ``HEADER_PROTOCOLS`` map codes to names;
``decode_header(protocol, data) -> dict`` decodes a sampled header alone. The generated documentation:
``python -m peerlab_tui.core.sflow.structures --markdown``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Exports load lazily (PEP 562): `peerlab-tui sflow decode --count` imports only the vectorised counter and
# must not pay for the field tables, the decoder and the encoder (~60-80 ms of a sub-second process).
_EXPORTS: dict[str, str] = {
    "count_by_type": "decoder",
    "decode_datagram": "decoder",
    "counter_record": "encoder",
    "counter_sample": "encoder",
    "datagram": "encoder",
    "discard_sample": "encoder",
    "encode_datagram": "encoder",
    "encode_record": "encoder",
    "encode_sample": "encoder",
    "flow_record": "encoder",
    "flow_sample": "encoder",
    "sampled_header": "encoder",
    "decode_header": "headers",
    "datagram_to_json": "jsonout",
    "record_to_json": "jsonout",
    "sample_to_json": "jsonout",
    "Datagram": "model",
    "DecodeIssue": "model",
    "Interface": "model",
    "Record": "model",
    "Sample": "model",
    "DROP_REASONS": "structures",
    "HEADER_PROTOCOLS": "structures",
    "STRUCTURES": "structures",
    "Structure": "structures",
}


def __getattr__(name: str) -> Any:
    """Import an exported name's module on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from peerlab_tui.core.sflow.decoder import count_by_type, decode_datagram
    from peerlab_tui.core.sflow.encoder import (
        counter_record,
        counter_sample,
        datagram,
        discard_sample,
        encode_datagram,
        encode_record,
        encode_sample,
        flow_record,
        flow_sample,
        sampled_header,
    )
    from peerlab_tui.core.sflow.headers import decode_header
    from peerlab_tui.core.sflow.jsonout import datagram_to_json, record_to_json, sample_to_json
    from peerlab_tui.core.sflow.model import Datagram, DecodeIssue, Interface, Record, Sample
    from peerlab_tui.core.sflow.structures import DROP_REASONS, HEADER_PROTOCOLS, STRUCTURES, Structure

__all__ = [
    "DROP_REASONS",
    "HEADER_PROTOCOLS",
    "STRUCTURES",
    "Datagram",
    "DecodeIssue",
    "Interface",
    "Record",
    "Sample",
    "Structure",
    "count_by_type",
    "counter_record",
    "counter_sample",
    "datagram",
    "datagram_to_json",
    "decode_datagram",
    "decode_header",
    "discard_sample",
    "encode_datagram",
    "encode_record",
    "encode_sample",
    "flow_record",
    "flow_sample",
    "record_to_json",
    "sample_to_json",
    "sampled_header",
]
