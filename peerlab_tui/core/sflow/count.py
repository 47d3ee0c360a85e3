"""Count sFlow datagrams, samples and records by type without decoding their fields (``decode --count``).

The result has the shape of :func:`peerlab_tui.core.sflow.count_by_type` and is identical to it: the
vectorised walk reads only tags and lengths of the standard containers (flow 0:1/0:3, counter 0:2/0:4,
discard 0:5 samples); a datagram with anything else — a malformed structure, a sample type that wraps records
differently (sFlow-RT, Foundry) — is decoded by the per-record decoder and counted by ``count_by_type``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from peerlab_tui.core.sflow._fast_walk import I64, U8, aligned_view, datagram_headers, walk
from peerlab_tui.core.sflow.sources import RawBatch, read_file

# sample tag -> (fixed part before the record list incl. its count word, table the records count in)
_CONTAINERS: dict[int, tuple[int, str]] = {
    1: (32, "flow_records"),
    3: (44, "flow_records"),
    2: (12, "counter_records"),
    4: (16, "counter_records"),
    5: (32, "discard_records"),
}
_BATCH = 2048


def empty_counts() -> dict[str, Any]:
    """The count dict with nothing counted."""
    return {
        "datagrams": 0,
        "errors": 0,
        "samples": {},
        "flow_records": {},
        "counter_records": {},
        "discard_records": {},
    }


def merge_counts(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Add ``other`` to ``into`` (in place) and return it."""
    into["datagrams"] += other["datagrams"]
    into["errors"] += other["errors"]
    for key in ("samples", "flow_records", "counter_records", "discard_records"):
        table = into[key]
        for tag, n in other[key].items():
            table[tag] = table.get(tag, 0) + n
    return into


def _tag_counts(tags: I64, table: dict[str, int]) -> None:
    if not tags.size:
        return
    values, counts = np.unique(tags, return_counts=True)
    for t, n in zip(values.tolist(), counts.tolist(), strict=True):
        key = f"{t >> 12}:{t & 0xFFF}"
        table[key] = table.get(key, 0) + n


def count_batch(raw: U8, offsets: I64, lengths: I64) -> dict[str, Any]:
    """Counts for the datagrams ``raw[offsets[i] : offsets[i] + lengths[i]]``."""
    out = empty_counts()
    n = offsets.size
    if n == 0:
        return out
    starts = np.asarray(offsets, np.int64)
    ends = starts + np.asarray(lengths, np.int64)
    buf, vs, ve = aligned_view(raw, starts, ends)
    dg = datagram_headers(buf, vs, ve)
    bad = ~dg.ok & (dg.version == 5) & (ve - vs >= 4)
    not_v5 = (dg.version != 5) | (ve - vs < 4)
    smp = walk(buf, dg.first_sample, dg.num_samples, dg.end, bad)
    # Samples we do not walk here (vendor and sFlow-RT types) go to the reference decoder.
    known = np.isin(smp.tag, list(_CONTAINERS))
    if not known.all():
        bad[smp.owner[~known]] = True
    rec_tags: dict[str, list[I64]] = {"flow_records": [], "counter_records": [], "discard_records": []}
    rec_owner: dict[str, list[I64]] = {"flow_records": [], "counter_records": [], "discard_records": []}
    for tag, (hdr, table) in _CONTAINERS.items():
        sel = np.flatnonzero(smp.tag == tag)
        if not sel.size:
            continue
        off = smp.off[sel]
        ln = smp.length[sel]
        dgi = smp.owner[sel]
        short = ln < hdr
        if short.any():
            bad[dgi[short]] = True
        nrec = np.where(short, 0, buf.rd(off + hdr - 4)).astype(np.int64)
        sbad = np.zeros(sel.size, np.bool_)
        rec = walk(buf, off + hdr, nrec, off + ln, sbad)
        if sbad.any():
            bad[dgi[sbad]] = True
        rec_tags[table].append(rec.tag)
        rec_owner[table].append(dgi[rec.owner])
    good = ~bad & ~not_v5
    out["errors"] = int(np.count_nonzero(not_v5))
    out["datagrams"] = int(np.count_nonzero(good))
    _tag_counts(smp.tag[good[smp.owner]], out["samples"])
    for table, parts in rec_tags.items():
        if parts:
            owners = np.concatenate(rec_owner[table])
            _tag_counts(np.concatenate(parts)[good[owners]], out[table])
    fallback = np.flatnonzero(bad & ~not_v5)
    if fallback.size:
        from peerlab_tui.core.sflow import count_by_type, decode_datagram

        datagrams = (
            decode_datagram(raw[s:e].tobytes(), decode_headers=False)
            for s, e in zip(starts[fallback].tolist(), ends[fallback].tolist(), strict=True)
        )
        merge_counts(out, count_by_type(datagrams))
    return out


def count_batches(batches: Iterable[RawBatch]) -> dict[str, Any]:
    """Counts over every batch."""
    out = empty_counts()
    for b in batches:
        merge_counts(out, count_batch(b.buffer, b.offsets, b.lengths))
    return out


def count_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts of a pcap / pcapng / raw datagram file (raises ``CaptureError`` for anything else)."""
    capture = read_file(path, timestamps=False)
    return count_batches(capture.batches(_BATCH))


__all__ = ["count_batch", "count_batches", "count_file", "empty_counts", "merge_counts"]
