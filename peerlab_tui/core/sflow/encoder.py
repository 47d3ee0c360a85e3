"""The sFlow v5 encoder, driven by the same field tables as the decoder, and builders for tests/fixtures.

``encode_datagram(decode_datagram(b)) == b`` for every well-formed datagram: unknown tags are written from
their raw bytes, bytes after the known fields of a record or sample (``tail``) and after the samples
(``trailing``) are kept. Invalid values raise :class:`~peerlab_tui.core.sflow.fields.EncodeError`
(an ``InputError``).
"""

from __future__ import annotations

import struct
from typing import Any

from peerlab_tui.core.sflow.fields import EncodeError, Nested, encode_address
from peerlab_tui.core.sflow.model import SAMPLE_HEADER_ATTRS, Datagram, Interface, Record, Sample
from peerlab_tui.core.sflow.structures import BY_NAME, STRUCTURES, structure_name

_II = struct.Struct(">II")
_I = struct.Struct(">I")


def _tag(enterprise: int, fmt: int) -> int:
    if not (0 <= enterprise < 1 << 20 and 0 <= fmt < 1 << 12):
        raise EncodeError(f"tag {enterprise}:{fmt} does not fit data_format (20 + 12 bits)")
    return (enterprise << 12) | fmt


def encode_record(record: Record, out: bytearray | None = None) -> bytes:
    """Wire form of one flow/counter record (data_format, length, body)."""
    buf = bytearray()
    if record.raw is not None:
        buf += record.raw
    else:
        structure = STRUCTURES.get((record.kind, record.enterprise, record.format))
        if structure is None:
            raise EncodeError(f"no table for {record.kind} {record.tag} and no raw bytes to send")
        structure.encode(record.fields, buf)
        buf += record.tail
    wire = _II.pack(_tag(record.enterprise, record.format), len(buf)) + bytes(buf)
    if out is not None:
        out += wire
    return wire


def _encode_records(records: Any, out: bytearray) -> None:
    if not isinstance(records, list | tuple):
        raise EncodeError(f"expected a list of records, got {type(records).__name__}")
    out += _I.pack(len(records))
    for rec in records:
        encode_record(rec, out)


def _sample_values(sample: Sample) -> dict[str, Any]:
    values: dict[str, Any] = dict(sample.fields)
    for name in (*SAMPLE_HEADER_ATTRS, "reason"):
        value = getattr(sample, name)
        if value is not None:
            values[name] = value
    values["source_id"] = (sample.source_id_type or 0, sample.source_id_index or 0)
    values["flow_records"] = values["counters"] = values["discard_records"] = sample.records
    values["sample"] = sample.inner
    return values


def encode_sample(sample: Sample, out: bytearray | None = None) -> bytes:
    """Wire form of one sample record (data_format, length, body)."""
    buf = bytearray()
    if sample.raw is not None:
        buf += sample.raw
    else:
        structure = STRUCTURES.get(("sample", sample.enterprise, sample.format))
        if structure is None:
            raise EncodeError(f"no table for sample {sample.tag} and no raw bytes to send")
        if structure.name == "foundry_acl_sample" and sample.inner is None:
            raise EncodeError("a Foundry 1991:1 sample needs its inner sample")
        structure.encode(_sample_values(sample), buf)
        buf += sample.tail
    wire = _II.pack(_tag(sample.enterprise, sample.format), len(buf)) + bytes(buf)
    if out is not None:
        out += wire
    return wire


def encode_datagram(datagram: Datagram) -> bytes:
    """Wire form of a datagram: header, ``len(samples)`` samples, then any kept ``trailing`` bytes."""
    out = bytearray(_I.pack(5))
    out += encode_address(datagram.agent_address or None, "agent_address")
    try:
        out += struct.pack(
            ">IIII",
            datagram.sub_agent_id,
            datagram.sequence_number,
            datagram.uptime_ms,
            len(datagram.samples),
        )
    except struct.error as exc:
        raise EncodeError(f"datagram header: {exc}") from exc
    for sample in datagram.samples:
        encode_sample(sample, out)
    out += datagram.trailing
    return bytes(out)


Nested.encoders["flow_records"] = _encode_records
Nested.encoders["counter_records"] = _encode_records


def _encode_inner_sample(value: Any, out: bytearray) -> None:
    if not isinstance(value, Sample):
        raise EncodeError(f"expected the encapsulated Sample, got {type(value).__name__}")
    encode_sample(value, out)


Nested.encoders["sample"] = _encode_inner_sample


