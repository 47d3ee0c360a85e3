"""The per-record sFlow v5 decoder, driven by the field tables of :mod:`.structures`.

Guarantees: :func:`decode_datagram` never raises and never allocates more than the datagram's size (every
length and count is checked against the bytes left before anything is built). Problems become
:class:`DecodeIssue` entries with byte offsets: a bad record is kept with its raw bytes and the next record
still decodes when its length allows skipping it; a sample overrunning the datagram is decoded as far as it
goes; bytes after the declared samples are kept as ``trailing``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from peerlab_tui.core.sflow.fields import Address, DecodeError, Nested, padding_notes
from peerlab_tui.core.sflow.headers import decode_header
from peerlab_tui.core.sflow.model import SAMPLE_HEADER_ATTRS, Datagram, DecodeIssue, Record, Sample
from peerlab_tui.core.sflow.structures import DROP_REASONS, STRUCTURES, structure_name

log = logging.getLogger(__name__)

_II = struct.Struct(">II")
_HEADER = struct.Struct(">IIII")  # sub_agent_id, sequence_number, uptime, num_samples
_MAX_NESTING = 6  # pdus in pdus, Foundry wrapper in wrapper: deeper input is rejected, not recursed into

_decode_headers: ContextVar[bool] = ContextVar("sflow_decode_headers", default=True)
_depth: ContextVar[int] = ContextVar("sflow_depth", default=0)
_AGENT = Address("agent_address")
_SAMPLE_HEADER_SET = frozenset(SAMPLE_HEADER_ATTRS)
_RECORD_LISTS = frozenset(("flow_records", "counters", "discard_records"))


class _Records(list[Record]):
    """A record list plus the problems met while walking it (the decoder moves them to the datagram)."""

    problems: list[DecodeIssue]


def decode_datagram(data: bytes, *, decode_headers: bool = True) -> Datagram:
    """Decode one UDP payload. Never raises: a packet that is not sFlow v5 gives ``ok=False``."""
    token = _decode_headers.set(decode_headers)
    notes: list[int] = []
    notes_token = padding_notes.set(notes)
    try:
        dgram = _decode_datagram(data if isinstance(data, bytes) else bytes(data))
    except Exception as exc:
        log.exception("sFlow decoder bug on a %d-byte datagram", len(data))
        return Datagram(ok=False, issues=[DecodeIssue(0, f"internal decoder error: {exc!r}")])
    finally:
        _decode_headers.reset(token)
        padding_notes.reset(notes_token)
    for offset in notes:  # XDR requires zero padding; re-encoding writes zeros there
        dgram.issues.append(DecodeIssue(offset, "non-zero XDR padding"))
    return dgram


def _decode_datagram(data: bytes) -> Datagram:
    end = len(data)
    if end < 4:
        return Datagram(version=0, ok=False, issues=[DecodeIssue(0, f"{end} bytes: too short for sFlow")])
    (version,) = struct.unpack_from(">I", data, 0)
    if version != 5:
        what = "NetFlow v5" if version >> 16 == 5 else f"version {version}"
        return Datagram(version=version, ok=False, issues=[DecodeIssue(0, f"not sFlow v5 ({what})")])
    try:
        agent, off = _AGENT.decode(data, 4, end)
    except DecodeError as exc:
        return Datagram(ok=False, issues=[DecodeIssue(exc.offset, exc.message)])
    if off + 16 > end:
        return Datagram(ok=False, issues=[DecodeIssue(off, "datagram header truncated")])
    sub_agent, seq, uptime, num_samples = _HEADER.unpack_from(data, off)
    off += 16
    dgram = Datagram(
        version=5,
        agent_address=agent or "",
        sub_agent_id=sub_agent,
        sequence_number=seq,
        uptime_ms=uptime,
        num_samples=num_samples,
    )
    issues = dgram.issues
    samples = dgram.samples
    for i in range(num_samples):
        if off >= end:
            issues.append(DecodeIssue(off, f"datagram declares {num_samples} samples, only {i} present"))
            break
        if off + 8 > end:
            issues.append(DecodeIssue(off, f"sample {i}: header truncated ({end - off} bytes left)"))
            dgram.trailing = data[off:end]
            off = end
            break
        tag, length = _II.unpack_from(data, off)
        if off + 8 + length > end:
            # Like the reference decoders, a sample running past the datagram ends the datagram: its bytes
            # are kept as trailing, not decoded as a sample.
            issues.append(
                DecodeIssue(
                    off,
                    f"sample {tag >> 12}:{tag & 0xFFF} length {length} overruns the datagram by "
                    f"{off + 8 + length - end} bytes",
                )
            )
            dgram.trailing = data[off:end]
            off = end
            break
        sample, off = _decode_sample(data, off, end, issues)
        samples.append(sample)
    if off < end:
        dgram.trailing = data[off:end]
        issues.append(DecodeIssue(off, f"{end - off} trailing bytes after {len(samples)} samples"))
    return dgram


def _decode_sample(data: bytes, off: int, end: int, issues: list[DecodeIssue]) -> tuple[Sample, int]:
    """Decode the sample whose header starts at ``off``; return it and the offset after it."""
    tag, length = _II.unpack_from(data, off)
    ent, fmt = tag >> 12, tag & 0xFFF
    body = off + 8
    stop = body + length
    sample = Sample(ent, fmt, structure_name("sample", ent, fmt), offset=off)
    if stop > end:
        msg = f"sample {ent}:{fmt} length {length} overruns the datagram by {stop - end} bytes"
        issues.append(DecodeIssue(off, msg))
        sample.issue = msg
        stop = end
    structure = STRUCTURES.get(("sample", ent, fmt))
    if structure is None:
        sample.raw = data[body:stop]
        return sample, stop
    try:
        values, used = structure.decode(data, body, stop)
    except DecodeError as exc:
        issues.append(DecodeIssue(exc.offset, f"sample {ent}:{fmt}: {exc.message}"))
        sample.issue = sample.issue or exc.message
        sample.raw = data[body:stop]
        return sample, stop
    _fill_sample(sample, values)
    if used < stop:
        sample.tail = data[used:stop]
        if ent == 1991 and fmt == 1:
            # Brocade: wrapper length = 16 + inner length; some firmware counts its own 8 bytes again.
            issues.append(
                DecodeIssue(used, f"Foundry wrapper is {stop - used} bytes longer than its inner sample")
            )
    _collect(sample, issues)
    return sample, stop


def _fill_sample(sample: Sample, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if name in _SAMPLE_HEADER_SET:
            setattr(sample, name, value)
        elif name == "source_id":
            sample.source_id_type, sample.source_id_index = value
        elif name in _RECORD_LISTS:
            sample.records = value
        elif name == "reason":
            sample.reason = value
            sample.reason_name = DROP_REASONS.get(value)
        elif name == "sample":
            sample.inner = value
        else:
            sample.fields[name] = value


def _collect(sample: Sample, issues: list[DecodeIssue]) -> None:
    """Move the problems found in record lists (also nested ones) to the datagram's issues."""
    records = sample.records
    if isinstance(records, _Records):
        issues.extend(records.problems)
        sample.records = list(records)
    if sample.inner is not None:
        _collect(sample.inner, issues)
        if sample.inner.issue:
            issues.append(DecodeIssue(sample.inner.offset, f"inner sample: {sample.inner.issue}"))
    _collect_aggregated(sample.records, issues)


