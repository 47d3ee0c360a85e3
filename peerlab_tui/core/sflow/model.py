"""Decoded sFlow v5 values: datagram, sample, record, interface, issue (plain dataclasses with slots).

These are the objects :func:`peerlab_tui.core.sflow.decode_datagram` returns and
:func:`peerlab_tui.core.sflow.encode_datagram` accepts. They carry no behaviour beyond small helpers, so the
fast path, the aggregator and the CLI can build or read them freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Interface formats (top two bits of a compact interface, or the first word of an expanded one).
IF_FORMAT_IFINDEX = 0
IF_FORMAT_DISCARD = 1
IF_FORMAT_MULTIPLE = 2
IF_INTERNAL = 0x3FFFFFFF  # "the device itself" (format 0, maximum value)


@dataclass(frozen=True, slots=True)
class Interface:
    """An input/output interface value of a flow sample (compact ``format<<30 | value`` or expanded pair).

    ``kind`` is one of ``unknown`` (format 0, value 0), ``internal`` (format 0, 0x3FFFFFFF: the packet
    originates or terminates in the device), ``ifindex``, ``discard`` (value is a drop-reason code),
    ``multiple`` (value is the number of output interfaces, 0 = unknown number > 1) and ``reserved``
    (format 3, undefined by the spec; the value is kept).
    """

    format: int
    value: int

    @property
    def kind(self) -> str:
        """The interface encoding by name (see the class docstring)."""
        if self.format == IF_FORMAT_IFINDEX:
            if self.value == 0:
                return "unknown"
            if self.value == IF_INTERNAL:
                return "internal"
            return "ifindex"
        if self.format == IF_FORMAT_DISCARD:
            return "discard"
        if self.format == IF_FORMAT_MULTIPLE:
            return "multiple"
        return "reserved"

    @property
    def ifindex(self) -> int | None:
        """The ifIndex when this is a single known interface, else None."""
        return self.value if self.kind == "ifindex" else None

    @property
    def reason_name(self) -> str | None:
        """The drop-reason name when this is a discard, else None (unknown codes give ``None``)."""
        if self.format != IF_FORMAT_DISCARD:
            return None
        from peerlab_tui.core.sflow.structures import DROP_REASONS

        return DROP_REASONS.get(self.value)

    @classmethod
    def from_compact(cls, word: int) -> Interface:
        """Decode the 32-bit compact encoding."""
        return cls(word >> 30, word & IF_INTERNAL)

    def to_compact(self) -> int:
        """The 32-bit compact encoding (the value is masked to 30 bits)."""
        return ((self.format & 3) << 30) | (self.value & IF_INTERNAL)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: kind, format, value and, for discards, the reason name."""
        out: dict[str, Any] = {"kind": self.kind, "format": self.format, "value": self.value}
        if self.format == IF_FORMAT_DISCARD:
            out["reason_name"] = self.reason_name
        return out


@dataclass(frozen=True, slots=True)
class DecodeIssue:
    """Something wrong in the input, with the byte offset (from the datagram start) where it was found."""

    offset: int
    message: str

    def __str__(self) -> str:
        return f"@{self.offset}: {self.message}"


@dataclass(slots=True)
class Record:
    """One flow or counter record (``kind`` is ``"flow"`` or ``"counter"``; discard records are ``"flow"``).

    ``fields`` holds the decoded values keyed by the snake_case names of the field tables (see
    ``python -m peerlab_tui.core.sflow.structures --markdown``). ``raw`` is the body of an unknown tag or of
    a record that failed to decode (``issue`` then says why). ``tail`` keeps bytes after the known fields
    (agents extend structures at the end) so re-encoding is byte-identical.
    """

    kind: str
    enterprise: int
    format: int
    name: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    issue: str | None = None
    offset: int = field(default=0, compare=False)  # where it was found: not part of the value
    tail: bytes = b""

    @property
    def tag(self) -> str:
        """``"enterprise:format"``, the key used by counts and JSON."""
        return f"{self.enterprise}:{self.format}"


# The fixed header fields every sample type may carry (the attributes of Sample below, not record fields).
SAMPLE_HEADER_ATTRS = (
    "sequence_number",
    "sampling_rate",
    "sample_pool",
    "drops",
    "input",
    "output",
    "source_id_type",
    "source_id_index",
)


@dataclass(slots=True)
class Sample:
    """One sample of a datagram.

    The common header fields are attributes (None where the sample type has no such field): flow samples
    (0:1, 0:3) fill all of them; counter samples (0:2, 0:4) only sequence_number and source_id_*; discarded
    packets (0:5) add ``reason``/``reason_name`` and keep drops/input/output (input/output as ifIndex
    interfaces); sFlow-RT rtflow (4300:1003) has sampling_rate and sample_pool. Other sample-level values
    (rtmetric/rtflow ``datasource`` and lists, Foundry ``flags``/``group_id``) are in ``fields``. The Foundry
    wrapper 1991:1 carries its encapsulated sample in ``inner``. ``raw`` is the body of an unknown sample type
    or of a sample that failed to decode.
    """

    enterprise: int
    format: int
    name: str = ""
    sequence_number: int | None = None
    source_id_type: int | None = None
    source_id_index: int | None = None
    sampling_rate: int | None = None
    sample_pool: int | None = None
    drops: int | None = None
    input: Interface | None = None
    output: Interface | None = None
    reason: int | None = None
    reason_name: str | None = None
    records: list[Record] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    inner: Sample | None = None
    raw: bytes | None = None
    issue: str | None = None
    offset: int = field(default=0, compare=False)
    tail: bytes = b""

    @property
    def tag(self) -> str:
        """``"enterprise:format"``, the key used by counts and JSON."""
        return f"{self.enterprise}:{self.format}"

    @property
    def expanded(self) -> bool:
        """True for the expanded encodings (0:3, 0:4)."""
        return self.enterprise == 0 and self.format in (3, 4)


@dataclass(slots=True)
class Datagram:
    """One sFlow v5 datagram.

    ``ok`` is False when the bytes are not a decodable sFlow v5 datagram (wrong version such as NetFlow,
    header truncated, bad agent address type); then only ``version`` and ``issues`` are meaningful.
    ``issues`` lists every problem found inside (bad records, overrunning samples, trailing bytes) with
    byte offsets; ``trailing`` keeps the bytes after the declared samples so re-encoding is identical.
    """

    version: int = 5
    agent_address: str = "0.0.0.0"
    sub_agent_id: int = 0
    sequence_number: int = 0
    uptime_ms: int = 0
    samples: list[Sample] = field(default_factory=list)
    issues: list[DecodeIssue] = field(default_factory=list)
    ok: bool = True
    num_samples: int | None = None
    trailing: bytes = b""
