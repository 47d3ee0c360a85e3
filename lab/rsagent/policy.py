"""The route servers' import policy, declared ONCE.

:data:`POLICY` is an ordered list of rules. Each rule renders itself as a BIRD condition (true when the route
breaks the rule) and evaluates itself in Python with a human explanation. The BIRD side is one shared
function ``rs_import(int uasn)`` -- the rules in this order, each ``if <condition> then reject`` -- and every
user session's import filter just calls it with the user's ASN. :func:`evaluate` walks the same list and stops
at the first broken rule, so both agree on the verdict and on which rule decided it.

Per-user data lives in two ROA tables keyed by the user's ASN (one shared function instead of one filter
body per user: BIRD parses 10,000 filter bodies in tens of seconds but 10,000 one-call filters at once):

* ``rs_lease6``: every active lease with max length 128 -- ``roa_check(rs_lease6, net, uasn)`` is valid
  exactly when the prefix lies inside one of that ASN's leases;
* ``rs_roa6``: the ROAs (lease, accepted max length, ASN) -- valid when the prefix is also not too specific.

BIRD's ``reject`` messages name the rule (``peerlab-rs reject <proto> <net> rule=<name>``), so its log shows
which rule BIRD applied.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Network

from lab.bird import Route

# Special-purpose and unallocated IPv6 space never accepted from a user (RFC 6890 and friends), unless it
# lies inside one of the platform's leasable pools (the lab leases documentation space, 2001:db8::/32).
# (prefix, match more-specifics too, label)
BOGONS: tuple[tuple[str, bool, str], ...] = (
    ("::/0", False, "the default route"),
    ("::/8", True, "reserved (IPv4-compatible, loopback, unspecified)"),
    ("100::/64", True, "discard-only space"),
    ("2001:2::/48", True, "benchmarking space"),
    ("2001:10::/28", True, "ORCHID"),
    ("2001:db8::/32", True, "documentation space"),
    ("2002::/16", True, "6to4"),
    ("3ffe::/16", True, "the old 6bone"),
    ("fc00::/7", True, "unique local addresses"),
    ("fe80::/10", True, "link-local space"),
    ("fec0::/10", True, "site-local space"),
    ("ff00::/8", True, "multicast"),
)

ROA_TABLE = "rs_roa6"
LEASE_TABLE = "rs_lease6"
IMPORT_FUNCTION = "rs_import"
USER_ASN = "uasn"  # the parameter of the import function
REJECT_TAG = "peerlab-rs reject"


@dataclass(frozen=True, order=True)
class Roa:
    """A route origin authorisation derived from an active lease."""

    prefix: IPv6Network
    max_length: int
    asn: int


@dataclass(frozen=True)
class GlobalPolicy:
    """The platform-wide inputs of the policy (the same for every session of one route server)."""

    pools: tuple[IPv6Network, ...]
    platform_prefixes: tuple[IPv6Network, ...]
    max_as_path_length: int
    max_communities: int
    max_large_communities: int
    roas: tuple[Roa, ...] = ()


@dataclass(frozen=True)
class UserPolicy:
    """The per-session inputs: who the user is and what they lease."""

    user_hash: str
    asn: int
    leases: tuple[IPv6Network, ...]
    max_more_specific_length: int | None

    def max_length(self, lease: IPv6Network) -> int:
        """The longest prefix length accepted inside ``lease``."""
        if self.max_more_specific_length is None:
            return lease.prefixlen
        return max(lease.prefixlen, self.max_more_specific_length)


@dataclass(frozen=True)
class RouteFacts:
    """What the policy looks at in a received route."""

    prefix: IPv6Network
    as_path_segments: tuple[tuple[bool, tuple[int, ...]], ...] = ()  # (is_set, asns)
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()

    @classmethod
    def of(cls, prefix: str, as_path: Sequence[int] = (), communities: Sequence[str] = (),
           large_communities: Sequence[str] = ()) -> RouteFacts:
        """Facts of a route with a plain AS_SEQUENCE path."""
        segs = ((False, tuple(as_path)),) if as_path else ()
        return cls(IPv6Network(prefix), segs, tuple(communities), tuple(large_communities))

    @classmethod
    def from_route(cls, route: Route) -> RouteFacts:
        """Facts of a route parsed from ``show route all``."""
        return cls(IPv6Network(route.prefix),
                   tuple((is_set, tuple(asns)) for is_set, asns in route.as_path_segments),
                   tuple(route.communities), tuple(route.large_communities))

    # BIRD semantics of bgp_path.len / .first / .last, reproduced exactly.
    @property
    def path_length(self) -> int:
        """``bgp_path.len``: every ASN of a sequence counts one, an AS set counts one."""
        return sum(1 if is_set else len(asns) for is_set, asns in self.as_path_segments)

    @property
    def first_as(self) -> int:
        """``bgp_path.first``: the first ASN of a leading sequence, else 0."""
        if not self.as_path_segments:
            return 0
        is_set, asns = self.as_path_segments[0]
        return 0 if is_set or not asns else asns[0]

    @property
    def origin_as(self) -> int:
        """``bgp_path.last``: the last ASN when the path ends in a sequence, else 0."""
        if not self.as_path_segments:
            return 0
        is_set, asns = self.as_path_segments[-1]
        return 0 if is_set or not asns else asns[-1]


# --- rules ------------------------------------------------------------------------------------------------


class Rule:
    """One import rule: a name, a BIRD condition (true = reject) and a Python check with explanation."""

    name: str = ""
    summary: str = ""

    def bird(self, g: GlobalPolicy) -> str | None:
        """The BIRD expression (inside ``rs_import(int uasn)``) true when a route breaks this rule.

        None means the rule has nothing to check with these settings.
        """
        raise NotImplementedError

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        """Why the route breaks this rule, or None when it passes."""
        raise NotImplementedError


def _prefix_set(items: Sequence[str]) -> str:
    return "[ " + ", ".join(items) + " ]"


def _within(net: IPv6Network, nets: Sequence[IPv6Network]) -> IPv6Network | None:
    return next((n for n in nets if net.subnet_of(n)), None)


class BogonRule(Rule):
    name = "bogon"
    summary = "special-purpose space (bogons) is rejected, except inside the leasable pools"

    def bird(self, g: GlobalPolicy) -> str | None:
        return "(net ~ RS_BOGONS)" + (" && !(net ~ RS_POOLS)" if g.pools else "")

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        if _within(r.prefix, g.pools):
            return None
        for text, more_specifics, label in BOGONS:
            bogon = IPv6Network(text)
            if r.prefix == bogon or (more_specifics and r.prefix.subnet_of(bogon)):
                return f"{r.prefix} is a bogon ({label}, {text})"
        return None


class PlatformSpaceRule(Rule):
    name = "platform_space"
    summary = "the platform's own address space is never accepted from a user"

    def bird(self, g: GlobalPolicy) -> str | None:
        return "(net ~ RS_PLATFORM)" if g.platform_prefixes else None

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        hit = _within(r.prefix, g.platform_prefixes)
        return f"{r.prefix} is inside the platform's own space {hit}" if hit else None


class LeasedRule(Rule):
    name = "not_leased"
    summary = "the prefix must lie inside one of the user's active leases"

    def bird(self, g: GlobalPolicy) -> str | None:
        return f"(roa_check({LEASE_TABLE}, net, {USER_ASN}) != ROA_VALID)"

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        if _within(r.prefix, u.leases):
            return None
        if not u.leases:
            return f"{r.prefix} is not leased to you (you hold no active lease)"
        return f"{r.prefix} is not leased to you"


class MoreSpecificRule(Rule):
    name = "too_specific"
    summary = "more-specifics of a lease only down to max_more_specific_length (default: exact prefix only)"

    def bird(self, g: GlobalPolicy) -> str | None:
        return f"(roa_check({ROA_TABLE}, net, {USER_ASN}) != ROA_VALID)"

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        lease = _within(r.prefix, u.leases)
        if lease is None or r.prefix.prefixlen <= u.max_length(lease):
            return None
        allowed = ("only the exact prefix is accepted" if u.max_length(lease) == lease.prefixlen
                   else f"more-specifics are accepted down to /{u.max_length(lease)}")
        return f"{r.prefix} is more specific than your lease {lease} ({allowed})"


class PathLengthRule(Rule):
    name = "as_path_length"
    summary = "the AS path may hold at most max_as_path_length ASNs"

    def bird(self, g: GlobalPolicy) -> str | None:
        return f"(bgp_path.len > {g.max_as_path_length})"

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        if r.path_length > g.max_as_path_length:
            return f"AS path length {r.path_length} exceeds {g.max_as_path_length}"
        return None


class FirstAsRule(Rule):
    name = "first_as"
    summary = "the first AS of the path must be the user's ASN"

    def bird(self, g: GlobalPolicy) -> str | None:
        return f"(bgp_path.first != {USER_ASN})"

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        if r.first_as == u.asn:
            return None
        if not r.as_path_segments:
            return f"the AS path is empty (its first AS must be your ASN {u.asn})"
        if r.first_as == 0:
            return f"the AS path starts with an AS set (its first AS must be your ASN {u.asn})"
        return f"first AS {r.first_as} is not your ASN {u.asn}"


class OriginAsRule(Rule):
    name = "origin_as"
    summary = "the origin (last) AS of the path must be the user's ASN"

    def bird(self, g: GlobalPolicy) -> str | None:
        return f"(bgp_path.last != {USER_ASN})"

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        if r.origin_as == u.asn:
            return None
        if r.origin_as == 0:
            return f"the AS path ends with an AS set or is empty (the origin must be your ASN {u.asn})"
        return f"origin AS {r.origin_as} is not your ASN {u.asn}"


class RoaRule(Rule):
    name = "roa"
    summary = "RPKI origin validation against ROAs derived from every active lease must be valid"

    def bird(self, g: GlobalPolicy) -> str | None:
        return f"(roa_check({ROA_TABLE}, net, bgp_path.last) != ROA_VALID)"

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        covering = [roa for roa in g.roas if r.prefix.subnet_of(roa.prefix)]
        origin = r.origin_as
        if any(origin != 0 and roa.asn == origin and r.prefix.prefixlen <= roa.max_length
               for roa in covering):
            return None
        if not covering:
            return f"RPKI unknown: no ROA covers {r.prefix}"
        return f"RPKI invalid: no ROA authorises {r.prefix} from AS {origin}"


class CommunitiesRule(Rule):
    name = "communities"
    summary = "at most max_communities standard communities"

    def bird(self, g: GlobalPolicy) -> str | None:
        return f"(bgp_community.len > {g.max_communities})"

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        n = len(r.communities)
        return f"{n} communities exceed the limit of {g.max_communities}" if n > g.max_communities else None


class LargeCommunitiesRule(Rule):
    name = "large_communities"
    summary = "at most max_large_communities large communities"

    def bird(self, g: GlobalPolicy) -> str | None:
        return f"(bgp_large_community.len > {g.max_large_communities})"

    def check(self, r: RouteFacts, g: GlobalPolicy, u: UserPolicy) -> str | None:
        n = len(r.large_communities)
        if n > g.max_large_communities:
            return f"{n} large communities exceed the limit of {g.max_large_communities}"
        return None


# THE policy: order matters (the first broken rule decides and explains).
POLICY: tuple[Rule, ...] = (
    PlatformSpaceRule(),
    BogonRule(),
    LeasedRule(),
    MoreSpecificRule(),
    PathLengthRule(),
    FirstAsRule(),
    OriginAsRule(),
    RoaRule(),
    CommunitiesRule(),
    LargeCommunitiesRule(),
)


@dataclass(frozen=True)
class Verdict:
    """The policy's decision on one route: accepted, or filtered by ``rule`` because of ``reason``."""

    accepted: bool
    rule: str | None = None
    reason: str | None = None
    # Every broken rule, in policy order (the first one decides); handy for explanations.
    broken: tuple[str, ...] = field(default=())

    @property
    def state(self) -> str:
        """``accepted`` or ``filtered`` (RouteVerdict.state)."""
        return "accepted" if self.accepted else "filtered"