def _collect_aggregated(records: list[Record], issues: list[DecodeIssue]) -> None:
    """Do the same for 802.11 aggregation records (0:1016), whose pdus nest record lists at any depth."""
    for rec in records:
        if rec.format != 1016 or rec.enterprise != 0 or rec.kind != "flow":
            continue
        for pdu in rec.fields.get("pdus", ()):
            inner = pdu.get("flow_records")
            if isinstance(inner, _Records):
                issues.extend(inner.problems)
                inner = pdu["flow_records"] = list(inner)
            if isinstance(inner, list):
                _collect_aggregated(inner, issues)


def _nested_guard(off: int) -> int:
    depth = _depth.get()
    if depth >= _MAX_NESTING:
        raise DecodeError("structures nested too deep", off)
    return depth


def _decode_record_list(kind: str, data: bytes, off: int, end: int) -> tuple[_Records, int]:
    """``flow_record<>`` / ``counter_record<>``: a count, then (data_format, length, body) each."""
    depth = _nested_guard(off)
    if off + 4 > end:
        raise DecodeError(f"{kind} record count truncated", off)
    (count,) = struct.unpack_from(">I", data, off)
    records = _Records()
    records.problems = problems = []
    start = off
    off += 4
    if count * 8 > end - off:
        problems.append(
            DecodeIssue(start, f"declares {count} {kind} records, room for at most {(end - off) // 8}")
        )
    token = _depth.set(depth + 1)
    try:
        for i in range(count):
            if off >= end:
                problems.append(DecodeIssue(off, f"only {i} of {count} {kind} records present"))
                break
            if off + 8 > end:
                problems.append(DecodeIssue(off, f"{kind} record {i}: header truncated"))
                off = end
                break
            rec, off = _decode_record(kind, data, off, end, problems)
            records.append(rec)
    finally:
        _depth.reset(token)
    return records, off


