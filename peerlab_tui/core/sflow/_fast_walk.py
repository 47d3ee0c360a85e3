"""Vectorised XDR structure walk shared by the fast decoder (``fast.py``) and the counter (``count.py``).

A batch is one contiguous byte buffer plus the start and end offset of each datagram. XDR keeps every field
4-aligned relative to the start of its datagram, so when every datagram starts at a multiple of 4 in the
buffer, single u32 reads are plain gathers from the batch converted once to native words
(``w[offset >> 2]``). When starts have mixed remainders (datagrams cut out of a pcap), :func:`aligned_view`
lays the span out once per remainder so that every datagram is aligned in one "virtual" buffer. Multi-word
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
from typing import Any

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

    ``w[o >> 2]`` is the big-endian u32 at a 4-aligned byte offset ``o``, already in native order (one
    conversion pass over the batch). Wider reads at any offset — several XDR words at once, or the 2-aligned
    fields of Ethernet frames inside sampled headers — are single gathers of fixed-width rows of a
    byte-strided
    ``void`` view (``block``/``bytes``), far cheaper than one gather per word. Reads rely on the padding: a
    caller reads only at a validated base offset (inside the batch) plus a constant smaller than ``PAD``.
    """

    __slots__ = ("_lazy", "_rows", "_u8", "size", "w")

    def __init__(
        self,
        data: U8 | None,
        size: int,
        *,
        words: bool = True,
        w: npt.NDArray[np.uint32] | None = None,
        lazy: Callable[[], U8] | None = None,
    ) -> None:
        if data is not None and data.size < size + PAD:
            padded = np.zeros(size + PAD, np.uint8)
            padded[:size] = data[:size]
            data = padded
        self.size = size
        self._u8 = data
        self._lazy = lazy  # builds the bytes on first use when only the words were made (aligned_view)
        self._rows: dict[int, np.ndarray[Any, Any]] = {}
        # Without ``words`` (a walk that reads few words per datagram, such as counting) single words are read
        # with the byte-strided view too, at any alignment, and the batch needs no conversion pass at all.
        self.w: npt.NDArray[np.uint32] | None = w
        if w is None and words and data is not None:
            n4 = (min(data.size, size + PAD) // 4) * 4
            self.w = data[:n4].view(">u4").astype(np.uint32)

    @property
    def u8(self) -> U8:
        """The bytes of the batch (plus padding)."""
        if self._u8 is None:
            assert self._lazy is not None
            self._u8 = self._lazy()
        return self._u8

    def rd(self, off: I64) -> npt.NDArray[np.uint32]:
        """u32 at 4-aligned byte offsets (any offset without words), inside the batch plus < PAD."""
        if self.w is None:
            return self._view(4)[off].view(">u4").astype(np.uint32)
        return self.w[off >> 2]

    def rd_clip(self, off: I64) -> npt.NDArray[np.uint32]:
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

    def block(self, off: I64, words: int) -> npt.NDArray[np.uint32]:
        """(n, words) consecutive big-endian u32 starting at each offset (any alignment), native order."""
        return self._view(4 * words)[off].view(">u4").reshape(-1, words).astype(np.uint32)


@dataclass
class Walk:
    """Elements found inside containers: owner container, ordinal, tag, body offset, body length."""

    owner: I64
    ordinal: I64
    tag: I64
    off: I64
    length: I64


def walk(buf: Buffer, first: I64, count: I64, end: I64, bad: B1) -> Walk:
    """Walk ``count[i]`` tag/length elements of container ``i`` starting at ``first[i]`` up to ``end[i]``.

    Containers whose elements overrun ``end``, whose lengths are not multiples of 4, or that hold fewer
    elements than they declare are set in ``bad`` (modified in place). Overrunning elements are not returned
    (so every returned body lies inside the buffer); other elements of bad containers are, for callers to
    filter. Each iteration works on compacted arrays of the containers still walking: no scatter, and all
    checks but the one that decides whether to read on are done once, after the loop.
    """
    idx = np.flatnonzero((count > 0) & ~bad)
    cur = first[idx]
    en = end[idx]
    cnt = count[idx]
    fits = cur + 8 <= en
    if not fits.all():
        bad[idx[~fits]] = True
        idx, cur, en, cnt = idx[fits], cur[fits], en[fits], cnt[fits]
    owners: list[I64] = []
    heads: list[I64] = []
    tags: list[npt.NDArray[Any]] = []
    lens: list[npt.NDArray[Any]] = []
    w = buf.w
    k = 0
    while idx.size and k < _MAX_ELEMENTS:
        if w is not None:  # 4-aligned words: two plain gathers beat one row gather
            wi = cur >> 2
            tag = w[wi]
            ln = w[wi + 1]
        else:
            tl = buf.block(cur, 2)
            tag = tl[:, 0]
            ln = tl[:, 1]
        owners.append(idx)
        heads.append(cur)
        tags.append(tag)
        lens.append(ln)
        k += 1
        nxt = cur + 8 + ln
        more = (cnt > k) & (nxt + 8 <= en)
        idx, cur, en, cnt = idx[more], nxt[more], en[more], cnt[more]
    if not owners:
        e = np.zeros(0, np.int64)
        return Walk(e, e, e, e, e)
    owner = np.concatenate(owners)
    ordinal = np.repeat(np.arange(k, dtype=np.int64), [o.size for o in owners])
    body = np.concatenate(heads) + 8
    length = np.concatenate(lens).astype(np.int64)
    tag_all = np.concatenate(tags).astype(np.int64)
    ok = (body + length <= end[owner]) & ((length & 3) == 0)
    found = np.bincount(owner, minlength=count.size)
    short = (found > 0) & (found < count)
    if short.any():  # a container that ended before its declared count
        bad[short] = True
    if not ok.all():
        bad[owner[~ok]] = True
        keep = np.flatnonzero(ok)
        owner, ordinal, tag_all, body, length = (
            owner[keep],
            ordinal[keep],
            tag_all[keep],
            body[keep],
            length[keep],
        )
    return Walk(owner, ordinal, tag_all, body, length)


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
    version = buf.rd(start).astype(np.int64)
    agent_type = buf.rd(start + 4).astype(np.int64)
    alen = np.where(agent_type == 1, 4, 16)
    p = start + 8 + alen
    ok = (version == 5) & ((agent_type == 1) | (agent_type == 2)) & (p + 16 <= end) & (start + 8 <= end)
    return Datagrams(
        start=start,
        end=end,
        version=version,
        agent_type=agent_type,
        agent_off=start + 8,
        sub_agent=buf.rd(p).astype(np.int64),
        sequence=buf.rd(p + 4).astype(np.int64),
        uptime=buf.rd(p + 8).astype(np.int64),
        num_samples=np.where(ok, buf.rd(p + 12), 0).astype(np.int64),
        first_sample=p + 16,
        ok=ok,
    )


def ip4_mapped(word: npt.NDArray[np.uint32]) -> U8:
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
    a pcap), the span is laid out once per remainder present, each copy shifted so that its datagrams are
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
    base = np.zeros(4, np.int64)
    # The words of each shifted copy are converted straight from the source bytes (one pass per remainder);
    # the shifted byte copies are only made if a caller reads bytes (the fast decoder does, counting not).
    words = np.zeros((nseg * seg + PAD) // 4, np.uint32)
    for k, r in enumerate(present.tolist()):
        part = raw[lo + r : lo + r + seg]
        m4 = part.size // 4
        words[k * seg // 4 : k * seg // 4 + m4] = part[: m4 * 4].view(">u4")
        if part.size > m4 * 4:  # a ragged end of the source: finish the last word by hand
            tail = np.zeros(4, np.uint8)
            tail[: part.size - m4 * 4] = part[m4 * 4 :]
            words[k * seg // 4 + m4] = tail.view(">u4")[0]
        base[r] = k * seg

    def shifted_bytes() -> U8:
        out = np.zeros(nseg * seg + PAD, np.uint8)
        for k, r in enumerate(present.tolist()):
            part = raw[lo + r : lo + r + seg]
            out[k * seg : k * seg + part.size] = part
        return out

    vstart = base[rem] + (starts - lo - rem)
    buf = Buffer(None, nseg * seg, w=words, lazy=shifted_bytes)
    return buf, vstart, vstart + (ends - starts)


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