def evaluate(route: RouteFacts, g: GlobalPolicy, u: UserPolicy,
             rules: Sequence[Rule] = POLICY) -> Verdict:
    """Evaluate the policy on a route: the first broken rule decides (the same order as the BIRD filter)."""
    first: tuple[str, str] | None = None
    broken: list[str] = []
    for rule in rules:
        reason = rule.check(route, g, u)
        if reason is not None:
            broken.append(rule.name)
            if first is None:
                first = (rule.name, reason)
    if first is None:
        return Verdict(True)
    return Verdict(False, first[0], first[1], tuple(broken))


def render_global_definitions(g: GlobalPolicy) -> str:
    """BIRD ``define``s the rules refer to (bogons, pools, platform space)."""
    bogons = [f"{text}+" if more else text for text, more, _ in BOGONS]
    lines = [f"define RS_BOGONS = {_prefix_set(bogons)};"]
    if g.pools:
        lines.append(f"define RS_POOLS = {_prefix_set([f'{p}+' for p in g.pools])};")
    if g.platform_prefixes:
        lines.append(f"define RS_PLATFORM = {_prefix_set([f'{p}+' for p in g.platform_prefixes])};")
    return "\n".join(lines) + "\n"


def render_import_function(g: GlobalPolicy, rules: Sequence[Rule] = POLICY) -> str:
    """The shared BIRD import function: every rule in order, then accept."""
    body = [f"function {IMPORT_FUNCTION}(int {USER_ASN})", "{"]
    for rule in rules:
        cond = rule.bird(g)
        if cond is None:
            continue
        body.append(f'  if {cond} then reject "{REJECT_TAG} ", proto, " ", net, " rule={rule.name}";')
    body.append("  accept;")
    body.append("}")
    return "\n".join(body) + "\n"