def _decode_record(
    kind: str, data: bytes, off: int, end: int, problems: list[DecodeIssue]
) -> tuple[Record, int]:
    tag, length = _II.unpack_from(data, off)
    ent, fmt = tag >> 12, tag & 0xFFF
    structure = STRUCTURES.get((kind, ent, fmt))
    rec = Record(kind, ent, fmt, structure.name if structure else f"unknown_{kind}_{ent}_{fmt}", offset=off)
    body = off + 8
    stop = body + length
    if stop > end:
        rec.issue = f"length {length} overruns its sample by {stop - end} bytes"
        rec.raw = data[body:end]
        problems.append(DecodeIssue(off, f"{kind} record {ent}:{fmt}: {rec.issue}"))
        return rec, end  # cannot skip it: the rest of the sample is lost
    if structure is None:
        rec.raw = data[body:stop]
        return rec, stop
    try:
        fields, used = structure.decode(data, body, stop)
    except DecodeError as exc:
        rec.issue = exc.message
        rec.raw = data[body:stop]
        problems.append(DecodeIssue(exc.offset, f"{kind} record {ent}:{fmt} {structure.name}: {exc.message}"))
        return rec, stop
    if used < stop:
        rec.tail = data[used:stop]
    if ent == 0 and fmt == 1 and kind == "flow" and _decode_headers.get():
        fields["decoded"] = decode_header(fields["protocol"], fields["header"])
    rec.fields = fields
    return rec, stop


def _decode_inner_sample(data: bytes, off: int, end: int) -> tuple[Sample, int]:
    """The complete sample record wrapped by Foundry 1991:1."""
    depth = _nested_guard(off)
    if off + 8 > end:
        raise DecodeError("encapsulated sample header truncated", off)
    token = _depth.set(depth + 1)
    try:
        inner_issues: list[DecodeIssue] = []
        sample, nxt = _decode_sample(data, off, end, inner_issues)
        if inner_issues and not sample.issue:
            sample.issue = "; ".join(i.message for i in inner_issues)
        return sample, nxt
    finally:
        _depth.reset(token)


Nested.decoders["flow_records"] = lambda data, off, end: _decode_record_list("flow", data, off, end)
Nested.decoders["counter_records"] = lambda data, off, end: _decode_record_list("counter", data, off, end)
Nested.decoders["sample"] = _decode_inner_sample


def _bump(table: dict[str, int], key: str) -> None:
    table[key] = table.get(key, 0) + 1


def count_by_type(datagrams: Iterable[Datagram]) -> dict[str, Any]:
    """Counts of datagrams, errors, samples and records by ``"ent:fmt"`` (the ``sflow --count`` shape).

    ``datagrams`` counts decodable sFlow v5 datagrams, ``errors`` the packets that are not; records of a
    discarded_packet sample go to ``discard_records``. Records are counted by their tag even when their body
    is malformed.
    """
    out: dict[str, Any] = {
        "datagrams": 0,
        "errors": 0,
        "samples": {},
        "flow_records": {},
        "counter_records": {},
        "discard_records": {},
    }
    for dgram in datagrams:
        if not dgram.ok:
            out["errors"] += 1
            continue
        out["datagrams"] += 1
        for sample in dgram.samples:
            _count_sample(sample, out)
    return out


def _count_sample(sample: Sample, out: dict[str, Any]) -> None:
    _bump(out["samples"], sample.tag)
    if sample.inner is not None:
        _count_records(sample.inner, out)
    _count_records(sample, out)


def _count_records(sample: Sample, out: dict[str, Any]) -> None:
    if sample.enterprise == 0 and sample.format == 5:
        table = out["discard_records"]
    elif sample.enterprise == 0 and sample.format in (2, 4):
        table = out["counter_records"]
    else:
        table = out["flow_records"]
    for rec in sample.records:
        _bump(table, rec.tag)
