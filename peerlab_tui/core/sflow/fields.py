"""Field kinds of the sFlow field tables (scapy's model: a structure is a list of field objects).

Each field knows how to decode itself from a bounded view of the datagram, encode itself, describe itself
for the generated documentation, turn its value into JSON, and make a random value for round-trip tests.
Decoding checks every length and count against the bytes that remain *before* allocating anything, and
raises :class:`DecodeError` (caught by the decoder, never by the caller of ``decode_datagram``).
"""

from __future__ import annotations

import ipaddress
import random
import re
import socket
import struct
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

from peerlab_tui.core.errors import InputError
from peerlab_tui.core.sflow.model import Interface

if TYPE_CHECKING:
    from peerlab_tui.core.sflow.structures import Structure

_U32 = struct.Struct(">I")
#: Offsets of non-zero XDR padding seen while decoding the current datagram (set by the decoder).
padding_notes: ContextVar[list[int] | None] = ContextVar("sflow_padding_notes", default=None)
_U64 = struct.Struct(">Q")
_MAX_U32 = 0xFFFFFFFF


class DecodeError(Exception):
    """Malformed input at ``offset`` (internal: the decoder turns it into a DecodeIssue)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class EncodeError(InputError):
    """A value cannot be encoded by its field (wrong type, out of range)."""


def snake(name: str) -> str:
    """snake_case of a specification name (``ifInUcastPkts`` -> ``if_in_ucast_pkts``).

    A plural acronym stays one word: ``ipFragOKs`` -> ``ip_frag_oks``, ``MarkerPDUsRx`` -> ``marker_pdus_rx``.
    """
    s = re.sub(r"([A-Z]{2,})s(?=[A-Z0-9_]|$)", lambda m: m.group(1).capitalize() + "s", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    return s.lower()


def _note_padding(offset: int) -> None:
    notes = padding_notes.get()
    if notes is not None:
        notes.append(offset)


def pad4(n: int) -> int:
    """``n`` rounded up to a multiple of 4 (XDR padding)."""
    return (n + 3) & ~3


class Field:
    """Base of every field kind. ``size`` is the fixed wire size or None; ``min_size`` the smallest."""

    size: int | None = None
    min_size: int = 0
    code: str | None = None  # struct code when the field is a fixed scalar that can join a compiled run
    type_name: str = "?"

    def __init__(self, spec_name: str, doc: str = "", *, optional: bool = False, name: str | None = None):
        self.spec_name = spec_name
        self.name = name or snake(spec_name)
        self.doc = doc
        self.optional = optional

    # --- conversions used by compiled runs of fixed scalars -------------------------------------------
    def from_raw(self, raw: Any) -> Any:
        """Value from the unpacked struct item (identity for plain numbers)."""
        return raw

    def to_raw(self, value: Any) -> Any:
        """Struct item from the value (identity for plain numbers)."""
        return value

    # --- the four behaviours ----------------------------------------------------------------------------
    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:
        """Decode one value at ``off`` without reading past ``end``; return it and the next offset."""
        size = self.size
        assert size is not None and self.code is not None
        if off + size > end:
            raise DecodeError(f"{self.name}: needs {size} bytes, {end - off} left", off)
        return self.from_raw(struct.unpack_from(">" + self.code, data, off)[0]), off + size

    def encode(self, value: Any, out: bytearray) -> None:
        """Append the wire form of ``value``."""
        assert self.code is not None
        try:
            out += struct.pack(">" + self.code, self.to_raw(value))
        except (struct.error, TypeError, ValueError) as exc:
            raise EncodeError(f"{self.name}: cannot encode {value!r}: {exc}") from exc

    def default(self) -> Any:
        """The value used when an encoder input omits the field."""
        return 0

    def to_json(self, value: Any) -> Any:
        """JSON-ready form of a value."""
        return value

    def random_value(self, rnd: random.Random) -> Any:
        """A random valid value (round-trip tests derive their inputs from the tables through this)."""
        return rnd.getrandbits(32)

    def describe(self) -> str:
        """Wire type for the generated documentation."""
        return self.type_name


class U32(Field):
    """XDR ``unsigned int``."""

    size = min_size = 4
    code = "I"
    type_name = "u32"


class I32(Field):
    """XDR ``int``."""

    size = min_size = 4
    code = "i"
    type_name = "i32"

    def random_value(self, rnd: random.Random) -> Any:
        return rnd.randint(-(2**31), 2**31 - 1)


class U64(Field):
    """XDR ``unsigned hyper``."""

    size = min_size = 8
    code = "Q"
    type_name = "u64"

    def random_value(self, rnd: random.Random) -> Any:
        return rnd.getrandbits(64)


class F32(Field):
    """XDR ``float`` (IEEE-754 single)."""

    size = min_size = 4
    code = "f"
    type_name = "float"

    def default(self) -> Any:
        return 0.0

    def random_value(self, rnd: random.Random) -> Any:
        # Round through float32 so the value survives encoding exactly.
        return struct.unpack(">f", struct.pack(">f", rnd.uniform(-1e6, 1e6)))[0]


class F64(Field):
    """XDR ``double``."""

    size = min_size = 8
    code = "d"
    type_name = "double"

    def default(self) -> Any:
        return 0.0

    def random_value(self, rnd: random.Random) -> Any:
        return rnd.uniform(-1e12, 1e12)


class Enum(U32):
    """A u32 with named values; unknown values are kept as numbers. JSON adds ``<name>_name``."""

    type_name = "enum"

    def __init__(self, spec_name: str, names: Mapping[int, str], doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, doc, **kw)
        self.names = dict(names)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in list(self.names.items())[:12])
        more = ", ..." if len(self.names) > 12 else ""
        return f"enum u32 ({shown}{more})"

    def random_value(self, rnd: random.Random) -> Any:
        keys = list(self.names)
        return rnd.choice(keys) if keys and rnd.random() < 0.8 else rnd.getrandbits(32)


class SignedEnum(I32):
    """An i32 with named values (HTTP status is an int in sflow_http)."""

    type_name = "i32"


# Interfaces are immutable and an agent reports few distinct ones: sharing them saves a frozen-dataclass
# construction per interface per sample (bounded, so hostile input cannot grow it without limit).
_INTERFACES: dict[int, Interface] = {}
_INTERFACES_MAX = 4096


def compact_interface(raw: int) -> Interface:
    """The :class:`Interface` of a compact ``format << 30 | value`` word (shared instances)."""
    value = _INTERFACES.get(raw)
    if value is None:
        value = Interface(raw >> 30, raw & 0x3FFFFFFF)
        if len(_INTERFACES) < _INTERFACES_MAX:
            _INTERFACES[raw] = value
    return value


class InterfaceCompact(U32):
    """A compact interface: ``format << 30 | value`` decoded into :class:`Interface`."""

    type_name = "interface"

    def from_raw(self, raw: Any) -> Any:
        return compact_interface(raw)

    def to_raw(self, value: Any) -> Any:
        if isinstance(value, int):
            return value
        if not isinstance(value, Interface):
            raise EncodeError(f"{self.name}: expected Interface, got {value!r}")
        return value.to_compact()

    def default(self) -> Any:
        return Interface(0, 0)

    def to_json(self, value: Any) -> Any:
        return value.to_json()

    def random_value(self, rnd: random.Random) -> Any:
        return Interface(rnd.randrange(4), rnd.getrandbits(30))

    def describe(self) -> str:
        return "interface (u32: 2-bit format | 30-bit value)"


class IfIndex(U32):
    """A plain u32 ifIndex presented as a format-0 :class:`Interface` (discarded_packet in/out)."""

    type_name = "ifindex"

    def from_raw(self, raw: Any) -> Any:
        return Interface(0, raw)

    def to_raw(self, value: Any) -> Any:
        if isinstance(value, int):
            return value
        if not isinstance(value, Interface):
            raise EncodeError(f"{self.name}: expected Interface, got {value!r}")
        return value.value

    def default(self) -> Any:
        return Interface(0, 0)

    def to_json(self, value: Any) -> Any:
        return value.to_json()

    def random_value(self, rnd: random.Random) -> Any:
        return Interface(0, rnd.getrandbits(32))

    def describe(self) -> str:
        return "u32 ifIndex"


class SourceId(U32):
    """A compact sflow_data_source: type in the top byte, index in the low 24 bits -> (type, index)."""

    type_name = "source_id"

    def from_raw(self, raw: Any) -> Any:
        return (raw >> 24, raw & 0xFFFFFF)

    def to_raw(self, value: Any) -> Any:
        if isinstance(value, int):
            return value
        typ, index = value
        return ((typ & 0xFF) << 24) | (index & 0xFFFFFF)

    def default(self) -> Any:
        return (0, 0)

    def to_json(self, value: Any) -> Any:
        return {"type": value[0], "index": value[1]}

    def random_value(self, rnd: random.Random) -> Any:
        return (rnd.randrange(256), rnd.getrandbits(24))

    def describe(self) -> str:
        return "sflow_data_source (u32: 8-bit type | 24-bit index)"


class InterfaceExpanded(Field):
    """An expanded interface: ``format`` and ``value`` as two u32."""

    size = min_size = 8
    type_name = "interface_expanded"

    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:
        if off + 8 > end:
            raise DecodeError(f"{self.name}: needs 8 bytes, {end - off} left", off)
        fmt, value = struct.unpack_from(">II", data, off)
        return Interface(fmt, value), off + 8

    def encode(self, value: Any, out: bytearray) -> None:
        if not isinstance(value, Interface):
            raise EncodeError(f"{self.name}: expected Interface, got {value!r}")
        try:
            out += struct.pack(">II", value.format, value.value)
        except struct.error as exc:
            raise EncodeError(f"{self.name}: {exc}") from exc

    def default(self) -> Any:
        return Interface(0, 0)

    def to_json(self, value: Any) -> Any:
        return value.to_json()

    def random_value(self, rnd: random.Random) -> Any:
        return Interface(rnd.randrange(3), rnd.getrandbits(32))

    def describe(self) -> str:
        return "interface_expanded (u32 format, u32 value)"


class FixedOpaque(Field):
    """``opaque x[N]``: N bytes padded to 4; the value is bytes (JSON: hex)."""

    type_name = "opaque[N]"

    def __init__(self, spec_name: str, length: int, doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, doc, **kw)
        self.length = length
        self.size = self.min_size = pad4(length)

    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:
        size = self.size
        assert size is not None
        if off + size > end:
            raise DecodeError(f"{self.name}: needs {size} bytes, {end - off} left", off)
        if size != self.length and data[off + self.length : off + size].strip(b"\0"):
            _note_padding(off + self.length)
        return self.from_bytes(data[off : off + self.length]), off + size

    def from_bytes(self, raw: bytes) -> Any:
        return bytes(raw)

    def to_bytes(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray):
            raise EncodeError(f"{self.name}: expected bytes, got {type(value).__name__}")
        return bytes(value)

    def encode(self, value: Any, out: bytearray) -> None:
        raw = self.to_bytes(value)
        if len(raw) != self.length:
            raise EncodeError(f"{self.name}: needs exactly {self.length} bytes, got {len(raw)}")
        out += raw
        out += b"\0" * (pad4(self.length) - self.length)

    def default(self) -> Any:
        return self.from_bytes(b"\0" * self.length)

    def to_json(self, value: Any) -> Any:
        return value.hex() if isinstance(value, bytes) else value

    def random_value(self, rnd: random.Random) -> Any:
        return self.from_bytes(rnd.randbytes(self.length))

    def describe(self) -> str:
        return f"opaque[{self.length}]" + (
            f" (+{pad4(self.length) - self.length} pad)" if self.length % 4 else ""
        )


class Mac(FixedOpaque):
    """``mac`` = ``opaque[6]``: 6 bytes + 2 pad on the wire; the value is ``"aa:bb:cc:dd:ee:ff"``."""

    def __init__(self, spec_name: str, doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, 6, doc, **kw)

    def from_bytes(self, raw: bytes) -> Any:
        return ":".join(f"{b:02x}" for b in raw)

    def to_bytes(self, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        try:
            raw = bytes.fromhex(str(value).replace(":", "").replace("-", ""))
        except ValueError as exc:
            raise EncodeError(f"{self.name}: bad MAC {value!r}") from exc
        return raw

    def to_json(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "mac (opaque[6] + 2 pad)"


class _IPAddress(FixedOpaque):
    """A fixed-size IP address; the value is its text form. Subclasses name the address family."""

    address: ClassVar[type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]]
    spec_type: ClassVar[str]
    octets: ClassVar[int]

    def __init__(self, spec_name: str, doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, self.octets, doc, **kw)

    def from_bytes(self, raw: bytes) -> Any:
        return str(self.address(bytes(raw)))

    def to_bytes(self, value: Any) -> bytes:
        try:
            return self.address(value).packed
        except ValueError as exc:
            raise EncodeError(f"{self.name}: bad {self.address.__name__[:4]} address {value!r}") from exc

    def to_json(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return f"{self.spec_type} ({self.length} bytes)"


class IPv4(_IPAddress):
    """``ip_v4`` = 4 bytes; the value is the dotted string."""

    address = ipaddress.IPv4Address
    spec_type = "ip_v4"
    octets = 4


class IPv6(_IPAddress):
    """``ip_v6`` = 16 bytes; the value is the compressed string."""

    address = ipaddress.IPv6Address
    spec_type = "ip_v6"
    octets = 16


class UUID(FixedOpaque):
    """A fixed 16-byte UUID (host_descr); the value is the canonical string."""

    def __init__(self, spec_name: str, doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, 16, doc, **kw)

    def from_bytes(self, raw: bytes) -> Any:
        return str(uuid.UUID(bytes=bytes(raw)))

    def to_bytes(self, value: Any) -> bytes:
        try:
            return uuid.UUID(str(value)).bytes
        except ValueError as exc:
            raise EncodeError(f"{self.name}: bad UUID {value!r}") from exc

    def to_json(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "uuid (opaque[16], no length word)"


class NulString(FixedOpaque):
    """A fixed-size ASCII field padded with NULs (pmacct class); value: the text before the first NUL."""

    def from_bytes(self, raw: bytes) -> Any:
        return bytes(raw).split(b"\0", 1)[0].decode("latin-1")

    def to_bytes(self, value: Any) -> bytes:
        raw = str(value).encode("latin-1", "replace")[: self.length]
        return raw + b"\0" * (self.length - len(raw))

    def to_json(self, value: Any) -> Any:
        return value

    def random_value(self, rnd: random.Random) -> Any:
        return "".join(rnd.choice("abcdefghijklmnop") for _ in range(rnd.randrange(self.length)))

    def describe(self) -> str:
        return f"char[{self.length}] (NUL padded)"


class Address(Field):
    """XDR ``address`` union: u32 type (0 unknown, 1 IPv4, 2 IPv6) + 0/4/16 bytes; value str or None."""

    min_size = 4
    type_name = "address"

    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:
        if off + 4 > end:
            raise DecodeError(f"{self.name}: needs 4 bytes, {end - off} left", off)
        (typ,) = _U32.unpack_from(data, off)
        if typ == 1:
            if off + 8 > end:
                raise DecodeError(f"{self.name}: IPv4 address truncated", off)
            # inet_ntop gives str(IPv4Address) ten times faster (the agent of every datagram is one)
            return socket.inet_ntop(socket.AF_INET, data[off + 4 : off + 8]), off + 8
        if typ == 2:
            if off + 20 > end:
                raise DecodeError(f"{self.name}: IPv6 address truncated", off)
            return str(ipaddress.IPv6Address(data[off + 4 : off + 20])), off + 20
        if typ == 0:
            return None, off + 4
        raise DecodeError(f"{self.name}: unknown address type {typ}", off)

    def encode(self, value: Any, out: bytearray) -> None:
        out += encode_address(value, self.name)

    def default(self) -> Any:
        return None

    def random_value(self, rnd: random.Random) -> Any:
        pick = rnd.randrange(3)
        if pick == 0:
            return None
        if pick == 1:
            return str(ipaddress.IPv4Address(rnd.getrandbits(32)))
        return str(ipaddress.IPv6Address(rnd.getrandbits(128)))

    def describe(self) -> str:
        return "address (u32 type 0/1/2 + nothing / ip_v4 / ip_v6)"


def encode_address(value: Any, name: str = "address") -> bytes:
    """Wire form of an address union (None or "" = UNKNOWN)."""
    if value is None or value == "":
        return b"\0\0\0\0"
    try:
        addr = ipaddress.ip_address(value)
    except ValueError as exc:
        raise EncodeError(f"{name}: bad address {value!r}") from exc
    return (b"\0\0\0\1" if addr.version == 4 else b"\0\0\0\2") + addr.packed


class Opaque(Field):
    """``opaque x<>``: u32 length + bytes + pad to 4; the value is bytes (JSON: hex)."""

    min_size = 4
    type_name = "opaque<>"

    def __init__(self, spec_name: str, doc: str = "", *, max_len: int | None = None, **kw: Any) -> None:
        super().__init__(spec_name, doc, **kw)
        self.max_len = max_len  # advisory: never enforced when decoding

    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:
        if off + 4 > end:
            raise DecodeError(f"{self.name}: length word truncated", off)
        (n,) = _U32.unpack_from(data, off)
        if n > end - off - 4:
            raise DecodeError(f"{self.name}: length {n} exceeds the {end - off - 4} bytes left", off)
        stop = off + 4 + n
        nxt = off + 4 + pad4(n)
        if nxt > end:  # XDR padding missing at the very end of the record: tolerate, keep the bytes
            nxt = end
        elif nxt != stop and data[stop:nxt].strip(b"\0"):
            _note_padding(stop)
        return self.from_bytes(data[off + 4 : stop]), nxt

    def from_bytes(self, raw: bytes) -> Any:
        return bytes(raw)

    def to_bytes(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray):
            raise EncodeError(f"{self.name}: expected bytes, got {type(value).__name__}")
        return bytes(value)

    def encode(self, value: Any, out: bytearray) -> None:
        raw = self.to_bytes(value)
        out += _U32.pack(len(raw))
        out += raw
        out += b"\0" * (pad4(len(raw)) - len(raw))

    def default(self) -> Any:
        return self.from_bytes(b"")

    def to_json(self, value: Any) -> Any:
        return value.hex()

    def random_value(self, rnd: random.Random) -> Any:
        return rnd.randbytes(rnd.randrange((self.max_len or 40) + 1))

    def describe(self) -> str:
        return "opaque<" + (str(self.max_len) if self.max_len else "") + ">"


class String(Opaque):
    """``string x<N>``: like opaque; the value is str (UTF-8, undecodable bytes kept by surrogateescape)."""

    type_name = "string"

    def from_bytes(self, raw: bytes) -> Any:
        return bytes(raw).decode("utf-8", "surrogateescape")

    def to_bytes(self, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if not isinstance(value, str):
            raise EncodeError(f"{self.name}: expected str, got {type(value).__name__}")
        return value.encode("utf-8", "surrogateescape")

    def to_json(self, value: Any) -> Any:
        return value

    def random_value(self, rnd: random.Random) -> Any:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_./ é"
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(min(self.max_len or 24, 24) + 1)))

    def describe(self) -> str:
        return "string<" + (str(self.max_len) if self.max_len else "") + ">"


class Array(Field):
    """``T x<>``: u32 count + count elements (a scalar field or a sub-structure). Value: list."""

    min_size = 4
    type_name = "array"

    def __init__(self, spec_name: str, element: Field | Structure, doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, doc, **kw)
        self.element = element

    def _element_min(self) -> int:
        return max(1, self.element.min_size)

    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:
        if off + 4 > end:
            raise DecodeError(f"{self.name}: count word truncated", off)
        (count,) = _U32.unpack_from(data, off)
        off += 4
        # Check the count against the bytes left BEFORE building anything (no huge allocations).
        if count * self._element_min() > end - off:
            raise DecodeError(
                f"{self.name}: count {count} needs at least {count * self._element_min()} bytes, "
                f"{end - off} left",
                off - 4,
            )
        element = self.element
        items: list[Any] = []
        code = getattr(element, "code", None)
        if isinstance(element, Field) and code is not None and element.size:
            raw = struct.unpack_from(f">{count}{code}", data, off)
            off += count * element.size
            return [element.from_raw(v) for v in raw], off
        for _ in range(count):
            value, off = element.decode(data, off, end)
            items.append(value)
        return items, off

    def encode(self, value: Any, out: bytearray) -> None:
        if not isinstance(value, list | tuple):
            raise EncodeError(f"{self.name}: expected a list, got {type(value).__name__}")
        out += _U32.pack(len(value))
        for item in value:
            self.element.encode(item, out)

    def default(self) -> Any:
        return []

    def to_json(self, value: Any) -> Any:
        return [self.element.to_json(v) for v in value]

    def random_value(self, rnd: random.Random) -> Any:
        return [self.element.random_value(rnd) for _ in range(rnd.randrange(4))]

    def describe(self) -> str:
        inner = self.element.describe()
        return f"{inner}<> (u32 count + elements)"


class Struct(Field):
    """An embedded sub-structure (e.g. the sampled_ethernet inside a tunnel record). Value: dict."""

    type_name = "struct"

    def __init__(self, spec_name: str, structure: Structure, doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, doc, **kw)
        self.structure = structure
        self.min_size = structure.min_size

    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:
        return self.structure.decode(data, off, end)

    def encode(self, value: Any, out: bytearray) -> None:
        self.structure.encode(value, out)

    def default(self) -> Any:
        return self.structure.defaults()

    def to_json(self, value: Any) -> Any:
        return self.structure.to_json(value)

    def random_value(self, rnd: random.Random) -> Any:
        return self.structure.random_value(rnd)

    def describe(self) -> str:
        return f"struct {self.structure.name}"


class Switch(Field):
    """A discriminated union whose arm is chosen by an earlier field ``on`` of the same structure."""

    min_size = 0
    type_name = "union"

    def __init__(self, spec_name: str, on: str, cases: Mapping[int, Field], doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, doc, **kw)
        self.on = on
        self.cases = dict(cases)

    def arm(self, selector: Any, off: int) -> Field:
        """The field of the arm for ``selector`` (DecodeError when the union has no such arm)."""
        try:
            return self.cases[selector]
        except KeyError:
            raise DecodeError(f"{self.name}: unknown {self.on} {selector}", off) from None

    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:  # pragma: no cover - via Structure
        raise DecodeError(f"{self.name}: union decoded outside its structure", off)

    def encode(self, value: Any, out: bytearray) -> None:  # pragma: no cover - via Structure
        raise EncodeError(f"{self.name}: union encoded outside its structure")

    def describe(self) -> str:
        arms = "; ".join(f"{k}: {f.describe()}" for k, f in self.cases.items())
        return f"union on {self.on} ({arms})"


class Nested(Field):
    """A field decoded by a callback of the decoder (flow/counter record lists, an encapsulated sample).

    The callbacks are installed by :mod:`peerlab_tui.core.sflow.decoder` and ``encoder`` (they need the
    record registry, which would otherwise be a circular import).
    """

    min_size = 4
    type_name = "nested"
    decoders: dict[str, Callable[..., tuple[Any, int]]] = {}
    encoders: dict[str, Callable[[Any, bytearray], None]] = {}
    jsonners: dict[str, Callable[[Any], Any]] = {}

    def __init__(self, spec_name: str, what: str, doc: str = "", **kw: Any) -> None:
        super().__init__(spec_name, doc, **kw)
        self.what = what  # "flow_records", "counter_records" or "sample"
        self.min_size = 8 if what == "sample" else 4

    def decode(self, data: bytes, off: int, end: int) -> tuple[Any, int]:
        return Nested.decoders[self.what](data, off, end)

    def encode(self, value: Any, out: bytearray) -> None:
        Nested.encoders[self.what](value, out)

    def default(self) -> Any:
        return None if self.what == "sample" else []

    def to_json(self, value: Any) -> Any:
        return Nested.jsonners[self.what](value)

    def random_value(self, rnd: random.Random) -> Any:
        return None if self.what == "sample" else []

    def describe(self) -> str:
        if self.what == "sample":
            return "sample_record (data_format, length, sample_data)"
        kind = "flow" if self.what == "flow_records" else "counter"
        return f"{kind}_record<> (u32 count; each: data_format, length, {kind}_data)"


def max_u32(value: int) -> bool:
    """True when ``value`` is the 'unknown' marker of a u32 counter."""
    return value == _MAX_U32
