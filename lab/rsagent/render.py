"""Render the complete BIRD configuration of a route server: a PURE function of (settings, mappings, tunnels).

No timestamps, no dependence on input order: the same inputs give byte-identical output, so the agent can
compare texts to decide whether anything changed.

Layout: global definitions, a ROA table fed by a static protocol (one ROA per active lease), the kernel
protocol (the route server forwards), one template for user sessions, per user session an import filter
(rendered from :data:`lab.rsagent.policy.POLICY`) and a BGP protocol, and the upstream sessions.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any, TypeVar

from lab.rsagent.policy import (
    LEASE_TABLE,
    ROA_TABLE,
    GlobalPolicy,
    UserPolicy,
    net_key,
    parse_prefix,
    render_filter,
    render_global_definitions,
    render_import_function,
    roas_for,
)
from lab.rsagent.settings import RouteServerSettings
from peerlab_tui.core.models import Mapping, TunnelPeer, canonical_wireguard_key

_T = TypeVar("_T")
log = logging.getLogger(__name__)

USER_PREFIX = "u"  # user sessions: u<asn>_<hash8>
UPSTREAM_PREFIX = "t_"  # upstream (transit) sessions: t_<name>
CHANNEL = "ipv6"
MAX_ASN = 4294967294  # 4294967295 is reserved


@dataclass(frozen=True)
class Session:
    """One user's BGP session on this route server."""

    protocol: str
    user_hash: str
    user_id: str
    asn: int
    neighbor: str  # the user's overlay address
    source: str  # ours on the same network
    policy: UserPolicy

    @property
    def import_filter(self) -> str:
        """Name of the session's import filter."""
        return f"rs_in_{self.protocol}"


@dataclass(frozen=True)
class Plan:
    """Everything derived from the inputs; the rendered config and the agent's verdicts both use it."""

    settings: RouteServerSettings
    policy: GlobalPolicy
    sessions: tuple[Session, ...]
    wireguard_peers: tuple[tuple[str, tuple[str, ...]], ...]  # (public key, allowed IPs), sorted

    def session(self, protocol: str) -> Session | None:
        """The session with that BIRD protocol name."""
        return next((s for s in self.sessions if s.protocol == protocol), None)


def protocol_name(user_hash: str, asn: int) -> str:
    """The BIRD protocol name of a user's session: readable (ASN) and unique (hash of the user hash)."""
    digest = hashlib.sha256(user_hash.encode()).hexdigest()[:8]
    return f"{USER_PREFIX}{asn}_{digest}"


def upstream_protocol(name: str) -> str:
    """The BIRD protocol name of an upstream session."""
    return UPSTREAM_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", name)


@functools.lru_cache(maxsize=1 << 17)
def _interface_ip(text: str) -> IPv6Address | None:
    try:
        ip = ipaddress.ip_interface(text).ip
    except ValueError:
        return None
    return ip if isinstance(ip, IPv6Address) else None


# Canonical texts of networks already seen, keyed by (address, length): str(IPv6Network) is slow.
_TEXTS: dict[tuple[int, int], str] = {}


@functools.lru_cache(maxsize=1 << 17)
def _lease(text: str) -> tuple[tuple[int, int], IPv6Network, str] | None:
    """(sort key, network, canonical text) of a lease from the gateway, None when it is not IPv6."""
    net = parse_prefix(text)
    if net is None:
        return None
    key = net_key(net)
    return key, net, _TEXTS.setdefault(key, str(net))


def _first(entry: tuple[tuple[int, int], IPv6Network, str]) -> tuple[int, int]:
    return entry[0]


def _text(net: IPv6Network) -> str:
    key = net_key(net)
    text = _TEXTS.get(key)
    if text is None:
        if len(_TEXTS) > 1 << 18:
            _TEXTS.clear()
        text = _TEXTS[key] = str(net)
    return text


@functools.lru_cache(maxsize=16)
def _overlay_nets(overlay: tuple[tuple[str, str], ...]) -> tuple[tuple[IPv6Network, IPv6Address, str], ...]:
    return tuple((IPv6Network(net), IPv6Address(addr), addr) for net, addr in overlay)


@functools.lru_cache(maxsize=1 << 17)
def _overlay_address(addresses: tuple[str, ...], overlay: tuple[tuple[str, str], ...]
                     ) -> tuple[str, str, str] | None:
    """A peer's (address, our source address, "address/128") on the first of our overlay networks
    holding one. Cached: the same tunnels come back on every poll."""
    addrs = [a for a in (_interface_ip(text) for text in addresses) if a is not None]
    for net, ours, ours_text in _overlay_nets(overlay):
        for addr in sorted(a for a in addrs if a in net and a != ours):
            text = str(addr)
            return text, ours_text, f"{text}/128"
    return None


@functools.lru_cache(maxsize=1 << 17)
def _canonical_key(text: str) -> str | None:
    """The canonical spelling of a WireGuard key (None when it is not one): keys are compared as text."""
    try:
        return canonical_wireguard_key(text)
    except ValueError:
        return None


