"""Wire models shared by the gateway service (``lab.gateway``) and its client (``peerlab_tui.core.gateway``).

The user API keeps the paths, status codes and JSON fields of nxthdr's PeerLab Gateway, so the client
works against that platform too. Times are RFC 3339 strings on the wire (timezone-aware datetimes here).
Error bodies are ``{"error": <HTTP status as int>, "message": str}`` as in nxthdr's gateway, plus our
machine-readable ``reason`` (see :class:`ErrorReason`), which clients must treat as optional.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WireModel(BaseModel):
    """Base of every wire model: unknown fields from newer servers are ignored, never an error."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ErrorReason(StrEnum):
    """Machine-readable error reasons in the ``reason`` field of an error body."""

    BAD_REQUEST = "bad_request"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NO_ASN = "no_asn"
    BAD_DURATION = "bad_duration"
    LEASE_LIMIT = "lease_limit"
    LIFETIME_EXCEEDED = "lifetime_exceeded"
    POOL_EXHAUSTED = "pool_exhausted"
    ASN_EXHAUSTED = "asn_exhausted"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INTERNAL = "internal"


class ErrorBody(WireModel):
    """The JSON body of every error response."""

    error: int
    message: str
    reason: ErrorReason | None = None


def normalize_ipv6_prefix(value: str) -> str:
    """Return the canonical text of an IPv6 CIDR prefix, or raise ``ValueError`` with a clear message.

    Host bits must be zero: ``2001:db8::1/48`` is rejected rather than silently truncated.
    """
    try:
        net = ipaddress.IPv6Network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an IPv6 prefix in CIDR form (e.g. 2001:db8:100::/48): {exc}"
        ) from exc
    return str(net)


# --- user API ----------------------------------------------------------------------------------------------


class Lease(WireModel):
    """An active prefix lease as listed in ``GET /api/user/info``."""

    prefix: str
    start_time: datetime
    end_time: datetime
    rpki_enabled: bool = False


class UserInfo(WireModel):
    """``GET /api/user/info``."""

    user_hash: str
    asn: int | None = None
    max_leases: int | None = None
    active_leases: list[Lease] = Field(default_factory=list)


class AsnResponse(WireModel):
    """``POST /api/user/asn``: sticky and idempotent."""

    asn: int
    message: str


class DurationRequest(WireModel):
    """Body of ``POST /api/user/prefix`` and ``POST /api/user/prefix/{prefix}/renew``."""

    duration_hours: int


class PrefixResponse(WireModel):
    """``POST /api/user/prefix`` and ``POST /api/user/prefix/{prefix}/renew``."""

    prefix: str
    start_time: datetime
    end_time: datetime
    rpki_enabled: bool = False
    message: str


LeaseState = Literal["active", "expired", "released"]


class LeaseRecord(WireModel):
    """One lease in ``GET /api/user/leases`` (with ``?history=true`` also ended ones)."""

    prefix: str
    start_time: datetime
    end_time: datetime
    released_at: datetime | None = None
    state: LeaseState
    rpki_enabled: bool = False


class LeaseList(WireModel):
    """``GET /api/user/leases``."""

    leases: list[LeaseRecord]


# --- admin API ---------------------------------------------------------------------------------------------


class CreateUserRequest(WireModel):
    """``POST /admin/users``."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    max_leases: int | None = Field(default=None, ge=0, le=1000)


class CreatedUser(WireModel):
    """Answer to ``POST /admin/users`` (201). The token is shown only here, once."""

    name: str
    user_hash: str
    token: str


class UserSummary(WireModel):
    """One user in ``GET /admin/users``."""

    name: str
    user_hash: str
    asn: int | None = None
    max_leases: int
    active_leases: int
    created_at: datetime


class UserList(WireModel):
    """``GET /admin/users``."""

    users: list[UserSummary]


class SetMaxLeasesRequest(WireModel):
    """``PUT /admin/users/{name}/max-leases``."""

    max_leases: int = Field(ge=0, le=1000)


ServiceScope = Literal["mappings:read", "routes:write", "tunnels:read"]


class CreateServiceTokenRequest(WireModel):
    """``POST /admin/service-tokens``."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    scopes: list[ServiceScope] = Field(min_length=1)


class CreatedServiceToken(WireModel):
    """Answer to ``POST /admin/service-tokens`` (201). The token is shown only here, once."""

    name: str
    scopes: list[str]
    token: str


# --- service API -------------------------------------------------------------------------------------------


class Mapping(WireModel):
    """One user in ``GET /service/mappings``: the ASN and the prefixes of the user's active leases."""

    user_hash: str
    user_id: str
    asn: int
    prefixes: list[str]


