"""The policy declaration: explanations, order, and that the BIRD function is rendered from the same list."""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.rsagent.policy import (
    POLICY,
    GlobalPolicy,
    RouteFacts,
    UserPolicy,
    evaluate,
    render_import_function,
    roas_for,
)

LEASE = IPv6Network("2001:db8:100::/48")
OTHER = IPv6Network("2001:db8:101::/48")


def policies(max_ms: int | None = None) -> tuple[GlobalPolicy, UserPolicy]:
    g = GlobalPolicy(pools=(IPv6Network("2001:db8:100::/40"),),
                     platform_prefixes=(IPv6Network("2001:db8:ff00::/40"),),
                     max_as_path_length=5, max_communities=5, max_large_communities=5,
                     roas=roas_for([(65001, LEASE), (65002, OTHER)], max_ms))
    return g, UserPolicy("alice", 65001, (LEASE,), max_ms)


CASES = [
    (RouteFacts.of("2001:db8:100::/48", [65001]), None, None),
    (RouteFacts.of("2001:db8:100::/48", [65001, 65001, 65001]), None, None),  # prepending is fine
    (RouteFacts.of("2001:db8:101::/48", [65001]), "not_leased", "2001:db8:101::/48 is not leased to you"),
    (RouteFacts.of("2001:db8:105::/48", [65001]), "not_leased", "2001:db8:105::/48 is not leased to you"),
    (RouteFacts.of("2001:db8:100::/40", [65001]), "not_leased", "2001:db8:100::/40 is not leased to you"),
    (RouteFacts.of("2001:db8:100:1::/64", [65001]), "too_specific",
     "2001:db8:100:1::/64 is more specific than your lease 2001:db8:100::/48 (only the exact prefix is "
     "accepted)"),
    (RouteFacts.of("2001:db8:100::/48", [65001, 65002]), "origin_as",
     "origin AS 65002 is not your ASN 65001"),
    (RouteFacts.of("2001:db8:100::/48", [65003, 65001]), "first_as", "first AS 65003 is not your ASN 65001"),
    (RouteFacts.of("2001:db8:100::/48", [65001] * 6), "as_path_length", "AS path length 6 exceeds 5"),
    (RouteFacts.of("2001:db8:100::/48", [65001], communities=[f"65535:{i}" for i in range(6)]),
     "communities", "6 communities exceed the limit of 5"),
    (RouteFacts.of("2001:db8:100::/48", [65001], large_communities=[f"1:2:{i}" for i in range(6)]),
     "large_communities", "6 large communities exceed the limit of 5"),
    (RouteFacts.of("2001:db8:ff00::/48", [65001]), "platform_space",
     "2001:db8:ff00::/48 is inside the platform's own space 2001:db8:ff00::/40"),
    (RouteFacts.of("fd00:dead::/48", [65001]), "bogon",
     "fd00:dead::/48 is a bogon (unique local addresses, fc00::/7)"),
    (RouteFacts.of("::/0", [65001]), "bogon", "::/0 is a bogon (the default route, ::/0)"),
    (RouteFacts.of("2001:db8:100::/48", []), "first_as",
     "the AS path is empty (its first AS must be your ASN 65001)"),
]


@pytest.mark.parametrize(("route", "rule", "reason"), CASES)
def test_verdicts_and_explanations(route: RouteFacts, rule: str | None, reason: str | None) -> None:
    """Each case is decided by the expected rule with a readable explanation."""
    g, u = policies()
    verdict = evaluate(route, g, u)
    assert (verdict.rule, verdict.reason) == (rule, reason)
    assert verdict.state == ("accepted" if rule is None else "filtered")


