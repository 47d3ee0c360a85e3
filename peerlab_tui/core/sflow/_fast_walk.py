"""Vectorised XDR structure walk shared by the fast decoder (``fast.py``) and the counter (``count.py``).

A batch is one contiguous byte buffer plus the start and end offset of each datagram. XDR keeps every field
4-aligned relative to the start of its datagram, so when every datagram starts at a multiple of 4 in the
buffer, single u32 reads are plain gathers from the batch converted once to native int64 words
(``w[offset >> 2]``). When starts have mixed remainders (datagrams cut out of a pcap), :func:`aligned_view`
lays the span out once per remainder so that every datagram is aligned in one "virtual" buffer. (The counter
reads so few words that it skips the conversion: :meth:`Buffer.big_endian_words`.) Multi-word
reads, and the 2-aligned fields of Ethernet frames in sampled headers, are single row gathers of a
byte-strided ``void`` view (:meth:`Buffer.block`, :meth:`Buffer.bytes`).

Loops run over the *index* of a sample within its datagram (and of a record within its sample), never over
datagrams: each iteration handles every container that still has an element at that index.
Containers whose declared counts or lengths do not fit are flagged ``bad``; the caller hands those datagrams
to the per-record decoder so the answer stays identical to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
B1 = npt.NDArray[np.bool_]

# Upper bound on elements per container we walk at all: a datagram fits in 64 KiB and every sample or
# record takes at least 8 bytes, so a larger declared count cannot be real (the walk stops at the end anyway).
_MAX_ELEMENTS = 65536 // 8 + 1


PAD = 1024  # zero bytes after the batch: fixed-offset reads past a short record stay inside the array


class Buffer:
    """One batch: its bytes (``u8``, followed by at least ``PAD`` zero bytes) and its u32 words.

    ``w[o >> 2]`` is the big-endian u32 at a 4-aligned byte offset ``o``, already converted to native
    ``int64`` (one conversion pass over the batch): every value read is ready for offset arithmetic and is
    already of the column type, so no read needs a further conversion. Wider reads at any offset — several
    XDR words at once, or the 2-aligned fields of Ethernet frames inside sampled headers — are single gathers
    of fixed-width rows of a byte-strided ``void`` view (``block``/``bytes``), far cheaper than one gather
    per word. Reads rely on the padding: a caller reads only at a validated base offset (inside the batch)
    plus a constant smaller than ``PAD``.
    """

    __slots__ = ("_lazy", "_rows", "_u8", "be", "size", "w")

    def __init__(
        self,
        data: U8 | None,
        size: int,
        *,
        words: bool = True,
        w: I64 | None = None,
        lazy: Callable[[], U8] | None = None,
    ) -> None:
        if data is not None and data.size < size + PAD:
            padded = np.zeros(size + PAD, np.uint8)
            padded[:size] = data[:size]
            data = padded
        self.size = size
        self._u8 = data
        self._lazy = lazy  # gives the bytes on first use (big_endian_words: they need no padding copy)
        self._rows: dict[int, np.ndarray[Any, Any]] = {}
        # Without ``words`` (a walk that reads few words per datagram, such as counting) single words are read
        # with the byte-strided view too, at any alignment, and the batch needs no conversion pass at all.
        self.w: I64 | None = w
        self.be: npt.NDArray[Any] | None = None  # see big_endian_words
        if w is None and words and data is not None:
            n4 = (min(data.size, size + PAD) // 4) * 4
            self.w = data[:n4].view(">u4").astype(np.int64)

    @classmethod
    def big_endian_words(cls, data: U8) -> Buffer:
        """A buffer over ``data`` (4-aligned datagrams, no padding needed), read without converting it.

        Words are gathered from a big-endian view of the bytes and converted per read: for walks that read a
        few words per datagram (counting) this beats converting the whole buffer. Reads past the end are
        clipped to the last word (callers mask such values, as they do reads in the padding); the walk reads
        only inside containers.
        """
        size = int(data.size)
        if size < 4:  # no whole word (a batch of empty or tiny packets): clipped reads need one word to read
            data = np.concatenate([data, np.zeros(4 - size, np.uint8)])
        buf = cls(None, size, words=False, lazy=lambda: data)
        # The raw words in memory order: ``take`` from a native array is the fast gather (a big-endian
        # array would be converted whole first); each gathered result is then read as big-endian.
        buf.be = data[: (data.size // 4) * 4].view(np.uint32)
        return buf

    @property
    def u8(self) -> U8:
        """The bytes of the batch (plus padding)."""
        if self._u8 is None:
            assert self._lazy is not None
            self._u8 = self._lazy()
        return self._u8

    def rd(self, off: I64) -> I64:
        """u32 at 4-aligned byte offsets (any offset without words), inside the batch plus < PAD."""
        if self.w is not None:
            return self.w.take(off >> 2)
        if self.be is not None:
            return self.be.take(np.minimum(off >> 2, self.be.size - 1)).view(">u4").astype(np.int64)
        return self._view(4)[off].view(">u4").astype(np.int64)

    def rd_clip(self, off: I64) -> I64:
        """Like :meth:`rd` for offsets that may lie anywhere (clipped; callers mask the result)."""
        return self.rd(np.clip(off, 0, self.size) & ~3)

    def _view(self, width: int) -> np.ndarray[Any, Any]:
        v = self._rows.get(width)
        if v is None:
            v = np.ndarray(
                shape=(self.u8.size - width + 1,),
                dtype=np.dtype((np.void, width)),
                buffer=self.u8,
                strides=(1,),
            )
            self._rows[width] = v
        return v

    def bytes(self, off: I64, width: int) -> U8:
        """(n, width) bytes starting at each offset (any alignment)."""
        return self._view(width)[off].view(np.uint8).reshape(-1, width)

    def block(self, off: I64, words: int) -> I64:
        """(n, words) consecutive big-endian u32 starting at each offset (any alignment), as int64."""
        return self._view(4 * words)[off].view(">u4").reshape(-1, words).astype(np.int64)


Block: TypeAlias = tuple[I64, I64, I64, I64]  # owner, body offset, tag, body length of the k-th elements


class Walk:
    """Elements found inside containers: owner container, ordinal, tag, body offset, body length.

    The walk finds elements one ordinal at a time, so it keeps them as ``blocks`` (block ``k`` holds the
    ``k``-th element of every container that has one, owners ascending). Callers that can work block by
    block (the record lookups of the fast decoder) avoid concatenating them; the flat arrays are built on
    first access.
    """

    __slots__ = ("_flat", "_ordinal", "blocks")

    def __init__(self, blocks: list[Block], ordinal: I64 | None = None) -> None:
        self.blocks = blocks
        self._ordinal = ordinal
        self._flat: dict[int, I64] = {}

    @classmethod
    def flat(cls, owner: I64, ordinal: I64, tag: I64, off: I64, length: I64) -> Walk:
        """A walk from flat arrays (one block; ``ordinal`` given explicitly)."""
        return cls([(owner, off, tag, length)], ordinal)

    def _cat(self, i: int) -> I64:
        if len(self.blocks) == 1:
            return self.blocks[0][i]
        v = self._flat.get(i)
        if v is None:
            v = self._flat[i] = np.concatenate([b[i] for b in self.blocks]) if self.blocks else _EMPTY
        return v

    @property
    def owner(self) -> I64:
        """Index of the container of each element."""
        return self._cat(0)

    @property
    def off(self) -> I64:
        """Byte offset of each element's body."""
        return self._cat(1)

    @property
    def tag(self) -> I64:
        """Tag of each element (enterprise << 12 | format)."""
        return self._cat(2)

    @property
    def length(self) -> I64:
        """Body length of each element."""
        return self._cat(3)

    @property
    def ordinal(self) -> I64:
        """Position of each element within its container."""
        if self._ordinal is None:
            sizes = [b[0].size for b in self.blocks]
            self._ordinal = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        return self._ordinal