def _pick(items: list[_T], full_key: Callable[[_T], Any]) -> _T:
    # Deterministic choice among duplicates (rare), whatever the input order.
    return items[0] if len(items) == 1 else min(items, key=full_key)


def build_plan(settings: RouteServerSettings, mappings: Iterable[Mapping], tunnels: Iterable[TunnelPeer]
               ) -> Plan:
    """Derive sessions, ROAs and WireGuard peers from the gateway's data. Order of inputs is irrelevant."""
    # Deduplicate deterministically: one mapping and one tunnel per user hash.
    m_groups: dict[str, list[Mapping]] = {}
    for m in mappings:
        # An ASN BIRD cannot use (0, > 32 bit) or our own (the session would be iBGP) gets no session and no
        # ROA: one bad record must not block every other user's policy update.
        if 1 <= m.asn <= MAX_ASN and m.asn != settings.asn:
            m_groups.setdefault(m.user_hash, []).append(m)
    by_user = {h: _pick(g, lambda m: (m.asn, m.user_id, sorted(m.prefixes)))
               for h, g in sorted(m_groups.items())}
    t_groups: dict[str, list[TunnelPeer]] = {}
    for t in tunnels:
        key = _canonical_key(t.public_key)
        if key is not None and key != t.public_key:
            t = t.model_copy(update={"public_key": key})
        t_groups.setdefault(t.user_hash, []).append(t)
    tunnel_by_user = {h: _pick(g, lambda t: (t.public_key, sorted(t.addresses))) for h, g in t_groups.items()}
    # One key, one peer: WireGuard routes by key, so two users sharing one (the gateway refuses that; a bug
    # or a tampered database) would fight over a single peer entry, each taking the other's allowed IPs.
    # Neither gets it: the owner cannot be told from the intruder here.
    owners: dict[str, list[str]] = {}
    for h, t in tunnel_by_user.items():
        if _canonical_key(t.public_key) is not None:  # an invalid key gets no peer anyway (below)
            owners.setdefault(t.public_key, []).append(h)
    for key, hashes in owners.items():
        if len(hashes) > 1:
            log.error("WireGuard key %s is registered by %d users (%s): no peer for any of them", key,
                      len(hashes), ", ".join(sorted(hashes)))
            for h in hashes:
                del tunnel_by_user[h]

    # Leases are keyed by their canonical text (hashing IPv6Network objects is slow at 10,000 users).
    lease_text: dict[str, tuple[str, ...]] = {}
    # BIRD looks leases up by ASN (ROA tables): mirror that exactly, should two users ever share one.
    by_asn: dict[int, dict[str, tuple[tuple[int, int], IPv6Network, str]]] = {}
    for user_hash, m in by_user.items():
        entries = {e[2]: e for e in (_lease(p) for p in m.prefixes) if e is not None}
        lease_text[user_hash] = tuple(e[2] for e in sorted(entries.values(), key=_first))
        by_asn.setdefault(m.asn, {}).update(entries)
    asn_leases = {asn: tuple(e[1] for e in sorted(entries.values(), key=_first))
                  for asn, entries in by_asn.items()}
    roas = roas_for([(asn, net) for asn, nets in asn_leases.items() for net in nets],
                    settings.max_more_specific_length)
    policy = GlobalPolicy(
        pools=tuple(IPv6Network(p) for p in settings.pools),
        platform_prefixes=tuple(IPv6Network(p) for p in settings.platform_prefixes),
        max_as_path_length=settings.max_as_path_length,
        max_communities=settings.max_communities,
        max_large_communities=settings.max_large_communities,
        roas=roas,
    )
    overlay = tuple((o.network, o.address) for o in settings.overlay)

    sessions: list[Session] = []
    used_neighbors: set[str] = set()
    wg: list[tuple[str, tuple[str, ...]]] = []
    for user_hash in sorted(tunnel_by_user):
        peer = tunnel_by_user[user_hash]
        found = _overlay_address(tuple(peer.addresses), overlay)
        if found is None:
            continue  # this user's tunnel has no address on our networks
        neighbor, source, host_route = found
        allowed = [host_route, *lease_text.get(user_hash, ())]
        if _canonical_key(peer.public_key) is not None:
            wg.append((peer.public_key, tuple(allowed)))
        else:
            # The gateway validates keys: a stand-in (tests) or a corrupt record. Debug: not per-step noise.
            log.debug("no WireGuard peer for %s: %r is not a WireGuard key", user_hash, peer.public_key)
        mapping = by_user.get(user_hash)
        if mapping is None or neighbor in used_neighbors:
            continue  # no ASN yet (no mapping), or an address clash: no session
        used_neighbors.add(neighbor)
        sessions.append(Session(
            protocol=protocol_name(user_hash, mapping.asn), user_hash=user_hash, user_id=mapping.user_id,
            asn=mapping.asn, neighbor=neighbor, source=source,
            policy=UserPolicy(user_hash, mapping.asn, asn_leases[mapping.asn],
                              settings.max_more_specific_length),
        ))
    sessions.sort(key=lambda s: s.protocol)
    return Plan(settings, policy, tuple(sessions), tuple(sorted(wg)))