def test_more_specific_allowed_down_to_the_configured_length() -> None:
    """With max_more_specific_length=56, a /56 inside the lease passes and a /64 is explained."""
    g, u = policies(56)
    assert evaluate(RouteFacts.of("2001:db8:100:100::/56", [65001]), g, u).accepted
    v = evaluate(RouteFacts.of("2001:db8:100:1::/64", [65001]), g, u)
    assert v.rule == "too_specific"
    assert v.reason == ("2001:db8:100:1::/64 is more specific than your lease 2001:db8:100::/48 "
                        "(more-specifics are accepted down to /56)")


def test_first_broken_rule_decides_and_all_are_listed() -> None:
    """An unleased route with a long, forged path is refused for the lease; the others are listed too."""
    g, u = policies()
    v = evaluate(RouteFacts.of("2001:db8:105::/48", [65009] * 7, [f"1:{i}" for i in range(9)]), g, u)
    assert v.rule == "not_leased"
    assert v.broken == ("not_leased", "as_path_length", "first_as", "origin_as", "roa", "communities")


def test_as_set_semantics_follow_bird() -> None:
    """An AS set counts one in the length; a path ending in a set has no origin (BIRD's .last is 0)."""
    g, u = policies()
    r = RouteFacts(LEASE, ((False, (65001,)), (True, (65002, 65003, 65004))))
    assert r.path_length == 2 and r.first_as == 65001 and r.origin_as == 0
    v = evaluate(r, g, u)
    assert v.rule == "origin_as" and "AS set" in (v.reason or "")


def test_rule_names_unique_and_rendered_in_order() -> None:
    """The BIRD function has one reject per rule, in the declaration's order, named after the rule."""
    g, _ = policies()
    names = [r.name for r in POLICY]
    assert len(set(names)) == len(names)
    text = render_import_function(g)
    positions = [text.index(f"rule={name}\"") for name in names]
    assert positions == sorted(positions)
    assert text.rstrip().endswith("accept;\n}".rstrip())


def test_rules_without_input_are_not_rendered() -> None:
    """No platform prefixes: the platform rule has nothing to check and is left out of BIRD (and passes)."""
    g = GlobalPolicy(pools=(), platform_prefixes=(), max_as_path_length=5, max_communities=5,
                     max_large_communities=5)
    assert "rule=platform_space" not in render_import_function(g)
    assert "RS_POOLS" not in render_import_function(g)


@settings(max_examples=200, deadline=None)
@given(
    sub=st.integers(min_value=0, max_value=255),
    length=st.sampled_from([40, 44, 48, 52, 56, 64]),
    path=st.lists(st.sampled_from([65001, 65002, 65003]), min_size=0, max_size=8),
    n_comm=st.integers(min_value=0, max_value=8),
    n_large=st.integers(min_value=0, max_value=8),
    max_ms=st.sampled_from([None, 56, 64]),
)
def test_roas_agree_with_the_lease_rules(sub: int, length: int, path: list[int], n_comm: int, n_large: int,
                                        max_ms: int | None) -> None:
    """Property: the ROAs derived from leases never contradict the lease rules. A route that passes the
    lease, length and origin rules is RPKI valid, and a route that is RPKI valid for the user's own ASN is
    inside the user's lease (so the roa rule is a second, independent check, never a surprise)."""
    g, u = policies(max_ms)
    net = IPv6Network((int(IPv6Network("2001:db8:100::/40").network_address) | (sub << 80), 48))
    prefix = IPv6Network((net.network_address, length), strict=False)
    route = RouteFacts.of(str(prefix), path, [f"1:{i}" for i in range(n_comm)],
                          [f"1:2:{i}" for i in range(n_large)])
    by_name = {rule.name: rule for rule in POLICY}
    lease_ok = all(by_name[n].check(route, g, u) is None for n in ("not_leased", "too_specific", "origin_as"))
    roa_ok = by_name["roa"].check(route, g, u) is None
    if lease_ok:
        assert roa_ok
    if roa_ok and route.origin_as == u.asn:
        assert lease_ok
    v = evaluate(route, g, u)
    assert v.rule != "roa"
