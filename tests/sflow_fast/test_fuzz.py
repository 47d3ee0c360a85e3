"""Structure-aware fuzzing of the vectorised decoder (``decode_batch_ex``) and the counter (``count_batch``).

Seeds are encoder-built datagrams covering every record the fast path reads; mutations know where the
counts, lengths, tags and address types are (bit flips, truncations, those words set to extremes,
records and samples duplicated or removed, with or without fixing the enclosing lengths). For every batch:
nothing raises, memory stays within a small multiple of the input, and the columns and counts equal the
per-record decoder's.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TypeVar

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerlab_tui.core.sflow import (
    Interface,
    Record,
    Sample,
    count_by_type,
    counter_record,
    counter_sample,
    datagram,
    decode_datagram,
    discard_sample,
    encode_datagram,
    flow_record,
    flow_sample,
    sampled_header,
)
from peerlab_tui.core.sflow.count import count_batch
from peerlab_tui.core.sflow.fast import decode_batch_ex
from peerlab_tui.core.sflow.sources import RawBatch
from tests.sflow_fast.helpers import assert_same_columns, reference
from tests.sflow_fast.test_fast_layouts import LAYOUTS

# Sample tag -> bytes of the fixed part before the record list, including the record count word.
T = TypeVar("T")
_SAMPLE_HEAD = {1: 32, 3: 44, 2: 12, 4: 16, 5: 32}
_FOUNDRY = 1991 << 12 | 1


def _gateway(nexthop: str | None) -> object:
    return flow_record(
        "extended_gateway",
        nexthop=nexthop,
        **{"as": 64500},
        src_as=64501,
        src_peer_as=64502,
        dst_as_path=[{"type": 2, "value": [64510, 64511]}, {"type": 1, "value": [64520]}],
        communities=[1, 2, 3],
        localpref=100,
    )


@cache
def _seeds() -> tuple[bytes, ...]:
    """Well-formed datagrams: every header layout, every record and address kind the fast path reads."""
    out: list[bytes] = []
    headers = [sampled_header(h, protocol=p, frame_length=len(h) + 60) for _, p, h in LAYOUTS]
    for i in range(0, len(headers), 4):  # several header layouts per datagram, compact and expanded
        samples = [
            flow_sample([h], sampling_rate=100 + j, sequence_number=j, expanded=bool(j % 2))
            for j, h in enumerate(headers[i : i + 4])
        ]
        out.append(encode_datagram(datagram(samples, sequence_number=i)))
    sampled_v4 = flow_record("sampled_ipv4", length=84, protocol=6, src_ip="192.0.2.1", dst_ip="192.0.2.2",
                             src_port=1, dst_port=2, tcp_flags=2, tos=3)  # fmt: skip
    sampled_v6 = flow_record("sampled_ipv6", length=100, protocol=17, src_ip="2001:db8::1",
                             dst_ip="2001:db8::2", src_port=3, dst_port=4, priority=5)  # fmt: skip
    switch = flow_record("extended_switch", src_vlan=10, src_priority=1, dst_vlan=20, dst_priority=2)
    h0 = headers[0]
    hops = (
        ("192.0.2.10", "192.0.2.254", "2001:db8::fe"),
        ("2001:db8::10", None, "2001:db8::fe"),
        (None, "192.0.2.254", None),  # unknown (type 0) agent and next hops
    )
    for agent, hop4, hop6 in hops:
        routers = [
            flow_record("extended_router", nexthop=hop, src_mask_len=24, dst_mask_len=48)
            for hop in (hop4, hop6)
        ]
        flows = [
            flow_sample([h0, switch, routers[0], _gateway(hop6)], sampling_rate=1000),
            flow_sample(
                [sampled_v4, routers[1], _gateway(hop4)],
                expanded=True,
                input=Interface(2, 3),
                output=Interface(1, 258),
            ),
            flow_sample([sampled_v6, switch, headers[1]], sampling_rate=7, sample_pool=70, drops=1),
        ]
        out.append(encode_datagram(datagram(flows, agent_address=agent, sequence_number=7)))  # type: ignore[arg-type]
    generic = counter_record("if_counters", if_index=3, if_speed=10**10, if_in_octets=2**40 + 5,
                             if_out_octets=2**33, if_promiscuous_mode=1)  # fmt: skip
    ether = counter_record("ethernet_counters", dot3_stats_fcs_errors=9, dot3_stats_symbol_errors=2)
    counters = [
        counter_sample([generic, ether], source_id_index=3),
        counter_sample([ether, generic], expanded=True, source_id_type=1, source_id_index=70000),
        counter_sample([counter_record("processor", cpu_percentage_1s=5)]),
    ]
    out.append(encode_datagram(datagram(counters, agent_address="2001:db8::20")))
    # Anything else the walks must step over or route to the per-record decoder.
    foundry = Sample(1991, 1, "foundry_acl_sample", fields={"flags": 1, "group_id": 2},
                     inner=flow_sample([h0, switch], sampling_rate=64))  # fmt: skip
    other = [
        foundry,
        discard_sample([h0], reason=259),
        flow_sample([Record("flow", 9, 9, raw=b"\x01\x02\x03\x04"), h0]),
        counter_sample([generic]),
    ]
    out.append(encode_datagram(datagram(other)))
    return tuple(out)


@dataclass
class _Shape:
    """Where the structural words and elements of a (possibly damaged) datagram are."""

    words: list[int] = field(default_factory=list)  # offsets of counts, lengths, tags, address types
    # (start, end, count word offset, length word offsets of enclosing elements) of each sample and record
    elements: list[tuple[int, int, int, tuple[int, ...]]] = field(default_factory=list)


def _u32(d: bytes | bytearray, off: int) -> int | None:
    return struct.unpack_from(">I", d, off)[0] if off >= 0 and off + 4 <= len(d) else None


def _shape(d: bytes | bytearray) -> _Shape:
    """Walk as far as the structure holds together (it may be damaged already)."""
    s = _Shape()
    at = _u32(d, 4)
    if _u32(d, 0) != 5 or at is None:
        return s
    s.words.append(4)
    p = 8 + (4 if at == 1 else 16 if at == 2 else 0)
    if _u32(d, p + 12) is None:
        return s
    s.words.append(p + 12)
    _walk(d, p + 16, _u32(d, p + 12) or 0, len(d), p + 12, (), s, sample_level=True)
    return s


def _walk(
    d: bytes | bytearray,
    p: int,
    n: int,
    end: int,
    count_at: int,
    lens: tuple[int, ...],
    s: _Shape,
    *,
    sample_level: bool,
) -> None:
    for _ in range(min(n, 64)):
        tag, ln = _u32(d, p), _u32(d, p + 4)
        if tag is None or ln is None or p + 8 + ln > end:
            return
        s.words += [p, p + 4]
        body, nxt = p + 8, p + 8 + ln
        s.elements.append((p, nxt, count_at, lens))
        inner_lens = (*lens, p + 4)
        if sample_level and tag == _FOUNDRY:
            _walk(d, body + 8, 1, nxt, -1, inner_lens, s, sample_level=True)
        elif sample_level and tag in _SAMPLE_HEAD:
            c_at = body + _SAMPLE_HEAD[tag] - 4
            c = _u32(d, c_at)
            if c is not None and c_at < nxt:
                s.words.append(c_at)
                _walk(d, c_at + 4, c, nxt, c_at, inner_lens, s, sample_level=False)
        elif not sample_level:
            if tag == 1 and body + 16 <= nxt:
                s.words.append(body + 12)  # header_length
            elif tag in (1002, 1003):
                s.words.append(body)  # next hop address type
        p = nxt


_EXTREMES = [0, 1, 2, 3, 4, 8, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF, 593_000_000]


def _fix(d: bytearray, words: tuple[int, ...], delta: int) -> None:
    for w in words:
        v = _u32(d, w)
        if v is not None:
            struct.pack_into(">I", d, w, (v + delta) & 0xFFFFFFFF)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A seed with 0-4 structure-aware mutations (a few seeds stay intact, to compare good rows too)."""
    seeds = _seeds()
    d = bytearray(seeds[draw(st.integers(0, len(seeds) - 1))])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 6))
        shape = _shape(d)
        if op == 0 and d:  # bit flip anywhere
            d[draw(st.integers(0, len(d) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:  # truncation anywhere
            del d[draw(st.integers(0, len(d))) :]
        elif op == 2 and shape.words:  # a count / length / tag / address type set to an extreme
            w = shape.words[draw(st.integers(0, len(shape.words) - 1))]
            v = _u32(d, w) or 0
            flipped = v ^ (1 << draw(st.integers(0, 31)))
            new = draw(st.sampled_from([*_EXTREMES, v + 4, v - 4, v + 1, flipped]))
            struct.pack_into(">I", d, w, new & 0xFFFFFFFF)
        elif op in (3, 4) and shape.elements:  # duplicate or remove a sample or record
            start, stop, count_at, lens = shape.elements[draw(st.integers(0, len(shape.elements) - 1))]
            chunk = bytes(d[start:stop])
            if op == 3:
                d[stop:stop] = chunk
            else:
                del d[start:stop]
            if draw(st.booleans()):  # keep the enclosing lengths and count consistent (a legal datagram)
                sign = 1 if op == 3 else -1
                _fix(d, lens, sign * len(chunk))
                if count_at >= 0:
                    _fix(d, (count_at,), sign)
        elif op == 5:  # garbage after the declared samples
            d += draw(st.binary(min_size=1, max_size=24))
        elif op == 6 and len(d) >= 8:  # a random aligned word
            w = draw(st.integers(0, len(d) // 4 - 1)) * 4
            struct.pack_into(">I", d, w, draw(st.sampled_from(_EXTREMES)))
    return bytes(d)


# Batches of up to 8 datagrams: a numpy call costs the same for 1 row or 8, so this is ~4x the datagrams per
# second of fuzzing (about 3,000 datagrams per test, ~6 s each on the CI machine).
_batches = st.lists(_mutated(), min_size=1, max_size=8)


def _settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Peak traced memory allowed: a small multiple of the input plus a constant (the shared column constants,
# the per-record decoder's objects of a fallback datagram, numpy's fixed buffers).
# (Observed: at most ~140 KB for batches of up to ~3 KB; a count-sized allocation would be megabytes.)
_PER_BYTE = 64
_CONSTANT = 512 * 1024


def _warm() -> None:
    """Fill process-wide caches (constant columns, lookup tables, imports) before measuring memory."""
    seeds = list(_seeds())
    decode_batch_ex(seeds * 4)
    b = RawBatch.from_datagrams(seeds)
    count_batch(b.buffer, b.offsets, b.lengths)


def _peak(fn: Callable[..., T], *args: object) -> tuple[T, int]:
    tracemalloc.start()
    try:
        result = fn(*args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_seeds_cover_what_the_fast_path_reads() -> None:
    """The seeds decode cleanly and hold every record, address kind and sample type the fuzzing relies on."""
    seeds = list(_seeds())
    counts = count_by_type(decode_datagram(d, decode_headers=False) for d in seeds)
    assert counts["errors"] == 0
    assert {"0:1", "0:2", "0:3", "0:4", "0:5", "1991:1"} <= set(counts["samples"])
    assert {"0:1", "0:3", "0:4", "0:1001", "0:1002", "0:1003", "9:9"} <= set(counts["flow_records"])
    assert {"0:1", "0:2", "0:1001"} <= set(counts["counter_records"])
    res = decode_batch_ex(seeds)
    f = res.flows
    assert set(f.nexthop_version.tolist()) == {-1, 0, 4, 6}
    assert set(f.gw_nexthop_version.tolist()) == {-1, 0, 4, 6}
    assert set(f.ip_version.tolist()) == {-1, 4, 6} and set(f.rec_ip_version.tolist()) == {-1, 4, 6}
    agents = {bytes(a) for a in f.agent}
    assert bytes(16) in agents and len(agents) >= 3
    assert bool(res.counters.has_generic.all()) is False and bool(res.counters.has_ethernet.any())
    # Every datagram's shape walk finds its elements (the structure-aware mutations have targets).
    assert all(len(_shape(d).elements) >= 2 for d in seeds)


@_settings(500)
@given(batch=_batches)
def test_fuzz_decode_batch(batch: list[bytes]) -> None:
    """Mutated batches: no exception, bounded memory, columns equal to the per-record decoder's."""
    _warm_once()
    res, peak = _peak(decode_batch_ex, batch)
    size = sum(map(len, batch))
    assert peak <= _PER_BYTE * size + _CONSTANT, f"peak {peak} bytes for {size} input bytes"
    ref_f, ref_c = reference(batch)
    assert_same_columns(res.flows, ref_f, "fuzzed flows")
    assert_same_columns(res.counters, ref_c, "fuzzed counters")
    ok = sum(decode_datagram(d, decode_headers=False).ok for d in batch)
    assert res.datagrams == ok and res.errors == len(batch) - ok


@_settings(800)
@given(batch=_batches, shift=st.integers(0, 3))
def test_fuzz_count_batch(batch: list[bytes], shift: int) -> None:
    """Mutated batches at any alignment: no exception, bounded memory, counts equal the per-record count."""
    _warm_once()
    raw = bytearray(shift)
    offsets = []
    for d in batch:
        offsets.append(len(raw))
        raw += d
    arr = np.frombuffer(bytes(raw), np.uint8)
    lengths = np.array([len(d) for d in batch], np.int64)
    got, peak = _peak(count_batch, arr, np.array(offsets, np.int64), lengths)
    assert peak <= _PER_BYTE * len(raw) + _CONSTANT, f"peak {peak} bytes for {len(raw)} input bytes"
    assert got == count_by_type(decode_datagram(d, decode_headers=False) for d in batch)


@cache
def _warm_once() -> None:
    _warm()


def test_batches_of_empty_and_tiny_packets() -> None:
    """Found by the fuzzing: a batch whose packets hold no whole word (an empty UDP payload) made the counter
    raise IndexError; now each is an error, for the counter and the decoder alike."""
    for batch in ([b""], [b"", b"\0"], [b"\0\0\0"], [b"\0\0\0\x05"]):
        raw = b"".join(batch)
        lengths = np.array([len(d) for d in batch], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        got = count_batch(np.frombuffer(raw, np.uint8), offsets, lengths)
        assert got == count_by_type(decode_datagram(d, decode_headers=False) for d in batch)
        assert got["errors"] == len(batch) and got["datagrams"] == 0
        res = decode_batch_ex(batch)
        assert res.errors == len(batch) and len(res.flows) == 0
