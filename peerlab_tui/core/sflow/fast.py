"""Vectorised (numpy) decoding of sFlow v5 datagrams into columns.

:func:`decode_batch` turns a batch of datagrams into a :class:`FlowBatch` (one row per flow sample, 0:1 and
expanded 0:3) and a :class:`CounterBatch` (one row per counter sample, 0:2 and expanded 0:4) without a Python
loop over datagrams: the batch is one byte buffer and the structure is walked with offset arithmetic over all
datagrams at once (see ``_fast_walk``).

Anything the vectorised path does not cover — a header protocol other than Ethernet (1), IPv4 (11) or IPv6
(12), IPv6 extension headers in a sampled header, a record shorter than its fixed fields, two records of the
same kind in one sample, counts or lengths that overrun (truncation), agent address types other than
IPv4/IPv6, a Foundry 1991:1 wrapper (its inner flow/counter sample becomes the row) —
sends *that datagram* to the per-record decoder (:func:`peerlab_tui.core.sflow.decode_datagram`);
its output is turned into the same columns by :func:`rows_from_datagram`, so both paths give identical rows.
Datagrams that are not sFlow v5 produce no rows and are counted in ``errors``.

Missing values
    Integer columns are ``int64`` and hold ``-1`` where the value is absent (no such record in the sample, or
    the sampled header is too short to contain it). Address columns are ``(n, 16)`` ``uint8`` (IPv4 as
    IPv4-mapped IPv6, ``::ffff:a.b.c.d``), all zero when absent, with a companion ``*_version`` column (-1,
    4 or 6); MAC columns are ``(n, 6)`` with ``has_eth``. Columns no row of a batch has are shared
    read-only constants (copy before writing). Counter columns are ``uint64`` (zero when absent) with the
    masks ``has_generic`` / ``has_ethernet``.

Speed
    About 20 numpy operations per structure level and a handful per field, whatever the batch size, so
    batches of ~1000 datagrams amortise them (4-5 million flow samples per second on one core). What keeps
    the count of operations and of passes over the rows low: the walk compacts nothing while every container
    is still walking; records are looked up block by block (one block per record ordinal, usually one
    record kind each); the common sampled-header layouts (Ethernet, at most one VLAN tag, IPv4 without
    options or IPv6 without extension headers) are read from two row gathers at fixed positions; a batch
    where every row has a value writes the column without a scatter; 16-byte rows move as single items;
    absent columns are views of shared constants. Entry points that decode continuously should call
    :func:`tune_allocator` once: it stops glibc from returning each batch's memory to the kernel, whose page
    faults otherwise cost as much as the decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from peerlab_tui.core.sflow._fast_walk import (
    _EMPTY,
    B1,
    I64,
    PAD,
    U8,
    Buffer,
    Walk,
    aligned_view,
    datagram_headers,
    ip4_mapped,
    ip6_bytes,
    tune_allocator,
    walk,
)

log = logging.getLogger(__name__)

U64 = npt.NDArray[np.uint64]

_V4_PREFIX = np.array([0] * 10 + [255, 255], np.uint8)
_PAD_BYTES = bytes(PAD)
# Lookup tables: one gather answers "is this ethertype a VLAN tag" etc. instead of a chain of comparisons.
_TPID = np.zeros(65536, np.bool_)
_TPID[[0x8100, 0x88A8, 0x9100, 0x9200]] = True  # 802.1Q, 802.1ad, old QinQ
_ODD_ETHERTYPE = _TPID.copy()  # left to the per-record decoder: 802.3 lengths (LLC), MPLS, cut VLAN tags
_ODD_ETHERTYPE[:0x0600] = True
_ODD_ETHERTYPE[[0x8847, 0x8848]] = True
_IP6_EXT = np.zeros(256, np.bool_)
_IP6_EXT[[0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254]] = True
FOUNDRY = (1991, 1)  # (enterprise, format) of the Foundry/Brocade wrapper sample
_FOUNDRY_TAG = FOUNDRY[0] << 12 | FOUNDRY[1]
_HAS_PORTS = np.zeros(256, np.bool_)
_HAS_PORTS[[6, 17, 132]] = True  # TCP, UDP, SCTP


# --------------------------------------------------------------------------------------------- columns

FLOW_INT_COLUMNS: tuple[str, ...] = (
    "datagram",  # index of the datagram in the batch
    "sample_index",  # ordinal of the sample within its datagram
    "datagram_sequence",
    "sub_agent",
    "sample_format",  # 1 (flow_sample) or 3 (flow_sample_expanded)
    "sequence",
    "source_id_type",
    "source_id_index",
    "sampling_rate",
    "sample_pool",
    "drops",
    "input_format",  # interface format (0 ifIndex, 1 discard reason, 2 multiple) and value
    "input_value",
    "output_format",
    "output_value",
    # sampled_header (0:1)
    "header_protocol",
    "frame_length",
    "stripped",
    "header_length",
    # decoded from the sampled header bytes
    "vlan",  # outer 802.1Q / 802.1ad VLAN id
    "ethertype",  # after the VLAN tags
    "ip_version",  # 0 none, 4, 6
    "ip_proto",
    "tos",  # IPv4 TOS byte / IPv6 traffic class
    "ttl",  # IPv4 TTL / IPv6 hop limit
    "src_port",
    "dst_port",
    "tcp_flags",
    "icmp_type",
    "icmp_code",
    # sampled_ipv4 (0:3) / sampled_ipv6 (0:4)
    "rec_ip_version",
    "rec_length",
    "rec_protocol",
    "rec_src_port",
    "rec_dst_port",
    "rec_tcp_flags",
    "rec_tos",  # tos (0:3) or priority (0:4)
    # extended_switch (0:1001)
    "src_vlan",
    "src_priority",
    "dst_vlan",
    "dst_priority",
    # extended_router (0:1002)
    "nexthop_version",
    "src_mask_len",
    "dst_mask_len",
    # extended_gateway (0:1003)
    "gw_nexthop_version",
    "gw_as",
    "gw_src_as",
    "gw_src_peer_as",
    "gw_dst_peer_as",  # first ASN of the destination AS path
    "gw_dst_as",  # last ASN of the destination AS path
    "gw_communities",  # number of communities
    "gw_localpref",
)
FLOW_BYTES_COLUMNS: dict[str, int] = {
    "agent": 16,
    "src_mac": 6,
    "dst_mac": 6,
    "src_ip": 16,
    "dst_ip": 16,
    "rec_src_ip": 16,
    "rec_dst_ip": 16,
    "nexthop": 16,
    "gw_nexthop": 16,
}
FLOW_BOOL_COLUMNS: tuple[str, ...] = ("has_eth",)

GENERIC_FIELDS: tuple[str, ...] = (
    "if_index",
    "if_type",
    "if_speed",
    "if_direction",
    "if_status",
    "if_in_octets",
    "if_in_ucast_pkts",
    "if_in_multicast_pkts",
    "if_in_broadcast_pkts",
    "if_in_discards",
    "if_in_errors",
    "if_in_unknown_protos",
    "if_out_octets",
    "if_out_ucast_pkts",
    "if_out_multicast_pkts",
    "if_out_broadcast_pkts",
    "if_out_discards",
    "if_out_errors",
    "if_promiscuous_mode",
)
ETHERNET_FIELDS: tuple[str, ...] = (
    "dot3_stats_alignment_errors",
    "dot3_stats_fcs_errors",
    "dot3_stats_single_collision_frames",
    "dot3_stats_multiple_collision_frames",
    "dot3_stats_sqe_test_errors",
    "dot3_stats_deferred_transmissions",
    "dot3_stats_late_collisions",
    "dot3_stats_excessive_collisions",
    "dot3_stats_internal_mac_transmit_errors",
    "dot3_stats_carrier_sense_errors",
    "dot3_stats_frame_too_longs",
    "dot3_stats_internal_mac_receive_errors",
    "dot3_stats_symbol_errors",
)
COUNTER_INT_COLUMNS: tuple[str, ...] = (
    "datagram",
    "sample_index",
    "datagram_sequence",
    "sub_agent",
    "sample_format",  # 2 (counters_sample) or 4 (counters_sample_expanded)
    "sequence",
    "source_id_type",
    "source_id_index",
)
COUNTER_U64_COLUMNS: tuple[str, ...] = GENERIC_FIELDS + ETHERNET_FIELDS
COUNTER_BOOL_COLUMNS: tuple[str, ...] = ("has_generic", "has_ethernet")


def _void_rows(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A C-contiguous (n, w) array as n items of w bytes (a view)."""
    return a.view(np.dtype((np.void, a.shape[1] * a.itemsize))).reshape(a.shape[0])