_EMPTY = np.zeros(0, np.int64)


def walk(
    buf: Buffer,
    first: I64,
    count: I64,
    end: I64,
    bad: B1,
    *,
    by_owner: bool = False,
    head: tuple[I64, I64] | None = None,
) -> Walk:
    """Walk ``count[i]`` tag/length elements of container ``i`` starting at ``first[i]`` up to ``end[i]``.

    Containers whose elements overrun ``end``, whose lengths are not multiples of 4, or that hold fewer
    elements than they declare are set in ``bad`` (modified in place). Overrunning elements are not returned
    (so every returned body lies inside the buffer); other elements of bad containers are, for callers to
    filter. Each iteration works on compacted arrays of the containers still walking — and compacts nothing
    while every container still walks, the common case. Elements come in blocks by ordinal (all first
    elements, then all second ones...), or as one block grouped by owner (ascending, then ordinal) with
    ``by_owner``. ``head`` is the (tag, length) of every container's first element when the caller has
    read them already (with the container's fixed part).
    """
    active = (count > 0) & ~bad
    if active.all():
        idx: I64 = np.arange(count.size, dtype=np.int64)
        cur, en, cnt = first, end, count
    else:
        idx = np.flatnonzero(active)
        cur, en, cnt = first[idx], end[idx], count[idx]
    fits = cur + 8 <= en
    if head is not None and not (active.all() and fits.all()):
        head = None  # rows were dropped: read the first elements like the others
    if not fits.all():
        bad[idx[~fits]] = True
        idx, cur, en, cnt = idx[fits], cur[fits], en[fits], cnt[fits]
    blocks: list[Block] = []
    w = buf.w
    k = 0
    dropped = False
    en8 = en - 8
    while idx.size and k < _MAX_ELEMENTS:
        if head is not None:
            tag, ln = head
            head = None
        elif w is not None:  # 4-aligned words: two plain gathers beat one row gather
            wi = cur >> 2
            tag = w.take(wi)
            ln = w.take(wi + 1)
        elif buf.be is not None:
            wi = cur >> 2
            tag = buf.be.take(wi).view(">u4").astype(np.int64)  # cur + 8 <= end: inside the buffer
            ln = buf.be.take(wi + 1).view(">u4").astype(np.int64)
        else:
            tl = buf.block(cur, 2)
            tag = tl[:, 0]
            ln = tl[:, 1]
        k += 1
        body = cur + 8
        nxt = body + ln
        if by_owner:  # checked once on the flat arrays below (many short iterations)
            blocks.append((idx, body, tag, ln))
        else:
            ok = (nxt <= en) & ((ln & 3) == 0)
            if ok.all():
                blocks.append((idx, body, tag, ln))
            else:  # an element overruns its container or is misaligned: the container is bad, element dropped
                bad[idx[~ok]] = True
                dropped = True
                blocks.append((idx[ok], body[ok], tag[ok], ln[ok]))
        want = cnt > k
        more = want & (nxt <= en8)
        if more.all():
            cur = nxt
            continue
        short = want & ~more  # declares another element that does not fit: the container is short
        if short.any():
            bad[idx[short]] = True
        idx, cur, en, en8, cnt = idx[more], nxt[more], en[more], en8[more], cnt[more]
    if idx.size:  # stopped at the element cap: more elements declared than can exist
        bad[idx] = True
    if by_owner:
        res = Walk(blocks)
        owner, ordinal, tag_all, body_all, length = res.owner, res.ordinal, res.tag, res.off, res.length
        ok = (body_all + length <= end[owner]) & ((length & 3) == 0)
        if not ok.all():
            bad[owner[~ok]] = True
            dropped = True
            keep = np.flatnonzero(ok)
            owner, ordinal, tag_all, body_all, length = (
                owner[keep],
                ordinal[keep],
                tag_all[keep],
                body_all[keep],
                length[keep],
            )
        if k <= 1:
            return Walk.flat(owner, ordinal, tag_all, body_all, length)
        if dropped:
            order = np.argsort(owner, kind="stable")
        else:
            # Every container's elements are ordinals 0..found-1: its rows go to start[owner] + ordinal.
            found = np.bincount(owner, minlength=count.size)
            start = np.cumsum(found) - found
            order = np.empty(owner.size, np.int64)
            order[start[owner] + ordinal] = np.arange(owner.size, dtype=np.int64)
        return Walk.flat(owner[order], ordinal[order], tag_all[order], body_all[order], length[order])
    return Walk(blocks)


