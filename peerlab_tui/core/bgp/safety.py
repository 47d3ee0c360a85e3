"""Client-side safety checks, applied before anything is sent to ExaBGP, and the lease-expiry schedule.

:func:`check_announcement` is a pure function of (announcement, leases, settings, history, now): it returns
the lease that covers the announcement or raises :class:`SafetyError` naming the rule and the allowed values.
:func:`lease_actions` says which announcements need a warning or a withdrawal because their lease ends.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from peerlab_tui.core.bgp.errors import MalformedError, SafetyError, UnknownRouteServerError
from peerlab_tui.core.bgp.model import Announcement
from peerlab_tui.core.models import Lease

MAX_COMMUNITY_PART = 65535
MAX_LARGE_COMMUNITY_PART = 2**32 - 1
MAX_MED = 2**32 - 1
REMOTE_CHANGE_INTERVAL = 600.0


@dataclass(frozen=True)
class SafetySettings:
    """Limits of the safety checks (defaults: the platform's rules, permissive rate limit for the lab)."""

    max_prefix_len: int | None = None  # longest more-specific allowed inside a lease; None: the lease only
    max_prepend: int = 4
    max_as_path: int = 5
    max_communities: int = 5
    max_large_communities: int = 5
    min_change_interval: float = 0.0  # seconds between two changes of one prefix; 0: no limit
    withdraw_margin: float = 60.0  # withdraw this many seconds before a lease ends
    warn_ahead: float = 300.0  # warn this many seconds before the automatic withdrawal

    @classmethod
    def for_gateway(cls, gateway_url: str | None, **overrides: Any) -> SafetySettings:
        """Defaults for a gateway: no rate limit on the embedded lab (loopback), 600 s on a remote one."""
        host = urlparse(gateway_url or "").hostname or ""
        local = host in {"", "localhost"} or _is_loopback(host)
        settings = cls(min_change_interval=0.0 if local else REMOTE_CHANGE_INTERVAL)
        return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_prefix(prefix: str) -> ipaddress.IPv6Network:
    """Parse an IPv6 CIDR prefix or raise a ``malformed`` refusal (IPv4 is refused: IPv6 unicast only)."""
    try:
        net = ipaddress.ip_network(prefix.strip(), strict=True)
    except ValueError as exc:
        raise MalformedError(f"{prefix!r} is not a prefix in CIDR form with zero host bits, "
                                       f"e.g. 2001:db8:100::/48 ({exc})") from exc
    if not isinstance(net, ipaddress.IPv6Network):
        raise MalformedError(f"{prefix} is an IPv4 prefix; only IPv6 unicast prefixes are allowed")
    return net


def unknown_route_servers(unknown: Sequence[str], known: Iterable[str]) -> UnknownRouteServerError:
    """The refusal for route server names the speaker has no neighbor for (or an empty selection)."""
    return UnknownRouteServerError(f"unknown route server(s) {', '.join(unknown) or '(empty list)'}; "
                                       f"known: {', '.join(sorted(known)) or 'none'}")


def _active(lease: Lease, now: datetime) -> bool:
    return lease.start_time <= now < lease.end_time


def covering_lease(net: ipaddress.IPv6Network, leases: Iterable[Lease], now: datetime) -> Lease | None:
    """The active lease whose prefix contains ``net``, if any."""
    for lease in leases:
        try:
            leased = ipaddress.IPv6Network(lease.prefix)
        except ValueError:
            continue
        if _active(lease, now) and net.subnet_of(leased):
            return lease
    return None


def _check_pairs(values: Sequence[str], parts: int, maximum: int, rule: str, example: str) -> None:
    for value in values:
        pieces = value.split(":")
        ok = len(pieces) == parts and all(p.isdigit() for p in pieces)
        if not ok or any(int(p) > maximum for p in pieces):
            raise MalformedError(f"{rule} {value!r} must be {example} with each part an integer "
                                           f"from 0 to {maximum}")


def check_announcement(ann: Announcement, leases: Sequence[Lease], settings: SafetySettings,
                       history: Mapping[str, datetime], now: datetime, *,
                       route_servers: Collection[str] | None = None) -> Lease:
    """Check an announcement against every rule; return the covering lease or raise :class:`SafetyError`.

    ``history`` maps a prefix to the time of its last change; ``route_servers`` are the known names (None
    skips that check).
    """
    net = parse_prefix(ann.prefix)
    if route_servers is not None and ann.route_servers is not None:
        unknown = sorted(set(ann.route_servers) - set(route_servers))
        if unknown or not ann.route_servers:
            raise unknown_route_servers(unknown, route_servers)
    active = [lease for lease in leases if _active(lease, now)]
    lease = covering_lease(net, active, now)
    if lease is None:
        listed = ", ".join(f"{x.prefix} (until {x.end_time.isoformat()})" for x in active) or "none"
        raise SafetyError("lease", f"{net} is not inside one of your active leases; leased: {listed}")
    lease_len = ipaddress.IPv6Network(lease.prefix).prefixlen
    longest = max(settings.max_prefix_len or lease_len, lease_len)
    if net.prefixlen > longest:
        allowed = f"exactly {lease.prefix}" if longest == lease_len else f"/{lease_len} to /{longest}"
        raise SafetyError("more-specific", f"{net} is more specific than allowed inside lease "
                                           f"{lease.prefix}: allowed {allowed}")
    if now >= lease.end_time - timedelta(seconds=settings.withdraw_margin):
        raise SafetyError("lease", f"lease {lease.prefix} ends at {lease.end_time.isoformat()}, within the "
                                   f"{settings.withdraw_margin:g} s withdrawal margin; renew it first")
    if ann.prepend < 0 or ann.prepend > settings.max_prepend:
        raise SafetyError("prepend", f"prepend {ann.prepend} is not allowed: 0 to {settings.max_prepend}")
    path_len = 1 + ann.prepend
    if path_len > settings.max_as_path:
        raise SafetyError("as-path", f"the AS path would have {path_len} ASNs; at most "
                                     f"{settings.max_as_path}")
    if len(ann.communities) > settings.max_communities:
        raise SafetyError("communities", f"{len(ann.communities)} communities; at most "
                                         f"{settings.max_communities}")
    if len(ann.large_communities) > settings.max_large_communities:
        raise SafetyError("large-communities", f"{len(ann.large_communities)} large communities; at most "
                                               f"{settings.max_large_communities}")
    _check_pairs(ann.communities, 2, MAX_COMMUNITY_PART, "community", "A:B")
    _check_pairs(ann.large_communities, 3, MAX_LARGE_COMMUNITY_PART, "large community", "A:B:C")
    if ann.med is not None and not 0 <= ann.med <= MAX_MED:
        raise MalformedError(f"MED {ann.med} is out of range: 0 to {MAX_MED}")
    if ann.next_hop is not None:
        try:
            hop = ipaddress.IPv6Address(ann.next_hop)
        except ValueError as exc:
            raise MalformedError(f"next hop {ann.next_hop!r} is not an IPv6 address") from exc
        if hop.is_unspecified or hop.is_multicast:
            raise MalformedError(f"next hop {ann.next_hop} must be a unicast IPv6 address")
    check_rate(str(net), settings, history, now)
    return lease


def check_rate(prefix: str, settings: SafetySettings, history: Mapping[str, datetime], now: datetime) -> None:
    """Refuse a second change of ``prefix`` within ``min_change_interval`` seconds."""
    last = history.get(prefix)
    if settings.min_change_interval > 0 and last is not None:
        allowed_at = last + timedelta(seconds=settings.min_change_interval)
        if now < allowed_at:
            raise SafetyError("rate-limit", f"{prefix} was changed at {last.isoformat()}; one change per "
                                            f"{settings.min_change_interval:g} s, next allowed at "
                                            f"{allowed_at.isoformat()}")


@dataclass(frozen=True)
class LeaseAction:
    """What the lease schedule asks for one announced prefix."""

    prefix: str
    action: str  # "warn" or "withdraw"
    at: datetime  # when the withdrawal happens (or happened)
    reason: str
    lease_end: datetime | None = None  # the end of the covering lease (None: no lease covers it)

    @property
    def key(self) -> tuple[str, datetime | None]:
        """What a warning is remembered by: a renewed lease (a new end) warns again."""
        return (self.prefix, self.lease_end)


def withdraw_time(prefix: str, leases: Sequence[Lease], settings: SafetySettings,
                  now: datetime) -> datetime | None:
    """When the schedule withdraws ``prefix`` (``withdraw_margin`` before its lease ends); None when no
    active lease covers it (it is withdrawn at the next check)."""
    try:
        lease = covering_lease(ipaddress.IPv6Network(prefix), leases, now)
    except ValueError:
        return None
    return None if lease is None else lease.end_time - timedelta(seconds=settings.withdraw_margin)


def lease_actions(announced: Iterable[str], leases: Sequence[Lease], settings: SafetySettings,
                  now: datetime, warned: Collection[tuple[str, datetime | None]]) -> list[LeaseAction]:
    """Warnings (once per (prefix, lease end), ``warn_ahead`` before the withdrawal) and withdrawals
    (``withdraw_margin`` before the lease ends, or at once when no active lease covers the prefix)."""
    actions: list[LeaseAction] = []
    margin = timedelta(seconds=settings.withdraw_margin)
    for prefix in sorted(set(announced)):
        try:
            net = ipaddress.IPv6Network(prefix)
        except ValueError:
            continue
        lease = covering_lease(net, leases, now)
        if lease is None:
            actions.append(LeaseAction(prefix, "withdraw", now, "no active lease covers it any more"))
            continue
        withdraw_at = lease.end_time - margin
        if now >= withdraw_at:
            actions.append(LeaseAction(prefix, "withdraw", withdraw_at,
                                       f"lease {lease.prefix} ends at {lease.end_time.isoformat()}",
                                       lease.end_time))
        elif (now >= withdraw_at - timedelta(seconds=settings.warn_ahead)
              and (prefix, lease.end_time) not in warned):
            actions.append(LeaseAction(prefix, "warn", withdraw_at,
                                       f"lease {lease.prefix} ends at {lease.end_time.isoformat()}; "
                                       f"withdrawing at {withdraw_at.isoformat()}", lease.end_time))
    return actions