# --- builders -----------------------------------------------------------------------------------------------


def _interface(value: Interface | int | None) -> Interface:
    if value is None:
        return Interface(0, 0)
    if isinstance(value, Interface):
        return value
    return Interface(0, value)


def _record(kind: str, what: str | tuple[int, int], fields: dict[str, Any]) -> Record:
    if isinstance(what, tuple):
        ent, fmt = what
    else:
        structure = BY_NAME.get(what)
        if structure is None or structure.kind != kind:
            raise EncodeError(f"no {kind} structure named {what!r}")
        ent, fmt = structure.enterprise, structure.format
    structure = STRUCTURES.get((kind, ent, fmt))
    values = structure.defaults() if structure else {}
    values.update(fields)
    return Record(kind, ent, fmt, structure_name(kind, ent, fmt), fields=values)


def flow_record(what: str | tuple[int, int], **fields: Any) -> Record:
    """A flow record by structure name (``"extended_switch"``) or ``(enterprise, format)``.

    Omitted fields take their default (0, empty, unknown).
    """
    return _record("flow", what, fields)


def counter_record(what: str | tuple[int, int], **fields: Any) -> Record:
    """A counter record by structure name (``"if_counters"``) or ``(enterprise, format)``."""
    return _record("counter", what, fields)


def sampled_header(
    header: bytes, *, protocol: int = 1, frame_length: int | None = None, stripped: int = 4
) -> Record:
    """A sampled_header (flow 0:1) record; ``frame_length`` defaults to the header length + ``stripped``."""
    length = len(header) + stripped if frame_length is None else frame_length
    return flow_record(
        "sampled_header", protocol=protocol, frame_length=length, stripped=stripped, header=header
    )


def flow_sample(
    records: list[Record],
    *,
    sequence_number: int = 1,
    source_id_type: int = 0,
    source_id_index: int = 1,
    sampling_rate: int = 1,
    sample_pool: int = 0,
    drops: int = 0,
    input: Interface | int | None = 1,
    output: Interface | int | None = 2,
    expanded: bool = False,
) -> Sample:
    """A flow sample (0:1, or 0:3 when ``expanded``); ``input``/``output``: ifIndex or :class:`Interface`."""
    fmt = 3 if expanded else 1
    return Sample(
        0,
        fmt,
        structure_name("sample", 0, fmt),
        sequence_number=sequence_number,
        source_id_type=source_id_type,
        source_id_index=source_id_index,
        sampling_rate=sampling_rate,
        sample_pool=sample_pool or sampling_rate,
        drops=drops,
        input=_interface(input),
        output=_interface(output),
        records=list(records),
    )


def counter_sample(
    records: list[Record],
    *,
    sequence_number: int = 1,
    source_id_type: int = 0,
    source_id_index: int = 1,
    expanded: bool = False,
) -> Sample:
    """A counter sample (0:2, or 0:4 when ``expanded``)."""
    fmt = 4 if expanded else 2
    return Sample(
        0,
        fmt,
        structure_name("sample", 0, fmt),
        sequence_number=sequence_number,
        source_id_type=source_id_type,
        source_id_index=source_id_index,
        records=list(records),
    )


def discard_sample(
    records: list[Record],
    *,
    reason: int = 256,
    sequence_number: int = 1,
    source_id_type: int = 0,
    source_id_index: int = 1,
    drops: int = 0,
    input: int = 1,
    output: int = 0,
) -> Sample:
    """A discarded_packet sample (0:5) with a drop ``reason`` code."""
    from peerlab_tui.core.sflow.structures import DROP_REASONS

    return Sample(
        0,
        5,
        "discarded_packet",
        sequence_number=sequence_number,
        source_id_type=source_id_type,
        source_id_index=source_id_index,
        drops=drops,
        input=Interface(0, input),
        output=Interface(0, output),
        reason=reason,
        reason_name=DROP_REASONS.get(reason),
        records=list(records),
    )


def datagram(
    samples: list[Sample],
    *,
    agent_address: str = "192.0.2.1",
    sub_agent_id: int = 0,
    sequence_number: int = 1,
    uptime_ms: int = 0,
) -> Datagram:
    """A datagram holding ``samples`` (encode it with :func:`encode_datagram`)."""
    return Datagram(
        version=5,
        agent_address=agent_address,
        sub_agent_id=sub_agent_id,
        sequence_number=sequence_number,
        uptime_ms=uptime_ms,
        samples=list(samples),
        num_samples=len(samples),
    )