@dataclass
class Datagrams:
    """Datagram-level header fields of a batch (one entry per datagram)."""

    start: I64
    end: I64
    version: I64
    agent_type: I64
    agent_off: I64
    sub_agent: I64
    sequence: I64
    uptime: I64
    num_samples: I64
    first_sample: I64
    ok: B1  # sFlow v5 with a well-formed header (not necessarily well-formed samples)


def datagram_headers(buf: Buffer, start: I64, end: I64) -> Datagrams:
    """Read the fixed datagram header of every datagram (starts 4-aligned in ``buf``)."""
    version = buf.rd(start)
    agent_type = buf.rd(start + 4)
    alen = np.where(agent_type == 1, 4, 16)
    p = start + 8 + alen
    ok = (version == 5) & ((agent_type == 1) | (agent_type == 2)) & (p + 16 <= end) & (start + 8 <= end)
    return Datagrams(
        start=start,
        end=end,
        version=version,
        agent_type=agent_type,
        agent_off=start + 8,
        sub_agent=buf.rd(p),
        sequence=buf.rd(p + 4),
        uptime=buf.rd(p + 8),
        num_samples=np.where(ok, buf.rd(p + 12), 0),
        first_sample=p + 16,
        ok=ok,
    )


def ip4_mapped(word: npt.NDArray[Any]) -> U8:
    """(n, 16) IPv4-mapped IPv6 addresses from IPv4 addresses given as u32."""
    out = np.zeros((word.size, 4), ">u4")
    out[:, 2] = 0xFFFF
    out[:, 3] = word
    return out.view(np.uint8)


