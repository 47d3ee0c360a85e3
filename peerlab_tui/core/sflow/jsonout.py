"""JSON form of decoded sFlow (``peerlab-tui sflow decode FILE --json``): snake_case names from the field
tables, bytes as hex, addresses as strings, interfaces as objects, enum names beside their codes."""

from __future__ import annotations

from typing import Any

from peerlab_tui.core.sflow.fields import Nested
from peerlab_tui.core.sflow.model import Datagram, Record, Sample
from peerlab_tui.core.sflow.structures import STRUCTURES, _plain_json


def record_to_json(record: Record) -> dict[str, Any]:
    """One record: kind, tag, name, fields (and raw hex / issue / tail hex when present)."""
    out: dict[str, Any] = {
        "kind": record.kind,
        "enterprise": record.enterprise,
        "format": record.format,
        "tag": record.tag,
        "name": record.name,
    }
    structure = STRUCTURES.get((record.kind, record.enterprise, record.format))
    if record.fields:
        fields = structure.to_json(record.fields) if structure else _plain_json(record.fields)
        if "decoded" in record.fields:
            fields["decoded"] = dict(record.fields["decoded"])
        out["fields"] = fields
    if record.raw is not None:
        out["raw"] = record.raw.hex()
    if record.tail:
        out["tail"] = record.tail.hex()
    if record.issue:
        out["issue"] = record.issue
    return out


def sample_to_json(sample: Sample, datagram: Datagram | None = None) -> dict[str, Any]:
    """One sample with its records; with ``datagram``, the agent and datagram sequence are included."""
    out: dict[str, Any] = {}
    if datagram is not None:
        out["agent_address"] = datagram.agent_address
        out["sub_agent_id"] = datagram.sub_agent_id
        out["datagram_sequence_number"] = datagram.sequence_number
        out["uptime_ms"] = datagram.uptime_ms
    out.update(
        {"type": sample.name, "tag": sample.tag, "enterprise": sample.enterprise, "format": sample.format}
    )
    for name in (
        "sequence_number",
        "source_id_type",
        "source_id_index",
        "sampling_rate",
        "sample_pool",
        "drops",
    ):
        value = getattr(sample, name)
        if value is not None:
            out[name] = value
    if sample.input is not None:
        out["input"] = sample.input.to_json()
    if sample.output is not None:
        out["output"] = sample.output.to_json()
    if sample.reason is not None:
        out["reason"] = sample.reason
        out["reason_name"] = sample.reason_name
    structure = STRUCTURES.get(("sample", sample.enterprise, sample.format))
    if sample.fields:
        out["fields"] = structure.to_json(sample.fields) if structure else _plain_json(sample.fields)
    if sample.inner is not None:
        out["inner"] = sample_to_json(sample.inner)
    if sample.raw is None or sample.records:
        out["records"] = [record_to_json(r) for r in sample.records]
    if sample.raw is not None:
        out["raw"] = sample.raw.hex()
    if sample.tail:
        out["tail"] = sample.tail.hex()
    if sample.issue:
        out["issue"] = sample.issue
    return out


def datagram_to_json(datagram: Datagram) -> dict[str, Any]:
    """The datagram header, its samples and the issues found (offset + message)."""
    out: dict[str, Any] = {"ok": datagram.ok, "version": datagram.version}
    if datagram.ok:
        out.update(
            agent_address=datagram.agent_address,
            sub_agent_id=datagram.sub_agent_id,
            sequence_number=datagram.sequence_number,
            uptime_ms=datagram.uptime_ms,
            samples=[sample_to_json(s) for s in datagram.samples],
        )
        if datagram.trailing:
            out["trailing"] = datagram.trailing.hex()
    out["issues"] = [{"offset": i.offset, "message": i.message} for i in datagram.issues]
    return out


Nested.jsonners["flow_records"] = lambda records: [record_to_json(r) for r in records]
Nested.jsonners["counter_records"] = Nested.jsonners["flow_records"]
Nested.jsonners["sample"] = lambda sample: sample_to_json(sample) if sample is not None else None
