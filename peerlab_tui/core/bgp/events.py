"""Parsing of ExaBGP's JSON API events (encoder json, ExaBGP 5) into small typed records (pure functions)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from peerlab_tui.core.bgp.model import SessionState

ACK_LINES = frozenset({"done", "error"})


@dataclass(frozen=True)
class FsmEvent:
    """The BGP FSM of a neighbor moved to ``state``."""

    peer: str
    state: SessionState


@dataclass(frozen=True)
class StateEvent:
    """ExaBGP's coarse neighbor state: ``connected``, ``up`` or ``down`` (with a reason)."""

    peer: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class NotificationEvent:
    """A BGP NOTIFICATION sent or received."""

    peer: str
    direction: str
    code: int
    subcode: int
    message: str


@dataclass(frozen=True)
class RouteAttributes:
    """Path attributes of a received UPDATE."""

    as_path: list[int] = field(default_factory=list)
    communities: list[str] = field(default_factory=list)
    large_communities: list[str] = field(default_factory=list)
    med: int | None = None
    origin: str | None = None


@dataclass(frozen=True)
class UpdateEvent:
    """A received UPDATE: announced prefixes with their next hop, and withdrawn prefixes."""

    peer: str
    announced: dict[str, str | None]  # prefix -> next hop
    withdrawn: list[str]
    attributes: RouteAttributes


Event = FsmEvent | StateEvent | NotificationEvent | UpdateEvent


def _nlri_prefix(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("nlri"), str):
        return str(item["nlri"])
    return None


def _as_path(value: Any) -> list[int]:
    # ExaBGP 5 encodes {"0": {"element": "as-sequence", "value": [...]}, ...}; older ones a flat list.
    if isinstance(value, list):
        return [int(v) for v in value if isinstance(v, int)]
    path: list[int] = []
    if isinstance(value, dict):
        for key in sorted(value, key=lambda k: int(k) if str(k).isdigit() else 0):
            segment = value[key]
            if isinstance(segment, dict):
                path.extend(int(v) for v in segment.get("value", []))
    return path


def _attributes(raw: dict[str, Any]) -> RouteAttributes:
    med = raw.get("med")
    return RouteAttributes(
        as_path=_as_path(raw.get("as-path", [])),
        communities=[f"{c[0]}:{c[1]}" for c in raw.get("community", []) if len(c) == 2],
        large_communities=[f"{c[0]}:{c[1]}:{c[2]}" for c in raw.get("large-community", []) if len(c) == 3],
        med=int(med) if isinstance(med, int) else None,
        origin=raw.get("origin") if isinstance(raw.get("origin"), str) else None,
    )


def _is_link_local(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_link_local
    except ValueError:
        return False


def parse_update(peer: str, update: dict[str, Any]) -> UpdateEvent:
    """Turn the ``update`` object of an ExaBGP JSON message into an :class:`UpdateEvent` (IPv6 unicast)."""
    announced: dict[str, str | None] = {}
    for family, by_next_hop in (update.get("announce") or {}).items():
        if family != "ipv6 unicast" or not isinstance(by_next_hop, dict):
            continue
        for next_hop, nlris in by_next_hop.items():
            # An MP_REACH with a global and a link-local next hop is listed under both; keep the global one.
            for item in nlris:
                prefix = _nlri_prefix(item)
                if prefix is None:
                    continue
                known = announced.get(prefix)
                if known is None or (_is_link_local(known) and not _is_link_local(next_hop)):
                    announced[prefix] = None if next_hop == "null" else next_hop
    withdrawn: list[str] = []
    for family, nlris in (update.get("withdraw") or {}).items():
        if family != "ipv6 unicast":
            continue
        withdrawn.extend(p for p in (_nlri_prefix(i) for i in nlris) if p is not None)
    return UpdateEvent(peer=peer, announced=announced, withdrawn=withdrawn,
                       attributes=_attributes(update.get("attribute") or {}))


def parse_event(line: str) -> Event | None:
    """Parse one JSON line from ExaBGP; None for lines that carry nothing we track (EOR, keepalive, ...)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    neighbor = data.get("neighbor")
    if not isinstance(neighbor, dict):
        return None
    peer = str((neighbor.get("address") or {}).get("peer", ""))
    if kind == "fsm":
        try:
            return FsmEvent(peer=peer, state=SessionState(str(neighbor.get("state", "")).lower()))
        except ValueError:
            return None
    if kind == "state":
        return StateEvent(peer=peer, state=str(neighbor.get("state", "")),
                          reason=str(neighbor.get("reason", "")))
    if kind == "notification":
        note = neighbor.get("notification") or {}
        return NotificationEvent(peer=peer, direction=str(neighbor.get("direction", "")),
                                 code=int(note.get("code", 0)), subcode=int(note.get("subcode", 0)),
                                 message=str(note.get("message", "")))
    if kind == "update":
        message = neighbor.get("message") or {}
        update = message.get("update")
        if not isinstance(update, dict):
            return None  # end-of-RIB marker
        return parse_update(peer, update)
    return None