def ip6_bytes(buf: Buffer, off: I64) -> U8:
    """(n, 16) addresses at any offsets."""
    return buf.bytes(off, 16)


def be_bytes(words: npt.NDArray[np.uint32]) -> U8:
    """The network-order bytes of (n, k) u32 words, as (n, 4k)."""
    return words.astype(">u4").view(np.uint8)


def aligned_view(raw: U8, starts: I64, ends: I64) -> tuple[Buffer, I64, I64]:
    """A :class:`Buffer` in which every datagram starts 4-aligned, and the datagrams' offsets in it.

    Only the span of the batch is converted. When starts have mixed remainders modulo 4 (datagrams cut out of
    a pcap), the span is copied once per remainder present, each copy shifted so that its datagrams are
    aligned: a "virtual" buffer of at most 4 copies, cheaper than realigning datagram by datagram.
    """
    lo = int(starts.min()) & ~3
    hi = int(ends.max())
    rem = (starts - lo) & 3
    present = np.flatnonzero(np.bincount(rem, minlength=4))
    if present.size == 1 and present[0] == 0:
        return Buffer(raw[lo : hi + PAD], hi - lo), starts - lo, ends - lo
    seg = (hi - lo + 7) & ~3
    nseg = int(present.size)
    total = nseg * seg
    base = np.zeros(4, np.int64)
    # Byte copies (memcpy) first, then one conversion pass over aligned memory: cheaper than converting
    # words straight from the misaligned source, and the bytes are needed for the row reads anyway.
    out = np.empty(total + PAD, np.uint8)
    for k, r in enumerate(present.tolist()):
        part = raw[lo + r : lo + r + seg]
        out[k * seg : k * seg + part.size] = part
        out[k * seg + part.size : (k + 1) * seg] = 0
        base[r] = k * seg
    out[total:] = 0
    vstart = base[rem] + (starts - lo - rem)
    return Buffer(out, total), vstart, vstart + (ends - starts)


_TUNED = False


def tune_allocator() -> bool:
    """Keep freed batch-sized arrays in the heap instead of returning them to the kernel (glibc only).

    Each batch allocates a few MB of columns; with glibc's defaults those come from fresh ``mmap`` pages whose
    page faults cost as much as the decode itself. Raising the mmap/trim thresholds lets the next batch reuse
    the memory. Process-wide, so only entry points (the CLI, benchmarks) call it. Returns whether it applied.
    """
    global _TUNED
    if _TUNED:
        return True
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if not name:
            return False
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = bool(libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024))
        ok = bool(libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)) and ok
        ok = bool(libc.mallopt(m_top_pad, 64 * 1024 * 1024)) and ok
    except (OSError, AttributeError):
        return False
    _TUNED = ok
    return ok
