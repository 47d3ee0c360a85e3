"""The client-side safety rules, as a pure function of (announcement, leases, settings, history, now)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerlab_tui.core.bgp import Announcement, SafetyError, SafetySettings, check_announcement, lease_actions
from peerlab_tui.core.errors import InputError
from peerlab_tui.core.models import Lease

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
LEASE = Lease(prefix="2001:db8:100::/48", start_time=NOW - HOUR, end_time=NOW + HOUR)
OTHER = Lease(prefix="2001:db8:200::/48", start_time=NOW - HOUR, end_time=NOW + 2 * HOUR)
LEASES = [LEASE, OTHER]
DEFAULT = SafetySettings()


def refuse(ann: Announcement, settings: SafetySettings = DEFAULT, history: dict[str, datetime] | None = None,
           *, leases: list[Lease] | None = None, now: datetime = NOW) -> SafetyError:
    with pytest.raises(SafetyError) as info:
        check_announcement(ann, LEASES if leases is None else leases, settings, history or {}, now,
                           route_servers=["rs1", "rs2"])
    return info.value


def test_a_valid_announcement_passes_and_returns_its_lease() -> None:
    """The most the rules allow still passes."""
    ann = Announcement(prefix="2001:db8:100::/48", prepend=4, communities=[f"65535:{i}" for i in range(5)],
                       large_communities=[f"4294967295:{i}:4294967295" for i in range(5)], med=2**32 - 1,
                       next_hop="2001:db8:ffff::1", route_servers=["rs2"])
    assert check_announcement(ann, LEASES, DEFAULT, {}, NOW, route_servers=["rs1", "rs2"]) == LEASE


def test_outside_the_leases_lists_them() -> None:
    """A prefix nobody leased to us is refused and the message lists the active leases."""
    error = refuse(Announcement(prefix="2001:db8:300::/48"))
    assert error.rule == "lease" and error.exit_code == 4
    assert "2001:db8:100::/48" in error.message and "2001:db8:200::/48" in error.message


def test_an_expired_or_future_lease_does_not_count() -> None:
    """Only leases active now cover an announcement."""
    expired = Lease(prefix="2001:db8:300::/48", start_time=NOW - timedelta(hours=2), end_time=NOW)
    future = Lease(prefix="2001:db8:400::/48", start_time=NOW + timedelta(seconds=1),
                   end_time=NOW + timedelta(hours=2))
    assert refuse(Announcement(prefix="2001:db8:300::/48"), leases=[expired]).rule == "lease"
    assert refuse(Announcement(prefix="2001:db8:400::/48"), leases=[future]).rule == "lease"


def test_within_the_withdrawal_margin_is_refused() -> None:
    """Announcing a prefix whose lease ends inside the margin would be withdrawn at once: refused."""
    error = refuse(Announcement(prefix="2001:db8:100::/48"), now=LEASE.end_time - timedelta(seconds=30))
    assert error.rule == "lease" and "renew" in error.message


def test_more_specifics_default_exact_lease_only() -> None:
    """By default only the leased prefix itself; a configured length allows more-specifics up to it."""
    error = refuse(Announcement(prefix="2001:db8:100:1::/64"))
    assert error.rule == "more-specific" and "exactly 2001:db8:100::/48" in error.message
    settings = SafetySettings(max_prefix_len=56)
    check_announcement(Announcement(prefix="2001:db8:100:100::/56"), LEASES, settings, {}, NOW)
    error = refuse(Announcement(prefix="2001:db8:100:1::/64"), settings)
    assert error.rule == "more-specific" and "/48 to /56" in error.message


@pytest.mark.parametrize(("ann", "rule", "allowed"), [
    (Announcement(prefix="2001:db8:100::/48", prepend=5), "prepend", "0 to 4"),
    (Announcement(prefix="2001:db8:100::/48", prepend=-1), "prepend", "0 to 4"),
    (Announcement(prefix="2001:db8:100::/48", communities=["1:1"] * 6), "communities", "at most 5"),
    (Announcement(prefix="2001:db8:100::/48", large_communities=["1:1:1"] * 6), "large-communities",
     "at most 5"),
    (Announcement(prefix="2001:db8:100::/48", communities=["65536:1"]), "malformed", "0 to 65535"),
    (Announcement(prefix="2001:db8:100::/48", communities=["1:2:3"]), "malformed", "A:B"),
    (Announcement(prefix="2001:db8:100::/48", communities=["a:b"]), "malformed", "A:B"),
    (Announcement(prefix="2001:db8:100::/48", large_communities=["1:4294967296:1"]), "malformed",
     "0 to 4294967295"),
    (Announcement(prefix="2001:db8:100::/48", large_communities=["1:1"]), "malformed", "A:B:C"),
    (Announcement(prefix="2001:db8:100::/48", med=-1), "malformed", "0 to 4294967295"),
    (Announcement(prefix="2001:db8:100::/48", next_hop="192.0.2.1"), "malformed", "IPv6"),
    (Announcement(prefix="2001:db8:100::/48", route_servers=["rs3"]), "route-server", "rs1, rs2"),
    (Announcement(prefix="2001:db8:100::/48", route_servers=[]), "route-server", "rs1, rs2"),
    (Announcement(prefix="192.0.2.0/24"), "malformed", "IPv6"),
    (Announcement(prefix="2001:db8:100::1/48"), "malformed", "CIDR"),
    (Announcement(prefix="not-a-prefix"), "malformed", "CIDR"),
])
def test_each_rule_names_itself_and_the_allowed_values(ann: Announcement, rule: str, allowed: str) -> None:
    """Every refusal carries its rule and says what is allowed."""
    error = refuse(ann)
    assert error.rule == rule
    assert allowed in error.message
    assert rule in str(error)


def test_as_path_length_is_checked_on_its_own() -> None:
    """With a looser prepend limit, the AS path limit still applies."""
    error = refuse(Announcement(prefix="2001:db8:100::/48", prepend=5), SafetySettings(max_prepend=10))
    assert error.rule == "as-path" and "at most 5" in error.message


def test_rate_limit_per_prefix() -> None:
    """A second change within the interval is refused (naming when it is allowed); other prefixes are not."""
    settings = SafetySettings(min_change_interval=600)
    history = {"2001:db8:100::/48": NOW - timedelta(seconds=599)}
    error = refuse(Announcement(prefix="2001:db8:100::/48"), settings, history)
    assert error.rule == "rate-limit" and "600" in error.message
    check_announcement(Announcement(prefix="2001:db8:200::/48"), LEASES, settings, history, NOW)
    history = {"2001:db8:100::/48": NOW - timedelta(seconds=600)}
    check_announcement(Announcement(prefix="2001:db8:100::/48"), LEASES, settings, history, NOW)
    # The embedded lab's default is permissive.
    check_announcement(Announcement(prefix="2001:db8:100::/48"), LEASES, DEFAULT,
                       {"2001:db8:100::/48": NOW}, NOW)


def test_rate_limit_defaults_follow_the_gateway() -> None:
    """Loopback (the embedded lab) has no rate limit; a remote platform gets 600 s; overrides win."""
    assert SafetySettings.for_gateway("http://127.0.0.1:8000").min_change_interval == 0
    assert SafetySettings.for_gateway("http://[::1]:8000").min_change_interval == 0
    assert SafetySettings.for_gateway("https://peerlab.example.net").min_change_interval == 600
    assert SafetySettings.for_gateway("https://x.example", min_change_interval=5).min_change_interval == 5


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_any_valid_community_passes(a: int, b: int) -> None:
    """Property: every A:B with 16-bit parts is accepted."""
    check_announcement(Announcement(prefix="2001:db8:100::/48", communities=[f"{a}:{b}"]), LEASES, DEFAULT,
                       {}, NOW)


@given(st.integers(65536, 2**40), st.booleans())
def test_any_oversized_community_part_is_refused(big: int, first: bool) -> None:
    """Property: a part above 65535, in either position, is refused as malformed."""
    value = f"{big}:1" if first else f"1:{big}"
    assert refuse(Announcement(prefix="2001:db8:100::/48", communities=[value])).rule == "malformed"


def test_lease_schedule_warns_once_then_withdraws() -> None:
    """Warn ``warn_ahead`` before the withdrawal (once), withdraw ``withdraw_margin`` before the end."""
    settings = SafetySettings(withdraw_margin=60, warn_ahead=300)
    end = LEASE.end_time
    announced = ["2001:db8:100::/48"]
    assert lease_actions(announced, LEASES, settings, end - timedelta(seconds=361), set()) == []
    actions = lease_actions(announced, LEASES, settings, end - timedelta(seconds=359), set())
    assert [(a.action, a.at) for a in actions] == [("warn", end - timedelta(seconds=60))]
    warned = {actions[0].key}
    assert lease_actions(announced, LEASES, settings, end - timedelta(seconds=100), warned) == []
    actions = lease_actions(announced, LEASES, settings, end - timedelta(seconds=60), warned)
    assert [a.action for a in actions] == ["withdraw"]


def test_a_renewed_lease_warns_again() -> None:
    """The warning is remembered per (prefix, lease end): after a renewal the new end warns again."""
    settings = SafetySettings(withdraw_margin=60, warn_ahead=300)
    announced = ["2001:db8:100::/48"]
    first = lease_actions(announced, [LEASE], settings, LEASE.end_time - timedelta(seconds=300), set())
    assert [a.action for a in first] == ["warn"]
    warned = {first[0].key}
    renewed = LEASE.model_copy(update={"end_time": LEASE.end_time + HOUR})
    # Renewed before the withdrawal: nothing to do until the new end comes near ...
    assert lease_actions(announced, [renewed], settings, LEASE.end_time - timedelta(seconds=30), warned) == []
    # ... and then a fresh warning for the new end.
    again = lease_actions(announced, [renewed], settings, renewed.end_time - timedelta(seconds=300), warned)
    assert [(a.action, a.lease_end) for a in again] == [("warn", renewed.end_time)]


def test_exit_codes_of_refusals() -> None:
    """Malformed input is bad input (2), an unknown route server is not found (6), a policy refusal is 4;
    every one keeps its rule."""
    malformed = refuse(Announcement(prefix="2001:db8:100::1/48"))
    assert (malformed.rule, malformed.exit_code, isinstance(malformed, InputError)) == ("malformed", 2, True)
    ipv4 = refuse(Announcement(prefix="10.0.0.0/8"))
    assert (ipv4.rule, ipv4.exit_code) == ("malformed", 2)
    community = refuse(Announcement(prefix="2001:db8:100::/48", communities=["1:2:3"]))
    assert (community.rule, community.exit_code) == ("malformed", 2)
    # The route-server check comes before the lease check: unknown is 6 even for an unleased prefix.
    unknown = refuse(Announcement(prefix="2001:db8:300::/48", route_servers=["rs9"]))
    assert (unknown.rule, unknown.exit_code) == ("route-server", 6)
    assert "rs9" in unknown.message and "rs1, rs2" in unknown.message
    lease = refuse(Announcement(prefix="2001:db8:300::/48"))
    assert (lease.rule, lease.exit_code) == ("lease", 4)


def test_lease_schedule_withdraws_what_no_lease_covers() -> None:
    """A released lease (gone from the list) means its announcements are withdrawn at once."""
    actions = lease_actions(["2001:db8:100::/48"], [OTHER], DEFAULT, NOW, set())
    assert [(a.prefix, a.action) for a in actions] == [("2001:db8:100::/48", "withdraw")]
