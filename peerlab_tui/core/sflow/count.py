"""Count sFlow datagrams, samples and records by type without decoding their fields (``decode --count``).

The result has the shape of :func:`peerlab_tui.core.sflow.count_by_type` and is identical to it: the
vectorised walk reads only tags and lengths of the standard containers (flow 0:1/0:3, counter 0:2/0:4,
discard 0:5 samples); a datagram with anything else — a malformed structure, a sample type that wraps records
differently (sFlow-RT, Foundry) — is decoded by the per-record decoder and counted by ``count_by_type``.

Speed: the records of every sample kind are walked at once, tags are tallied with one ``bincount`` (no
sort), and words are read straight from a big-endian view of the capture (one aligned copy of a batch's span
only for datagrams whose words are misaligned in memory), so no batch pays a conversion pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from peerlab_tui.core.sflow._fast_walk import I64, U8, Buffer, datagram_headers, walk
from peerlab_tui.core.sflow.sources import RawBatch, read_file

# Sample tag -> fixed part before the record list (incl. its count word); and the table its records count in.
_HEADER = np.zeros(8, np.int64)
_HEADER[[1, 3, 2, 4, 5]] = [32, 44, 12, 16, 32]  # flow, expanded flow, counters, expanded counters, discard
_TABLE = np.zeros(8, np.int64)
_TABLE[[1, 3, 2, 4, 5]] = [0, 0, 1, 1, 2]
_TABLES = ("flow_records", "counter_records", "discard_records")
_SMALL = 4096  # tags of enterprise 0 (the usual ones) are counted with one bincount, others with unique
_BATCH = 4096  # datagrams per batch: large enough to amortise numpy calls, small enough to stay in cache


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


def _add(table: dict[str, int], tag: int, n: int) -> None:
    key = f"{tag >> 12}:{tag & 0xFFF}"
    table[key] = table.get(key, 0) + n


def _count_tags(tags: I64, group: I64 | None, tables: list[dict[str, int]]) -> None:
    """Add how often each tag occurs to ``tables[group]`` (one table when ``group`` is None)."""
    if not tags.size:
        return
    small = tags < _SMALL
    keys = tags if group is None else group * _SMALL + tags
    if not small.all():
        big = ~small
        g = np.zeros(int(big.sum()), np.int64) if group is None else group[big]
        pairs, counts = np.unique(np.stack([g, tags[big]]), axis=1, return_counts=True)
        for (gi, t), n in zip(pairs.T.tolist(), counts.tolist(), strict=True):
            _add(tables[gi], t, n)
        keys = keys[small]
    hist = np.bincount(keys, minlength=len(tables) * _SMALL)
    for k in np.flatnonzero(hist).tolist():
        _add(tables[k // _SMALL], k % _SMALL, int(hist[k]))


def count_batch(raw: U8, offsets: I64, lengths: I64) -> dict[str, Any]:
    """Counts for the datagrams ``raw[offsets[i] : offsets[i] + lengths[i]]``."""
    out = empty_counts()
    if offsets.size == 0:
        return out
    starts = np.asarray(offsets, np.int64)
    ends = starts + np.asarray(lengths, np.int64)
    # XDR words are 4-aligned relative to each datagram: datagrams whose starts share a remainder modulo 4
    # are read through one big-endian word view of the buffer shifted by that remainder (no copy at all).
    rem = starts & 3
    classes = np.flatnonzero(np.bincount(rem, minlength=4)).tolist()
    fallback: list[I64] = []
    lo = int(starts.min()) & ~3
    hi = int(ends.max())
    for r in classes:
        sel = None if len(classes) == 1 else np.flatnonzero(rem == r)
        s, e = (starts, ends) if sel is None else (starts[sel], ends[sel])
        span = raw[lo + r : hi]
        if span.ctypes.data & 3:
            # Misaligned words gather an order of magnitude slower: one aligned copy of the span is cheaper.
            span = span.copy()
        bad = _count_aligned(Buffer.big_endian_words(span), s - lo - r, e - lo - r, out)
        if bad.size:
            fallback.append(s[bad])
            fallback.append(e[bad])
    if fallback:
        from peerlab_tui.core.sflow import count_by_type, decode_datagram

        bs = np.concatenate(fallback[0::2]).tolist()
        be = np.concatenate(fallback[1::2]).tolist()
        datagrams = (
            decode_datagram(raw[a:b].tobytes(), decode_headers=False) for a, b in zip(bs, be, strict=True)
        )
        merge_counts(out, count_by_type(datagrams))
    return out


def _count_aligned(buf: Buffer, starts: I64, ends: I64, out: dict[str, Any]) -> I64:
    """Count 4-aligned datagrams into ``out``; returns the indices of those left to the per-record decoder."""
    dg = datagram_headers(buf, starts, ends)
    short_dg = ends - starts < 4
    not_v5 = (dg.version != 5) | short_dg
    bad = ~dg.ok & ~not_v5
    smp = walk(buf, dg.first_sample, dg.num_samples, dg.end, bad)
    stag = smp.tag
    sowner = smp.owner
    # Samples we do not walk here (vendor and sFlow-RT types) go to the reference decoder.
    hdr = _HEADER.take(np.minimum(stag, 7))
    soff = smp.off
    slen = smp.length
    skip = (hdr == 0) | (slen < hdr)
    if skip.any():
        bad[sowner[skip]] = True
    nrec = np.where(skip, 0, buf.rd(soff + hdr - 4))
    sbad = np.zeros(stag.size, np.bool_)
    rec = walk(buf, soff + hdr, nrec, soff + slen, sbad)
    if sbad.any():
        bad[sowner[sbad]] = True
    good = ~bad & ~not_v5
    out["errors"] += int(np.count_nonzero(not_v5))
    out["datagrams"] += int(np.count_nonzero(good))
    sgood = good[sowner]
    all_good = bool(sgood.all())
    _count_tags(stag if all_good else stag[sgood], None, [out["samples"]])
    rtag = rec.tag
    rowner = rec.owner
    group = _TABLE.take(np.minimum(stag, 7)).take(rowner)
    if not all_good:
        rg = sgood[rowner]
        rtag, group = rtag[rg], group[rg]
    _count_tags(rtag, group, [out[t] for t in _TABLES])
    return np.flatnonzero(bad & ~not_v5)


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