def take_rows(a: np.ndarray[Any, Any], index: Any) -> np.ndarray[Any, Any]:
    """``a[index]`` for 1-D and 2-D arrays; 2-D rows are moved as single items.

    numpy copies the rows of a 2-D fancy index element by element (an order of magnitude slower for
    16-byte addresses than gathering them as 16-byte items).
    """
    if a.ndim != 2 or not a.size:
        return a[index]
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return _void_rows(a)[index].view(a.dtype).reshape(-1, a.shape[1])


def put_rows(col: np.ndarray[Any, Any], rows: Any, value: Any) -> None:
    """``col[rows] = value`` for a C-contiguous 2-D ``col``, moving rows as single items."""
    if not col.flags.c_contiguous or not col.size:
        col[rows] = value
        return
    v = np.ascontiguousarray(np.broadcast_to(np.asarray(value, col.dtype), (np.size(rows), col.shape[1])))
    _void_rows(col)[rows] = _void_rows(v)


class _Columns:
    """Shared behaviour of the two batch classes: a dict of equally long numpy columns."""

    _int: tuple[str, ...] = ()
    _bytes: dict[str, int] = {}
    _u64: tuple[str, ...] = ()
    _bool: tuple[str, ...] = ()

    def __init__(self, columns: dict[str, np.ndarray[Any, Any]]) -> None:
        self.columns = columns

    @classmethod
    def empty(cls, n: int = 0) -> Any:
        """A batch of ``n`` rows with every value absent (one allocation per column kind)."""
        cols: dict[str, np.ndarray[Any, Any]] = {}
        ints = np.full((len(cls._int), n), -1, np.int64)
        for i, name in enumerate(cls._int):
            cols[name] = ints[i]
        for name, width in cls._bytes.items():
            cols[name] = np.zeros((n, width), np.uint8)
        if cls._u64:
            u64 = np.zeros((len(cls._u64), n), np.uint64)
            for i, name in enumerate(cls._u64):
                cols[name] = u64[i]
        flags = np.zeros((len(cls._bool), n), np.bool_)
        for i, name in enumerate(cls._bool):
            cols[name] = flags[i]
        return cls(cols)

    @classmethod
    def names(cls) -> list[str]:
        """Every column name."""
        return [*cls._int, *cls._bytes, *cls._u64, *cls._bool]

    def __len__(self) -> int:
        return int(self.columns["datagram"].shape[0])

    @classmethod
    def lazy(cls, n: int) -> _Lazy:
        """A column dict for ``n`` rows that allocates a column only when it is first written (see build)."""
        return _Lazy(cls, n)

    def __getattr__(self, name: str) -> np.ndarray[Any, Any]:
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(name) from None

    def take(self, index: npt.NDArray[np.intp] | I64) -> Any:
        """Rows at ``index`` (a new batch)."""
        return type(self)({k: take_rows(v, index) for k, v in self.columns.items()})

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> Any:
        """Rows of every part, in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(0)
        if len(parts) == 1:
            return parts[0]
        return cls({k: np.concatenate([p.columns[k] for p in parts]) for k in parts[0].columns})

    def row(self, i: int) -> dict[str, Any]:
        """One row as plain Python values (bytes columns as ``bytes``)."""
        return {k: (bytes(v[i]) if v.ndim == 2 else v[i].item()) for k, v in self.columns.items()}


_CONSTANTS: dict[tuple[Any, ...], np.ndarray[Any, Any]] = {}


def _constant(shape: tuple[int, ...], dtype: Any, value: Any) -> np.ndarray[Any, Any]:
    """A read-only array of ``value``: a view of one process-wide array, grown to the largest size asked.

    Columns no row of a batch has cost nothing this way (no allocation, no fill), whatever the batch size.
    """
    key = (shape[1:], np.dtype(dtype), value)
    arr = _CONSTANTS.get(key)
    if arr is None or arr.shape[0] < shape[0]:
        rows = max(1024, 1 << (max(shape[0], 1) - 1).bit_length())
        arr = np.full((rows, *shape[1:]), value, dtype)
        arr.setflags(write=False)
        _CONSTANTS[key] = arr  # a single dict store: safe if two threads race (both arrays are valid)
    return arr[: shape[0]]


class _Lazy(dict[str, Any]):
    """Columns allocated on first access; :meth:`build` fills the untouched ones with read-only constants.

    Most samples carry two or three record kinds, so most columns of a batch stay absent: a shared
    constant costs nothing, where allocating and filling every column would dominate the decode time.
    """

    def __init__(self, cls: type[_Columns], n: int) -> None:
        super().__init__()
        self.cls = cls
        self.n = n

    def __missing__(self, name: str) -> np.ndarray[Any, Any]:
        cls = self.cls
        col: np.ndarray[Any, Any]
        if name in cls._int:
            col = np.full(self.n, -1, np.int64)
        elif name in cls._bytes:
            col = np.zeros((self.n, cls._bytes[name]), np.uint8)
        elif name in cls._u64:
            col = np.zeros(self.n, np.uint64)
        elif name in cls._bool:
            col = np.zeros(self.n, np.bool_)
        else:
            raise KeyError(name)
        self[name] = col
        return col

    def build(self) -> Any:
        """The batch: written columns as int64 / as made, absent ones as shared read-only constants."""
        cls = self.cls
        n = self.n
        cols: dict[str, np.ndarray[Any, Any]] = {}

        def const(shape: tuple[int, ...], dtype: Any, value: Any) -> np.ndarray[Any, Any]:
            return _constant(shape, dtype, value)

        for name in cls._int:
            v = self.get(name)
            cols[name] = const((n,), np.int64, -1) if v is None else v.astype(np.int64, copy=False)
        for name, width in cls._bytes.items():
            v = self.get(name)
            cols[name] = const((n, width), np.uint8, 0) if v is None else v
        for name in cls._u64:
            v = self.get(name)
            cols[name] = const((n,), np.uint64, 0) if v is None else v
        for name in cls._bool:
            v = self.get(name)
            cols[name] = const((n,), np.bool_, False) if v is None else v
        return cls(cols)


class FlowBatch(_Columns):
    """Columns of flow samples (see the module docstring for missing values)."""

    _int = FLOW_INT_COLUMNS
    _bytes = FLOW_BYTES_COLUMNS
    _bool = FLOW_BOOL_COLUMNS


class CounterBatch(_Columns):
    """Columns of counter samples: generic interface (0:1) and Ethernet (0:2) counters."""

    _int = COUNTER_INT_COLUMNS
    _u64 = COUNTER_U64_COLUMNS
    _bool = COUNTER_BOOL_COLUMNS


@dataclass
class BatchResult:
    """Everything :func:`decode_batch_ex` learnt about one batch."""

    flows: FlowBatch
    counters: CounterBatch
    datagrams: int = 0  # sFlow v5 datagrams decoded
    errors: int = 0  # packets that are not (well-formed) sFlow v5
    fallback: int = 0  # datagrams handed to the per-record decoder
    samples: int = 0  # samples of every kind
    fallback_indices: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- entry points


def decode_batch(
    datagrams: Sequence[bytes] | bytes | memoryview | U8,
    offsets: Sequence[int] | I64 | None = None,
    lengths: Sequence[int] | I64 | None = None,
) -> tuple[FlowBatch, CounterBatch]:
    """Decode a batch of datagrams into flow and counter columns.

    ``datagrams`` is either a sequence of datagrams (bytes) or one buffer with ``offsets`` (and ``lengths``,
    else each datagram ends where the next begins and the last at the end of the buffer).
    """
    res = decode_batch_ex(datagrams, offsets, lengths)
    return res.flows, res.counters


def decode_batch_ex(
    datagrams: Sequence[bytes] | bytes | memoryview | U8,
    offsets: Sequence[int] | I64 | None = None,
    lengths: Sequence[int] | I64 | None = None,
    *,
    fallback: bool = True,
) -> BatchResult:
    """Like :func:`decode_batch`, with datagram/error/fallback counts.

    ``fallback=False`` (tests) leaves uncovered datagrams out instead of decoding them per record.
    """
    raw, starts, ends = _as_buffer(datagrams, offsets, lengths)
    n = starts.size
    if n == 0:
        return BatchResult(FlowBatch.empty(), CounterBatch.empty())
    buf, vstarts, vends = aligned_view(raw, starts, ends)
    f, c, bad_all, notsflow, samples = _decode_group(buf, vstarts, vends)
    fb = np.flatnonzero(bad_all)
    res = BatchResult(f, c)
    res.errors = int(notsflow.sum())
    res.datagrams = n - res.errors - fb.size
    res.samples = samples
    res.fallback = int(fb.size)
    res.fallback_indices = fb.tolist()
    if fb.size and fallback:
        rf, rc, ok, nsamp = _fallback(raw, starts[fb], ends[fb], fb)
        res.datagrams += ok
        res.errors += fb.size - ok
        res.samples += nsamp
        res.flows = FlowBatch.concat([res.flows, rf])
        res.counters = CounterBatch.concat([res.counters, rc])
    if fb.size and fallback:
        res.flows = res.flows.take(np.lexsort((res.flows.sample_index, res.flows.datagram)))
        res.counters = res.counters.take(np.lexsort((res.counters.sample_index, res.counters.datagram)))
    return res


def _as_buffer(
    datagrams: Sequence[bytes] | bytes | memoryview | U8,
    offsets: Sequence[int] | I64 | None,
    lengths: Sequence[int] | I64 | None,
) -> tuple[U8, I64, I64]:
    if offsets is None:
        if isinstance(datagrams, bytes | memoryview | np.ndarray):
            raise TypeError("a concatenated buffer needs offsets")
        seq = list(datagrams)
        lens = np.fromiter(map(len, seq), np.int64, len(seq))
        if (lens & 3).any():
            # Pad to 4 so every datagram starts aligned; padding lies outside every datagram's end.
            seq = [d + b"\0" * (-len(d) & 3) for d in seq]
            padded = (lens + 3) & ~3
        else:
            padded = lens
        seq.append(_PAD_BYTES)  # the padding Buffer needs, so it can use the joined bytes without a copy
        raw = np.frombuffer(b"".join(seq), np.uint8)
        seq.pop()
        starts = np.zeros(lens.size, np.int64)
        if lens.size > 1:
            np.cumsum(padded[:-1], out=starts[1:])
        return raw, starts, starts + lens
    if isinstance(datagrams, np.ndarray):
        raw = datagrams
    elif isinstance(datagrams, bytes | bytearray | memoryview):
        raw = np.frombuffer(datagrams, np.uint8)
    else:
        raise TypeError("offsets need one buffer (bytes, memoryview or a uint8 array), not a sequence")
    starts = np.asarray(offsets, np.int64)
    if lengths is None:
        ends = np.append(starts[1:], raw.size).astype(np.int64)
    else:
        ends = starts + np.asarray(lengths, np.int64)
    if starts.size and (ends.max() > raw.size or starts.min() < 0 or (ends < starts).any()):
        raise ValueError("datagram offsets/lengths fall outside the buffer")
    return raw, starts, ends


# --------------------------------------------------------------------------------------------- the walk


def _decode_group(buf: Buffer, starts: I64, ends: I64) -> tuple[FlowBatch, CounterBatch, B1, B1, int]:
    dg = datagram_headers(buf, starts, ends)
    # Version 5 with an agent type we do not handle, or a truncated header: let the reference decide.
    bad = ~dg.ok & (dg.version == 5)
    not_v5 = dg.version != 5
    smp = walk(buf, dg.first_sample, dg.num_samples, dg.end, bad, by_owner=True)  # rows in datagram order

    # Foundry 1991:1 wraps a whole flow/counter sample: rare, so such datagrams take the per-record decoder,
    # whose rows are made of the inner sample (see _fast_reference).
    wrapped = smp.tag == _FOUNDRY_TAG
    if wrapped.any():
        bad[smp.owner[wrapped]] = True
    flow_sel = np.flatnonzero((smp.tag == 1) | (smp.tag == 3))
    ctr_sel = np.flatnonzero((smp.tag == 2) | (smp.tag == 4))
    fl = _flow_samples(buf, dg, smp, flow_sel, bad)
    ct = _counter_samples(buf, dg, smp, ctr_sel, bad)
    # Drop rows of datagrams that go to the fallback, then map to batch datagram indices.
    fl = fl.take(np.flatnonzero(~bad[fl.datagram])) if bad.any() else fl
    ct = ct.take(np.flatnonzero(~bad[ct.datagram])) if bad.any() else ct
    nsamp = int(np.count_nonzero(~bad[smp.owner]))
    return fl, ct, bad, not_v5, nsamp


def _agents(buf: Buffer, dg: Any, owner: I64) -> U8:
    at = dg.agent_type[owner]
    off = dg.agent_off[owner]
    v4 = at == 1
    if v4.all():
        return ip4_mapped(buf.rd(off))
    out = np.zeros((owner.size, 16), np.uint8)
    if v4.any():
        put_rows(out, np.flatnonzero(v4), ip4_mapped(buf.rd(off[v4])))
    put_rows(out, np.flatnonzero(~v4), ip6_bytes(buf, off[~v4]))
    return out


def _records(
    buf: Buffer,
    off: I64,
    ln: I64,
    dgi: I64,
    hdr: I64 | int,
    bad: B1,
    nrec: I64 | None = None,
    head: tuple[I64, I64] | None = None,
) -> Walk:
    """Walk the records of samples at ``off`` (length ``ln``, datagram ``dgi``) whose fixed part is ``hdr``.

    ``nrec`` is the record count word and ``head`` the first record's (tag, length) when the caller read
    them already.
    """
    short = ln < hdr
    if short.any():
        bad[dgi[short]] = True
        nrec = np.where(short, 0, buf.rd(off + hdr - 4) if nrec is None else nrec)
    elif nrec is None:
        nrec = buf.rd(off + hdr - 4)
    sbad = np.zeros(off.size, np.bool_)
    rec = walk(buf, off + hdr, nrec, off + ln, sbad, head=head)
    if sbad.any():
        bad[dgi[sbad]] = True
    return rec


# Words of counters_generic (0:1) behind its 19 fields: the low word of each, then (field, high word) of the
# three u64 counters (ifSpeed, ifInOctets, ifOutOctets).
_GENERIC_LOW = np.array([0, 1, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 20, 21], np.intp)
_GENERIC_HIGH = ((2, 2), (5, 6), (12, 14))


def _counter_samples(buf: Buffer, dg: Any, smp: Walk, sel: npt.NDArray[np.intp], bad: B1) -> CounterBatch:
    n = sel.size
    if n == 0:
        return CounterBatch.empty(0)
    c = CounterBatch.lazy(n)
    off = smp.off[sel]
    exp = smp.tag[sel] == 4
    dgi = smp.owner[sel]
    c["datagram"] = dgi
    c["sample_index"] = smp.ordinal[sel]
    c["datagram_sequence"] = dg.sequence[dgi]
    c["sub_agent"] = dg.sub_agent[dgi]
    c["sample_format"] = smp.tag[sel]
    c["sequence"] = buf.rd(off)
    sid = buf.rd(off + 4)
    if exp.any():
        c["source_id_type"] = np.where(exp, sid, sid >> 24)
        c["source_id_index"] = np.where(exp, buf.rd(off + 8), sid & 0xFFFFFF)
    else:
        c["source_id_type"] = sid >> 24
        c["source_id_index"] = sid & 0xFFFFFF
    rec = _records(buf, off, smp.length[sel], dgi, np.where(exp, 16, 12) if exp.any() else 12, bad)
    hits = _tag_hits(rec, _CTR_TAGS, _CTR_LUT)
    for tag, need, flag, fields in (
        (1, 88, "has_generic", GENERIC_FIELDS),
        (2, 52, "has_ethernet", ETHERNET_FIELDS),
    ):
        owner, roff, _ = _first_of(rec, hits, tag, n, need, bad, dgi)
        if not owner.size:
            continue
        _put(c, flag, owner, True)
        # The fields of the record as rows of one (fields, rows) block: one gather of the words, and one
        # scatter when not every sample has the record.
        mt = buf.block(roff, need // 4).astype(np.uint64).T
        if tag == 1:  # three u64 counters span two words each: fold the high words in
            vals = mt[_GENERIC_LOW]
            for field_i, word_i in _GENERIC_HIGH:
                vals[field_i] |= mt[word_i] << np.uint64(32)
        else:
            vals = mt
        if owner.size == n:
            block = np.ascontiguousarray(vals)
        else:
            block = np.zeros((len(fields), n), np.uint64)
            block[:, owner] = vals
        for i, name in enumerate(fields):
            c[name] = block[i]
    built: CounterBatch = c.build()
    return built


def _put(c: dict[str, Any], name: str, rows: I64, value: Any) -> None:
    """Write ``value`` into column ``name`` at ``rows``; rows covering the whole batch replace the column.

    Row sets come from :func:`_first_of` (unique and ascending) and masks over them, so a set as long as the
    batch is the identity and needs no scatter.
    """
    if rows.size == c.n:  # type: ignore[attr-defined]
        c[name] = value if getattr(value, "ndim", 0) else np.full(c.n, value)  # type: ignore[attr-defined]
    elif getattr(value, "ndim", 0) == 2:
        put_rows(c[name], rows, value)
    else:
        c[name][rows] = value


_LUT_SIZE = 4097  # record tags of enterprise 0 are below 4096; larger tags map to the last entry (slot 0)


def _slot_lut(tags: Sequence[int]) -> npt.NDArray[np.intp]:
    lut = np.zeros(_LUT_SIZE, np.intp)
    for i, t in enumerate(tags):
        lut[t] = i + 1
    return lut


_FLOW_TAGS = (1, 3, 4, 1001, 1002, 1003)  # sampled_header, sampled_ipv4/ipv6, extended switch/router/gateway
_FLOW_LUT = _slot_lut(_FLOW_TAGS)
_CTR_TAGS = (1, 2)  # generic interface, Ethernet
_CTR_LUT = _slot_lut(_CTR_TAGS)

Hits = dict[int, list[tuple[int, "npt.NDArray[np.intp] | None"]]]


def _tag_hits(rec: Walk, tags: Sequence[int], lut: npt.NDArray[np.intp]) -> Hits:
    """Where each of ``tags`` occurs: tag -> [(block, element indices or None for the whole block)].

    One lookup and one count per block answer every tag at once; agents put the same record kinds in the
    same order in every sample, so a tag usually fills one whole block and needs no index at all.
    """
    hits: Hits = {t: [] for t in tags}
    for k, (own, _off, tag, _ln) in enumerate(rec.blocks):
        if not own.size:
            continue
        t0 = int(tag[0])
        if t0 in hits and (tag == t0).all():  # the usual case: one record kind fills the block
            hits[t0].append((k, None))
            continue
        slot = lut.take(np.minimum(tag, _LUT_SIZE - 1))
        cnt = np.bincount(slot, minlength=len(tags) + 1)
        for s in np.flatnonzero(cnt[1:]).tolist():
            t = tags[s]
            hits[t].append((k, None if cnt[s + 1] == own.size else np.flatnonzero(slot == s + 1)))
    return hits


def _first_of(rec: Walk, hits: Hits, tag: int, n: int, need: int, bad: B1, dgi: I64) -> tuple[I64, I64, I64]:
    """Records with ``tag``: (owner sample, body offset, length), owners unique and ascending.

    Short bodies and duplicate records (two of the same kind in one sample) send the datagram to the fallback.
    """
    parts = hits[tag]
    if not parts:
        return _EMPTY, _EMPTY, _EMPTY
    if len(parts) == 1:  # one block: owners are ascending and unique already
        k, ix = parts[0]
        owner, off, _tag, ln = rec.blocks[k]
        if ix is not None:
            owner, off, ln = owner[ix], off[ix], ln[ix]
    else:
        sel = [(rec.blocks[k], ix) for k, ix in parts]
        owner = np.concatenate([b[0] if ix is None else b[0][ix] for b, ix in sel])
        off = np.concatenate([b[1] if ix is None else b[1][ix] for b, ix in sel])
        ln = np.concatenate([b[3] if ix is None else b[3][ix] for b, ix in sel])
        if not (owner[1:] > owner[:-1]).all():
            # Blocks are in ordinal order, so the first occurrence is the sample's first such record.
            uniq, first = np.unique(owner, return_index=True)
            if first.size < owner.size:
                dup = np.bincount(owner, minlength=n) > 1
                bad[dgi[dup]] = True
            owner, off, ln = uniq, off[first], ln[first]
    if need:
        short = ln < need
        if short.any():
            bad[dgi[owner[short]]] = True
    return owner, off, ln


def _flow_samples(buf: Buffer, dg: Any, smp: Walk, sel: npt.NDArray[np.intp], bad: B1) -> FlowBatch:
    n = sel.size
    if n == 0:
        return FlowBatch.empty(0)
    c = FlowBatch.lazy(n)
    off = smp.off[sel]
    exp = smp.tag[sel] == 3
    dgi = smp.owner[sel]
    c["datagram"] = dgi
    c["sample_index"] = smp.ordinal[sel]
    c["datagram_sequence"] = dg.sequence[dgi]
    c["sub_agent"] = dg.sub_agent[dgi]
    c["agent"] = _agents(buf, dg, dgi)
    c["sample_format"] = smp.tag[sel]
    # The fixed part of an expanded sample (compact ones use the first 8 words) and the first record's tag and
    # length (words 8-9 of a compact sample, 11-12 of an expanded one), so the record walk starts without
    # reading them again.
    m = buf.block(off, 13)
    c["sequence"] = m[:, 0]
    sid = m[:, 1]
    i_c = m[:, 5]
    o_c = m[:, 6]
    if exp.any():
        c["source_id_type"] = np.where(exp, sid, sid >> 24)
        c["source_id_index"] = np.where(exp, m[:, 2], sid & 0xFFFFFF)
        c["sampling_rate"] = np.where(exp, m[:, 3], m[:, 2])
        c["sample_pool"] = np.where(exp, m[:, 4], m[:, 3])
        c["drops"] = np.where(exp, m[:, 5], m[:, 4])
        c["input_format"] = np.where(exp, o_c, i_c >> 30)
        c["input_value"] = np.where(exp, m[:, 7], i_c & 0x3FFFFFFF)
        c["output_format"] = np.where(exp, m[:, 8], o_c >> 30)
        c["output_value"] = np.where(exp, m[:, 9], o_c & 0x3FFFFFFF)
    else:
        c["source_id_type"] = sid >> 24
        c["source_id_index"] = sid & 0xFFFFFF
        c["sampling_rate"] = m[:, 2]
        c["sample_pool"] = m[:, 3]
        c["drops"] = m[:, 4]
        c["input_format"] = i_c >> 30
        c["input_value"] = i_c & 0x3FFFFFFF
        c["output_format"] = o_c >> 30
        c["output_value"] = o_c & 0x3FFFFFFF

    if exp.any():
        nrec = np.where(exp, m[:, 10], m[:, 7])
        head = (np.where(exp, m[:, 11], m[:, 8]), np.where(exp, m[:, 12], m[:, 9]))
        rec = _records(buf, off, smp.length[sel], dgi, np.where(exp, 44, 32), bad, nrec, head)
    else:
        rec = _records(buf, off, smp.length[sel], dgi, 32, bad, m[:, 7], (m[:, 8], m[:, 9]))
    hits = _tag_hits(rec, _FLOW_TAGS, _FLOW_LUT)

    # sampled_header (0:1)
    owner, roff, rlen = _first_of(rec, hits, 1, n, 16, bad, dgi)
    if owner.size:
        hm = buf.block(roff, 4)
        proto = hm[:, 0]
        hl = hm[:, 3]
        _put(c, "header_protocol", owner, proto)
        _put(c, "frame_length", owner, hm[:, 1])
        _put(c, "stripped", owner, hm[:, 2])
        _put(c, "header_length", owner, hl)
        overrun = hl + 16 > rlen
        unsupported = ((proto != 1) & (proto != 11) & (proto != 12)) | overrun
        if unsupported.any():
            bad[dgi[owner[unsupported]]] = True
            keep = np.flatnonzero(~overrun)
            owner, proto, roff, hl = owner[keep], proto[keep], roff[keep], hl[keep]
        _parse_headers(buf, c, owner, proto, roff + 16, hl, bad, dgi)

    # sampled_ipv4 (0:3) and sampled_ipv6 (0:4)
    o4, off4, _ = _first_of(rec, hits, 3, n, 32, bad, dgi)
    o6, off6, _ = _first_of(rec, hits, 4, n, 56, bad, dgi)
    if o4.size and o6.size:
        both = np.intersect1d(o4, o6)
        bad[dgi[both]] = True
    if o4.size:
        _put(c, "rec_ip_version", o4, 4)
        for name, pos in (
            ("rec_length", 0),
            ("rec_protocol", 4),
            ("rec_src_port", 16),
            ("rec_dst_port", 20),
            ("rec_tcp_flags", 24),
            ("rec_tos", 28),
        ):
            _put(c, name, o4, buf.rd(off4 + pos))
        _put(c, "rec_src_ip", o4, ip4_mapped(buf.rd(off4 + 8)))
        _put(c, "rec_dst_ip", o4, ip4_mapped(buf.rd(off4 + 12)))
    if o6.size:
        _put(c, "rec_ip_version", o6, 6)
        for name, pos in (
            ("rec_length", 0),
            ("rec_protocol", 4),
            ("rec_src_port", 40),
            ("rec_dst_port", 44),
            ("rec_tcp_flags", 48),
            ("rec_tos", 52),
        ):
            _put(c, name, o6, buf.rd(off6 + pos))
        _put(c, "rec_src_ip", o6, ip6_bytes(buf, off6 + 8))
        _put(c, "rec_dst_ip", o6, ip6_bytes(buf, off6 + 24))

    # extended_switch (0:1001)
    ow, ro, _ = _first_of(rec, hits, 1001, n, 16, bad, dgi)
    if ow.size:
        m = buf.block(ro, 4)
        for i, name in enumerate(("src_vlan", "src_priority", "dst_vlan", "dst_priority")):
            _put(c, name, ow, m[:, i])

    # extended_router (0:1002)
    ow, ro, rl = _first_of(rec, hits, 1002, n, 0, bad, dgi)
    if ow.size:
        at = buf.rd(ro)
        alen = np.where(at == 1, 4, 16)
        badr = ((at != 1) & (at != 2)) | (rl < 4 + alen + 8)
        if badr.any():
            bad[dgi[ow[badr]]] = True
        _put_addr(buf, c["nexthop"], c["nexthop_version"], ow, ro + 4, at)
        _put(c, "src_mask_len", ow, buf.rd(ro + 4 + alen))
        _put(c, "dst_mask_len", ow, buf.rd(ro + 8 + alen))

    # extended_gateway (0:1003)
    ow, ro, rl = _first_of(rec, hits, 1003, n, 0, bad, dgi)
    if ow.size:
        _gateway(buf, c, ow, ro, rl, bad, dgi)
    built_f: FlowBatch = c.build()
    return built_f


def _put_addr(buf: Buffer, col: U8, ver: I64, rows: I64, off: I64, at: I64) -> None:
    v4 = at == 1
    v6 = at == 2
    if v4.any():
        put_rows(col, rows[v4], ip4_mapped(buf.rd(off[v4])))
        ver[rows[v4]] = 4
    if v6.any():
        put_rows(col, rows[v6], ip6_bytes(buf, off[v6]))
        ver[rows[v6]] = 6


def _gateway(buf: Buffer, c: dict[str, Any], ow: I64, ro: I64, rl: I64, bad: B1, dgi: I64) -> None:
    end = ro + rl
    at = buf.rd(ro)
    alen = np.where(at == 1, 4, 16)
    p = ro + 4 + alen
    badg = ((at != 1) & (at != 2)) | (p + 16 > end)
    fixed = np.flatnonzero(~badg)
    _put_addr(buf, c["gw_nexthop"], c["gw_nexthop_version"], ow, ro + 4, np.where(badg, 0, at))
    _put(c, "gw_as", ow, buf.rd(p))
    _put(c, "gw_src_as", ow, buf.rd(p + 4))
    _put(c, "gw_src_peer_as", ow, buf.rd(p + 8))
    nseg = np.where(badg, 0, buf.rd(p + 12))
    p = p + 16
    first_as = np.full(ow.size, -1, np.int64)
    last_as = np.full(ow.size, -1, np.int64)
    active = fixed[nseg[fixed] > 0]
    j = 0
    while active.size:
        q = p[active]
        fits = q + 8 <= end[active]
        slen = np.where(fits, buf.rd_clip(q + 4), 0)
        nq = q + 8 + 4 * slen
        fits &= nq <= end[active]
        if not fits.all():
            badg[active[~fits]] = True
            active, q, slen, nq = active[fits], q[fits], slen[fits], nq[fits]
        has = slen > 0
        if has.any():
            a = active[has]
            unset = first_as[a] < 0
            first_as[a[unset]] = buf.rd(q[has][unset] + 8)
            last_as[a] = buf.rd(nq[has] - 4)
        p[active] = nq
        j += 1
        active = active[nseg[active] > j]
    ok = ~badg & (p + 4 <= end)
    ncomm = np.where(ok, buf.rd_clip(p), 0)
    lp = p + 4 + 4 * ncomm
    badg |= ~ok | (lp + 4 > end)
    _put(c, "gw_dst_peer_as", ow, first_as)
    _put(c, "gw_dst_as", ow, last_as)
    _put(c, "gw_communities", ow, ncomm)
    _put(c, "gw_localpref", ow, buf.rd_clip(lp))
    if badg.any():
        bad[dgi[ow[badg]]] = True


def _parse_headers(
    buf: Buffer,
    c: dict[str, Any],
    owner: I64,
    proto: I64,
    hoff: I64,
    hl: I64,
    bad: B1,
    dgi: I64,
) -> None:
    """Ethernet / 802.1Q / IPv4 / IPv6 / TCP / UDP / ICMP fields from the sampled header bytes.

    Nearly every sampled header of real traffic has one of four layouts: Ethernet, untagged or with one
    VLAN tag, then IPv4 without options or IPv6 without extension headers. For those every field lies at a
    fixed position from the start of the IP header, so two row gathers (the Ethernet part, a window from the
    IP header on) and one column operation per field decode them. The other headers (raw IP, QinQ, IPv4
    options, IPv6 extension headers, 802.3/LLC, MPLS, short captures) take the general walk below, which
    gives the same values for these four layouts (the tests compare both paths with the reference).
    """
    n = owner.size
    eth_h = buf.bytes(hoff, 18)  # MACs, ethertype, first VLAN tag, inner ethertype
    e16 = eth_h.view(">u2")
    outer = e16[:, 6].astype(np.int64)
    tagged = _TPID.take(outer)
    if tagged.any():
        ethertype = np.where(tagged, e16[:, 8], outer)
        l3 = np.where(tagged, 18, 14)
    else:
        ethertype = outer
        l3 = np.full(n, 14, np.int64)
    win = buf.bytes(hoff + l3, _IP_WINDOW)  # the IP header and the first bytes after it
    b0 = win[:, 0]
    is_eth = proto == 1
    no_rows = np.zeros(n, np.bool_)
    e4 = ethertype == 0x0800
    v4 = is_eth & e4 & (b0 == 0x45) & (hl >= l3 + 20) if e4.any() else no_rows
    e6 = ethertype == 0x86DD
    v6 = is_eth & e6 & ((b0 >> 4) == 6) & (hl >= l3 + 40) & ~_IP6_EXT.take(win[:, 6]) if e6.any() else no_rows
    simple = v4 | v6
    if simple.all():
        rows, sel = owner, None
    else:
        sel = np.flatnonzero(simple)
        rest = np.flatnonzero(~simple)
        _parse_headers_general(buf, c, owner[rest], proto[rest], hoff[rest], hl[rest], bad, dgi)
        if not sel.size:
            return
        rows = owner[sel]
        eth_h = take_rows(eth_h, sel)
        e16 = eth_h.view(">u2")
        tagged, ethertype, l3, win, hl, v4, v6 = (
            tagged[sel],
            ethertype[sel],
            l3[sel],
            take_rows(win, sel),
            hl[sel],
            v4[sel],
            v6[sel],
        )
    _put(c, "has_eth", rows, True)
    _put(c, "dst_mac", rows, eth_h[:, :6])
    _put(c, "src_mac", rows, eth_h[:, 6:12])
    if tagged.any():
        _put(c, "vlan", rows, np.where(tagged, e16[:, 7].astype(np.int64) & 0xFFF, -1))
    else:
        _put(c, "vlan", rows, -1)
    _put(c, "ethertype", rows, ethertype)
    room = hl - l3
    if v4.all():
        _ip4_window(c, rows, win, room - 20)
    elif v6.all():
        _ip6_window(c, rows, win, room - 40)
    else:
        i4 = np.flatnonzero(v4)
        i6 = np.flatnonzero(v6)
        _ip4_window(c, rows[i4], take_rows(win, i4), room[i4] - 20)
        _ip6_window(c, rows[i6], take_rows(win, i6), room[i6] - 40)


# An IPv6 header, then the L4 bytes we read (ports, ICMP type/code, TCP flags), rounded up to whole u32 so
# that IPv4 addresses (bytes 12-15 and 16-19) are single u32 columns of the window.
_IP_WINDOW = 56


def _ip4_window(c: dict[str, Any], rows: I64, win: U8, room: I64) -> None:
    """IPv4 (no options) fields and the L4 after it from IP windows (see ``_parse_headers``)."""
    if not rows.size:
        return
    w16 = win[:, :34].view(">u2")
    proto = win[:, 9].astype(np.int64)
    _put(c, "ip_version", rows, 4)
    _put(c, "tos", rows, win[:, 1])
    _put(c, "ttl", rows, win[:, 8])
    _put(c, "ip_proto", rows, proto)
    raw32 = win.view(np.uint32)
    _put(c, "src_ip", rows, _mapped(raw32[:, 3]))
    _put(c, "dst_ip", rows, _mapped(raw32[:, 4]))
    first = (w16[:, 3] & 0x1FFF) == 0
    _l4_window(c, rows, win, w16, 20, proto, room, first, 1)


def _ip6_window(c: dict[str, Any], rows: I64, win: U8, room: I64) -> None:
    """IPv6 (no extension header) fields and the L4 after it from IP windows (see ``_parse_headers``)."""
    if not rows.size:
        return
    w16 = win[:, :54].view(">u2")
    proto = win[:, 6].astype(np.int64)
    _put(c, "ip_version", rows, 6)
    _put(c, "tos", rows, (w16[:, 0] >> 4) & 0xFF)
    _put(c, "ttl", rows, win[:, 7])
    _put(c, "ip_proto", rows, proto)
    _put(c, "src_ip", rows, win[:, 8:24])
    _put(c, "dst_ip", rows, win[:, 24:40])
    _l4_window(c, rows, win, w16, 40, proto, room, None, 58)


def _l4_window(
    c: dict[str, Any],
    rows: I64,
    win: U8,
    w16: Any,
    at: int,
    proto: I64,
    room: I64,
    first: B1 | None,
    icmp: int,
) -> None:
    """Ports, TCP flags, ICMP type/code at byte ``at`` of IP windows; ``room`` bytes were captured there."""
    ports = _HAS_PORTS.take(proto) & (room >= 4)
    if first is not None:
        ports &= first
    if ports.all():
        _put(c, "src_port", rows, w16[:, at // 2])
        _put(c, "dst_port", rows, w16[:, at // 2 + 1])
    elif ports.any():
        _put(c, "src_port", rows[ports], w16[ports, at // 2])
        _put(c, "dst_port", rows[ports], w16[ports, at // 2 + 1])
    flags = (proto == 6) & (room >= 14)
    if first is not None:
        flags &= first
    if flags.all():
        _put(c, "tcp_flags", rows, w16[:, at // 2 + 6] & 0x1FF)  # with the NS bit
    elif flags.any():
        _put(c, "tcp_flags", rows[flags], w16[flags, at // 2 + 6] & 0x1FF)
    ic = (proto == icmp) & (room >= 2)
    if first is not None:
        ic &= first
    if ic.all():
        _put(c, "icmp_type", rows, win[:, at])
        _put(c, "icmp_code", rows, win[:, at + 1])
    elif ic.any():
        _put(c, "icmp_type", rows[ic], win[ic, at])
        _put(c, "icmp_code", rows[ic], win[ic, at + 1])


_MAPPED_WORD = np.frombuffer(b"\0\0\xff\xff", np.uint32)[0]  # bytes 8-11 of ::ffff:a.b.c.d, in memory order


def _mapped(raw32: npt.NDArray[np.uint32]) -> U8:
    """(n, 16) IPv4-mapped IPv6 addresses from IPv4 addresses as u32 holding the 4 bytes in memory order.

    Whole-word column writes: far cheaper than writing 12 and 4 bytes per row.
    """
    out = np.zeros((raw32.shape[0], 4), np.uint32)
    out[:, 2] = _MAPPED_WORD
    out[:, 3] = raw32
    return out.view(np.uint8)


def _parse_headers_general(
    buf: Buffer, c: dict[str, Any], owner: I64, proto: I64, hoff: I64, hl: I64, bad: B1, dgi: I64
) -> None:
    """Any header layout: Ethernet / 802.1Q / QinQ / IPv4 / IPv6 / TCP / UDP / ICMP fields.

    Every read is at an even offset (header starts are 4-aligned, Ethernet and VLAN headers are 14 and 4
    bytes, IP headers multiples of 4) and is guarded by the captured header length.
    """
    eth = np.flatnonzero((proto == 1) & (hl >= 14))
    short_eth = (proto == 1) & (hl < 14)
    if short_eth.any():
        bad[dgi[owner[short_eth]]] = True
    l3 = np.zeros(owner.size, np.int64)
    et = np.full(owner.size, -1, np.int64)
    et[proto == 11] = 0x0800
    et[proto == 12] = 0x86DD
    if eth.size:
        rows = owner[eth]
        ho = hoff[eth]
        h = hl[eth]
        mb = buf.bytes(ho, 20)  # MACs, ethertype, first VLAN tag, inner ethertype
        m = mb.view(">u4").astype(np.int64)
        _put(c, "has_eth", rows, True)
        _put(c, "dst_mac", rows, mb[:, :6])
        _put(c, "src_mac", rows, mb[:, 6:12])
        e = m[:, 3] >> 16
        pos = np.full(eth.size, 14, np.int64)
        vlan = np.full(eth.size, -1, np.int64)
        tagged = _TPID[e] & (h >= 18)
        if tagged.any():
            vlan[tagged] = m[tagged, 3] & 0xFFF
            e[tagged] = m[tagged, 4] >> 16
            pos[tagged] = 18
            more = np.flatnonzero(tagged & _TPID[e] & (h >= 22))
            while more.size:  # QinQ and deeper stacks: the outer VLAN is kept, the inner ones skipped
                w = buf.block(ho[more] + pos[more], 1)[:, 0]
                e[more] = w & 0xFFFF
                pos[more] += 4
                more = more[_TPID[e[more]] & (pos[more] + 4 <= h[more])]
        # 802.3/LLC, MPLS and a VLAN tag cut by the end of the header: the per-record decoder handles those.
        odd = _ODD_ETHERTYPE[e]
        if odd.any():
            bad[dgi[rows[odd]]] = True
        _put(c, "vlan", rows, vlan)
        _put(c, "ethertype", rows, e)
        et[eth] = e
        l3[eth] = pos
    v4 = np.flatnonzero((et == 0x0800) & (l3 + 20 <= hl))
    if v4.size:
        b = hoff[v4] + l3[v4]
        m = buf.block(b, 5)
        w0 = m[:, 0]
        ihl = ((w0 >> 24) & 15) * 4
        ok = ((w0 >> 28) == 4) & (ihl >= 20)
        if not ok.all():
            bad[dgi[owner[v4[~ok]]]] = True
            v4, b, ihl, m, w0 = v4[ok], b[ok], ihl[ok], m[ok], w0[ok]
        rows = owner[v4]
        w2 = m[:, 2]
        p = (w2 >> 16) & 0xFF
        _put(c, "ip_version", rows, 4)
        _put(c, "tos", rows, (w0 >> 16) & 0xFF)
        _put(c, "ttl", rows, w2 >> 24)
        _put(c, "ip_proto", rows, p)
        _put(c, "src_ip", rows, ip4_mapped(m[:, 3]))
        _put(c, "dst_ip", rows, ip4_mapped(m[:, 4]))
        frag = m[:, 1] & 0x1FFF
        l4rel = l3[v4] + ihl
        _parse_l4(buf, c, rows, p, hoff[v4] + l4rel, hl[v4] - l4rel, frag == 0, 1)
    v6 = np.flatnonzero((et == 0x86DD) & (l3 + 40 <= hl))
    if v6.size:
        b = hoff[v6] + l3[v6]
        mb = buf.bytes(b, 40)
        m = mb[:, :8].view(">u4").astype(np.int64)
        ok = (m[:, 0] >> 28) == 6
        if not ok.all():
            bad[dgi[owner[v6[~ok]]]] = True
            v6, b, m, mb = v6[ok], b[ok], m[ok], mb[ok]
        rows = owner[v6]
        w0 = m[:, 0]
        w1 = m[:, 1]
        nh = (w1 >> 8) & 0xFF
        ext = _IP6_EXT[nh]
        if ext.any():
            bad[dgi[rows[ext]]] = True
        _put(c, "ip_version", rows, 6)
        _put(c, "tos", rows, (w0 >> 20) & 0xFF)
        _put(c, "ttl", rows, w1 & 0xFF)
        _put(c, "ip_proto", rows, nh)
        _put(c, "src_ip", rows, mb[:, 8:24])
        _put(c, "dst_ip", rows, mb[:, 24:40])
        l4rel = l3[v6] + 40
        _parse_l4(buf, c, rows, nh, hoff[v6] + l4rel, hl[v6] - l4rel, np.ones(v6.size, np.bool_), 58)


def _parse_l4(
    buf: Buffer, c: dict[str, Any], rows: I64, proto: I64, l4: I64, room: I64, first_frag: B1, icmp: int
) -> None:
    m = buf.block(l4, 4)  # ports / ICMP type+code, and the TCP flags byte in the 4th word
    w = m[:, 0]
    ports = first_frag & _HAS_PORTS[proto] & (room >= 4)
    if ports.any():
        r = rows[ports]
        _put(c, "src_port", r, w[ports] >> 16)
        _put(c, "dst_port", r, w[ports] & 0xFFFF)
    flags = first_frag & (proto == 6) & (room >= 14)
    if flags.any():
        _put(c, "tcp_flags", rows[flags], (m[flags, 3] >> 16) & 0x1FF)  # with the NS bit
    ic = first_frag & (proto == icmp) & (room >= 2)
    if ic.any():
        r = rows[ic]
        _put(c, "icmp_type", r, w[ic] >> 24)
        _put(c, "icmp_code", r, (w[ic] >> 16) & 0xFF)


# --------------------------------------------------------------------------------------------- fallback


def _fallback(raw: U8, starts: I64, ends: I64, index: I64) -> tuple[FlowBatch, CounterBatch, int, int]:
    """Decode datagrams one by one with the per-record decoder and convert them to columns."""
    from peerlab_tui.core.sflow import decode_datagram

    flows: list[FlowBatch] = []
    ctrs: list[CounterBatch] = []
    ok = 0
    nsamp = 0
    for s, e, i in zip(starts.tolist(), ends.tolist(), index.tolist(), strict=True):
        d = decode_datagram(raw[s:e].tobytes())
        if not d.ok:
            continue
        try:
            f, ct = rows_from_datagram(d, i)
        except Exception:  # a bug here must cost one datagram (counted as an error), never the batch
            log.exception("sFlow datagram %d could not be turned into columns; counted as an error", i)
            continue
        ok += 1
        nsamp += len(d.samples)
        flows.append(f)
        ctrs.append(ct)
    return FlowBatch.concat(flows), CounterBatch.concat(ctrs), ok, nsamp


def rows_from_datagram(d: Any, index: int = 0) -> tuple[FlowBatch, CounterBatch]:
    """Columns of one datagram decoded by the per-record decoder (the reference for the fast path)."""
    from peerlab_tui.core.sflow._fast_reference import rows_from_datagram as impl

    return impl(d, index)


__all__ = [
    "BatchResult",
    "CounterBatch",
    "FlowBatch",
    "decode_batch",
    "decode_batch_ex",
    "put_rows",
    "rows_from_datagram",
    "take_rows",
    "tune_allocator",
]