def _quote(text: str) -> str:
    return '"' + re.sub(r'["\\\n]', "_", text) + '"'


def render_plan(plan: Plan) -> str:
    """The BIRD configuration text of a plan."""
    s = plan.settings
    g = plan.policy
    out: list[str] = [
        f"# BIRD configuration of route server {s.name}, rendered by the peerlab rs-agent. Do not edit:",
        "# the agent rewrites it from rs.yaml and the gateway's mappings.",
        "log stderr all;",
        f"router id {s.router_id};",
        "timeformat protocol iso long ms;",
        f"define RS_ASN = {s.asn};",
        render_global_definitions(g).rstrip("\n"),
        f"roa6 table {LEASE_TABLE};",
        f"roa6 table {ROA_TABLE};",
        "",
        "protocol device rs_device {",
        "  scan time 10;",
        "}",
        "",
    ]
    if s.kernel_export:
        out += [
            "protocol kernel rs_kernel {",
            "  ipv6 {",
            "    import none;",
            "    export where source = RTS_BGP;",
            "  };",
            "}",
            "",
        ]
    out += ["# Every active lease, any length inside it: is a prefix inside one of this ASN's leases?",
            "protocol static rs_leases {",
            f"  roa6 {{ table {LEASE_TABLE}; }};"]
    out += [f"  route {_text(roa.prefix)} max 128 as {roa.asn};" for roa in g.roas]
    out += ["}", ""]
    out += ["# ROAs derived from every active lease (prefix, accepted max length, the lessee's ASN).",
            "protocol static rs_roas {",
            f"  roa6 {{ table {ROA_TABLE}; }};"]
    out += [f"  route {_text(roa.prefix)} max {roa.max_length} as {roa.asn};" for roa in g.roas]
    out += ["}", ""]
    out += ["# The import policy (lab.rsagent.policy.POLICY), shared by every user session.",
            render_import_function(g).rstrip("\n"), ""]

    out += [
        "# Users get the upstreams' routes and the other users' accepted routes.",
        "filter rs_out_user",
        "{",
        "  if source = RTS_BGP then accept;",
        "  reject;",
        "}",
        "",
        "template bgp rs_user {",
        "  local as RS_ASN;",
        *(["  passive on;"] if s.passive_user_sessions else []),
        # Users' sessions belong on their tunnel: the neighbor is resolved on the WireGuard interface only.
        *([f'  interface "{s.wireguard_interface}";'] if s.wireguard_interface else []),
        f"  {CHANNEL} {{",
        "    import table on;",
        f"    import limit {s.max_prefix} action block;",
        "    export filter rs_out_user;",
        "    next hop self;",
        "  };",
        "}",
        "",
    ]
    for sess in plan.sessions:
        leases = ", ".join(_text(n) for n in sess.policy.leases) or "none"
        out.append(f"# user {sess.user_id} ({sess.user_hash}) AS{sess.asn}, leases: {leases}")
        out.append(render_filter(sess.import_filter, sess.policy).rstrip("\n"))
        out += [
            f"protocol bgp {sess.protocol} from rs_user {{",
            f"  description {_quote('user ' + sess.user_id)};",
            f"  neighbor {sess.neighbor} as {sess.asn};",
            f"  source address {sess.source};",
            f"  {CHANNEL} {{ import filter {sess.import_filter}; }};",
            "}",
            "",
        ]

    if s.upstreams:
        out += [
            "# Upstreams get the users' accepted routes and never the leasable or platform space back.",
            "filter rs_in_upstream",
            "{",
            *(["  if net ~ RS_POOLS then reject;"] if g.pools else []),
            *(["  if net ~ RS_PLATFORM then reject;"] if g.platform_prefixes else []),
            "  accept;",
            "}",
            "",
            "filter rs_out_upstream",
            "{",
            f'  if source = RTS_BGP && !(proto ~ "{UPSTREAM_PREFIX}*") then accept;',
            "  reject;",
            "}",
            "",
        ]
        for up in sorted(s.upstreams, key=lambda u: u.name):
            out += [
                f"protocol bgp {upstream_protocol(up.name)} {{",
                f"  description {_quote('upstream ' + up.name)};",
                "  local as RS_ASN;",
                f"  neighbor {up.address} as {up.asn};",
                *([f"  source address {up.source_address};"] if up.source_address else []),
                *([f'  password "{up.password}";'] if up.password else []),
                *(["  ttl security on;"] if up.ttl_security else []),
                f"  {CHANNEL} {{",
                "    import table on;",
                "    import filter rs_in_upstream;",
                "    export filter rs_out_upstream;",
                "    next hop self;",
                "  };",
                "}",
                "",
            ]
    return "\n".join(out).rstrip("\n") + "\n"


def render_config(settings: RouteServerSettings, mappings: Iterable[Mapping],
                  tunnels: Iterable[TunnelPeer]) -> str:
    """The complete BIRD configuration for these inputs (pure and deterministic)."""
    return render_plan(build_plan(settings, mappings, tunnels))