def render_filter(name: str, u: UserPolicy) -> str:
    """The BIRD import filter of one user session: the shared function with the user's ASN."""
    return f"filter {name}\n{{\n  {IMPORT_FUNCTION}({u.asn});\n}}\n"


def roas_for(leases: Sequence[tuple[int, IPv6Network]], max_more_specific_length: int | None
             ) -> tuple[Roa, ...]:
    """ROAs derived from active leases ``(asn, prefix)``: max length is the policy's accepted length."""
    out = set()
    for asn, lease in leases:
        max_len = lease.prefixlen if max_more_specific_length is None else max(
            lease.prefixlen, max_more_specific_length)
        out.add(Roa(lease, max_len, asn))
    # Sorting by integers: comparing IPv6Network objects is ~10x slower (it shows at 10,000 users).
    return tuple(sorted(out, key=lambda r: (int(r.prefix.network_address), r.prefix.prefixlen, r.max_length,
                                            r.asn)))


def net_key(net: IPv6Network) -> tuple[int, int]:
    """A fast sort key of a network (address, then length), the order IPv6Network's own sort gives."""
    return int(net.network_address), net.prefixlen


@functools.lru_cache(maxsize=1 << 17)
def parse_prefix(text: str) -> IPv6Network | None:
    """An IPv6 prefix from the gateway, or None when it is not one (IPv4, host bits, garbage). Cached: the
    same leases come back on every poll."""
    try:
        return ipaddress.IPv6Network(text, strict=True)
    except ValueError:
        return None