class MappingList(WireModel):
    """``GET /service/mappings`` (with an ETag; ``304`` on a matching ``If-None-Match``)."""

    mappings: list[Mapping]


# --- overlay (IXP lab issue) -------------------------------------------------------------------------------


def canonical_wireguard_key(value: str) -> str:
    """The canonical base64 text of a 32-byte WireGuard key, or ``ValueError``.

    Base64 admits several spellings of the same bytes (non-zero padding bits). Keys are compared as text
    (database uniqueness, peer diffs), so every key is re-encoded: otherwise another spelling of a victim's
    key would pass the uniqueness check and hijack the victim's peer on the route servers.
    """
    import base64
    import binascii

    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public_key must be a base64 WireGuard key") from exc
    if len(raw) != 32:
        raise ValueError("public_key must decode to 32 bytes")
    return base64.b64encode(raw).decode()


class TunnelRequest(WireModel):
    """``POST /api/user/tunnel``: register or rotate the user's WireGuard public key (base64, 32 bytes)."""

    public_key: str = Field(max_length=64)

    @field_validator("public_key")
    @classmethod
    def _check_key(cls, v: str) -> str:
        return canonical_wireguard_key(v)


class RouteServerPeer(WireModel):
    """A route server as seen by a user's tunnel: where to connect and whom to peer with."""

    name: str
    public_key: str
    endpoint: str  # "[addr]:port" or "host:port" of the route server's WireGuard listener
    overlay_address: str  # the route server's address inside the overlay
    bgp_neighbor: str  # the address the user's BGP speaker connects to
    asn: int
    # The user's own address (CIDR) on this route server's overlay link; one of TunnelInfo.addresses.
    local_address: str | None = None


class TunnelInfo(WireModel):
    """``GET``/``POST /api/user/tunnel``."""

    addresses: list[str]  # the user's overlay addresses (CIDR)
    asn: int
    route_servers: list[RouteServerPeer]


class TunnelPeer(WireModel):
    """One user's registered key, for the route-server agent (``GET /service/tunnels``)."""

    user_hash: str
    public_key: str
    addresses: list[str]


class TunnelPeerList(WireModel):
    """``GET /service/tunnels``."""

    peers: list[TunnelPeer]


# --- looking glass (IXP lab issue) -------------------------------------------------------------------------


RouteState = Literal["accepted", "filtered"]


U32_MAX = 2**32 - 1


def _check_community(value: str, parts: int, part_max: int) -> str:
    items = value.split(":")
    if len(items) != parts or not all(i.isdigit() and int(i) <= part_max for i in items):
        shape = ":".join("ABC"[:parts])
        raise ValueError(f"{value[:40]!r} is not a community of the form {shape} (each part 0-{part_max})")
    return value


class RouteVerdict(WireModel):
    """A route as one route server sees it, with its verdict (``GET /api/user/routes``).

    Bounded on every field: a route report comes from a route server over the network, and a bad one must
    get a clear 400, never a 500 or an oversized row.
    """

    rs: str = Field(min_length=1, max_length=64)
    prefix: str = Field(max_length=64)
    as_path: list[Annotated[int, Field(ge=0, le=U32_MAX)]] = Field(max_length=255)
    communities: list[str] = Field(default_factory=list, max_length=1024)  # "A:B"
    large_communities: list[str] = Field(default_factory=list, max_length=1024)  # "A:B:C"
    med: int | None = Field(default=None, ge=0, le=U32_MAX)
    state: RouteState
    reason: str | None = Field(default=None, max_length=1000)  # human explanation of a filtered route
    rule: str | None = Field(default=None, max_length=64)  # machine-readable name of the filtering rule

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        return normalize_ipv6_prefix(v)

    @field_validator("communities")
    @classmethod
    def _check_communities(cls, v: list[str]) -> list[str]:
        return [_check_community(c, 2, 0xFFFF) for c in v]

    @field_validator("large_communities")
    @classmethod
    def _check_large_communities(cls, v: list[str]) -> list[str]:
        return [_check_community(c, 3, U32_MAX) for c in v]


class RouteList(WireModel):
    """``GET /api/user/routes``."""

    routes: list[RouteVerdict]


class ReportedRoute(RouteVerdict):
    """A route in a route server's report, tagged with the session's owner."""

    user_hash: str = Field(min_length=1, max_length=64)


class RouteReport(WireModel):
    """``POST /service/rs/{name}/routes``: the complete set of routes one route server received."""

    routes: list[ReportedRoute] = Field(max_length=1_000_000)
