"""Data of the speaker: its configuration, announcements, previews, sessions, received routes and events."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from peerlab_tui.core.models import TunnelInfo


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NeighborConfig(_Model):
    """One route server the speaker peers with."""

    name: str
    address: str  # the route server's BGP address (RouteServerPeer.bgp_neighbor)
    asn: int
    local_address: str  # our address on that link, without prefix length (also the default next hop)


def default_router_id(asn: int) -> str:
    """A router-id derived from the ASN: unique per user, stable, non-zero (IPv6 sessions need one)."""
    value = asn if asn >= 1 << 24 else (10 << 24) | asn
    return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))


class SpeakerConfig(_Model):
    """Everything needed to render ExaBGP's configuration and run it."""

    asn: int
    router_id: str
    neighbors: list[NeighborConfig]
    hold_time: int = 90
    netns: str | None = None

    @classmethod
    def from_tunnel(cls, tunnel: TunnelInfo, *, asn: int | None = None, router_id: str | None = None,
                    hold_time: int = 90, netns: str | None = None) -> SpeakerConfig:
        """Build the configuration from the gateway's ``TunnelInfo`` (one neighbor per route server)."""
        local_as = asn if asn is not None else tunnel.asn
        neighbors = []
        for index, rs in enumerate(tunnel.route_servers):
            # As the tunnel does: the RS's local address, else the index-th overlay address (else the last).
            fallback = tunnel.addresses[min(index, len(tunnel.addresses) - 1)] if tunnel.addresses else None
            local = rs.local_address or fallback
            if local is None:
                raise ValueError(f"route server {rs.name}: no local address in the tunnel information")
            neighbors.append(NeighborConfig(name=rs.name, address=rs.bgp_neighbor, asn=rs.asn,
                                            local_address=local.split("/")[0]))
        return cls(asn=local_as, router_id=router_id or default_router_id(local_as), neighbors=neighbors,
                   hold_time=hold_time, netns=netns)

    def neighbor(self, name: str) -> NeighborConfig | None:
        """The neighbor called ``name``, if any."""
        return next((n for n in self.neighbors if n.name == name), None)


class Announcement(_Model):
    """A route to announce. Values are checked by :mod:`peerlab_tui.core.bgp.safety`, not here, so a bad
    value becomes a refusal naming its rule rather than a parse error."""

    prefix: str
    next_hop: str | None = None  # None: our own address on each route server's link
    prepend: int = 0  # extra copies of our ASN in the AS path
    communities: list[str] = Field(default_factory=list)  # "A:B"
    large_communities: list[str] = Field(default_factory=list)  # "A:B:C"
    med: int | None = None
    route_servers: list[str] | None = None  # names; None: every route server


class Preview(_Model):
    """Exactly what an announcement would send, and the AS path the route servers will see."""

    prefix: str
    route_servers: list[str]
    commands: list[str]
    as_path: list[int]
    next_hops: dict[str, str]


class SessionState(StrEnum):
    """BGP finite state machine states (RFC 4271), as ExaBGP reports them."""

    IDLE = "idle"
    CONNECT = "connect"
    ACTIVE = "active"
    OPENSENT = "opensent"
    OPENCONFIRM = "openconfirm"
    ESTABLISHED = "established"


class ReceivedRoute(_Model):
    """A route in the Adj-RIB-In of one route server's session."""

    rs: str
    prefix: str
    next_hop: str | None = None
    as_path: list[int] = Field(default_factory=list)
    communities: list[str] = Field(default_factory=list)
    large_communities: list[str] = Field(default_factory=list)
    med: int | None = None
    origin: str | None = None


class SessionStatus(_Model):
    """One route server session."""

    rs: str
    neighbor: str
    peer_asn: int
    state: SessionState
    established_since: datetime | None = None
    uptime_seconds: float | None = None
    last_error: str | None = None
    last_notification: str | None = None
    received_routes: int = 0


class AnnouncedRoute(_Model):
    """An announcement that is up on one route server (as last acknowledged by ExaBGP)."""

    rs: str
    prefix: str
    command: str
    as_path: list[int]
    announcement: Announcement
    withdraw_at: datetime | None = None  # when the lease schedule withdraws it (None: at the next check)
    warned: bool = False  # the warning ahead of that withdrawal was given


class SpeakerStatus(_Model):
    """A snapshot of the speaker."""

    running: bool
    pid: int | None
    asn: int
    router_id: str
    restarts: int
    last_restart_reason: str | None
    last_restart_at: datetime | None
    sessions: list[SessionStatus]
    announced: list[AnnouncedRoute]


class SpeakerEvent(_Model):
    """Something that happened, for subscribers (a UI): ``kind`` is one of ``session``, ``received``,
    ``withdrawn``, ``notification``, ``announce``, ``withdraw``, ``restart``, ``lease-warning``,
    ``lease-withdraw``, ``error``."""

    kind: str
    time: datetime
    rs: str | None = None
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
