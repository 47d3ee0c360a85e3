"""The speaker against real BIRD route servers, with ExaBGP running in its own namespace."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime, timedelta

import pytest

from peerlab_tui.core.bgp import (
    Announcement,
    NotAnnouncedError,
    SafetyError,
    SafetySettings,
    SessionState,
    Speaker,
    SpeakerEvent,
    Subscription,
)
from tests.bgp.conftest import (
    REJECT_COMMUNITY,
    USER_ASN,
    BgpLab,
    SpeakerFactory,
    async_wait_until,
    established,
    leases,
)

pytestmark = pytest.mark.netns


async def bird_has(lab: BgpLab, rs: str, prefix: str, present: bool = True, **attrs: object) -> None:
    """Wait until BIRD's ``rs`` protocol has (or no longer has) ``prefix``, with the given attributes."""

    def check() -> bool:
        route = lab.routes(rs).get(prefix)
        if not present:
            return route is None
        return route is not None and all(getattr(route, k) == v for k, v in attrs.items())

    await async_wait_until(check, 30, f"{rs} {'having' if present else 'dropping'} {prefix} {attrs}")


async def test_sessions_establish_and_status(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """Both route server sessions reach established; the status shows them with an uptime and the PID."""
    speaker = await make_speaker()
    status = speaker.status()
    assert status.running and status.pid is not None and status.restarts == 0
    assert [s.rs for s in status.sessions] == ["rs1", "rs2"]
    for session in status.sessions:
        assert session.state is SessionState.ESTABLISHED
        assert session.established_since is not None and session.uptime_seconds is not None
    assert "Established" in bgp_lab.birdc("show", "protocols", "rs1")


async def test_each_attribute_reaches_bird_exactly(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """Next hop, prepend (AS path), communities, large communities and MED arrive as sent; a re-announce
    replaces all attributes; a withdraw removes the route."""
    speaker = await make_speaker()
    prefix = "2001:db8:100::/48"
    own = f"{bgp_lab.prefix}::2"

    await speaker.announce(Announcement(prefix=prefix, route_servers=["rs1"]))
    await bird_has(bgp_lab, "rs1", prefix, as_path=[USER_ASN], next_hop=own, med=None, communities=[],
                   large_communities=[])

    await speaker.announce(Announcement(prefix=prefix, prepend=3, route_servers=["rs1"]))
    await bird_has(bgp_lab, "rs1", prefix, as_path=[USER_ASN] * 4)

    await speaker.announce(Announcement(prefix=prefix, communities=["64500:1", "65535:65535"],
                                        route_servers=["rs1"]))
    await bird_has(bgp_lab, "rs1", prefix, as_path=[USER_ASN], communities=["64500:1", "65535:65535"])

    large = [f"{USER_ASN}:1:2", "4294967295:0:7"]
    await speaker.announce(Announcement(prefix=prefix, large_communities=large, route_servers=["rs1"]))
    await bird_has(bgp_lab, "rs1", prefix, communities=[], large_communities=large)

    await speaker.announce(Announcement(prefix=prefix, med=4242, route_servers=["rs1"]))
    await bird_has(bgp_lab, "rs1", prefix, med=4242, large_communities=[])

    other_hop = f"{bgp_lab.prefix}::99"
    await speaker.announce(Announcement(prefix=prefix, next_hop=other_hop, prepend=1, med=7,
                                        communities=["64500:9"], large_communities=["1:2:3"],
                                        route_servers=["rs1"]))
    await bird_has(bgp_lab, "rs1", prefix, next_hop=other_hop, as_path=[USER_ASN, USER_ASN], med=7,
                   communities=["64500:9"], large_communities=["1:2:3"])

    # Replacing with a bare announcement clears every optional attribute.
    await speaker.announce(Announcement(prefix=prefix, route_servers=["rs1"]))
    await bird_has(bgp_lab, "rs1", prefix, next_hop=own, as_path=[USER_ASN], med=None, communities=[],
                   large_communities=[])
    assert [a.prefix for a in speaker.announced()] == [prefix]

    await speaker.withdraw(prefix)
    await bird_has(bgp_lab, "rs1", prefix, present=False)
    assert speaker.announced() == []


async def test_route_server_subset_is_respected(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """Announcing to a subset touches only those neighbors, also when re-announcing and withdrawing."""
    speaker = await make_speaker()
    prefix = "2001:db8:101::/48"
    await speaker.announce(Announcement(prefix=prefix, med=1, route_servers=["rs1"]))
    await bird_has(bgp_lab, "rs1", prefix, med=1)
    assert prefix not in bgp_lab.routes("rs2")

    await speaker.announce(Announcement(prefix=prefix, med=2, route_servers=["rs2"]))
    await bird_has(bgp_lab, "rs2", prefix, med=2, next_hop=f"{bgp_lab.prefix}::12")
    assert bgp_lab.routes("rs1")[prefix].med == 1  # rs1 keeps its own attributes

    await speaker.withdraw(prefix, rs=["rs1"])
    await bird_has(bgp_lab, "rs1", prefix, present=False)
    assert bgp_lab.routes("rs2")[prefix].med == 2
    assert [(a.rs, a.prefix) for a in speaker.announced()] == [("rs2", prefix)]

    # No subset: every route server.
    await speaker.announce(Announcement(prefix=prefix, med=3))
    await bird_has(bgp_lab, "rs1", prefix, med=3)
    await bird_has(bgp_lab, "rs2", prefix, med=3)


async def test_route_server_import_filter_refusal_is_visible(make_speaker: SpeakerFactory,
                                                             bgp_lab: BgpLab) -> None:
    """A community the route server's policy rejects: rs1 accepts, rs2 keeps the route as filtered."""
    speaker = await make_speaker()
    prefix = "2001:db8:102::/48"
    await speaker.announce(Announcement(prefix=prefix, communities=[REJECT_COMMUNITY]))
    await bird_has(bgp_lab, "rs1", prefix, communities=[REJECT_COMMUNITY])
    await async_wait_until(lambda: prefix in bgp_lab.routes("rs2", filtered=True), 30, "rs2 filtering")
    assert prefix not in bgp_lab.routes("rs2")


async def test_received_routes_follow_bird(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """BIRD's static routes appear in the Adj-RIB-In with their attributes; withdrawn by BIRD, they go."""
    speaker = await make_speaker()
    events = speaker.subscribe()
    await async_wait_until(lambda: len(speaker.received()) == 4, 30, "4 received routes")
    rs1 = {r.prefix: r for r in speaker.received("rs1")}
    assert set(rs1) == {"2001:db8:f00::/48", "2001:db8:f01::/48"}
    assert rs1["2001:db8:f00::/48"].communities == ["64500:10"]
    assert rs1["2001:db8:f00::/48"].large_communities == ["64500:1:2"]
    assert rs1["2001:db8:f01::/48"].communities == ["64500:20", "64500:21"]
    assert rs1["2001:db8:f01::/48"].as_path == [64510, 64511] and rs1["2001:db8:f01::/48"].med == 33
    assert rs1["2001:db8:f00::/48"].next_hop == f"{bgp_lab.prefix}::1"
    assert rs1["2001:db8:f00::/48"].as_path == []  # a route server is transparent; the origin is BIRD itself
    rs2 = {r.prefix: r for r in speaker.received("rs2")}
    assert rs2["2001:db8:f01::/48"].next_hop == f"{bgp_lab.prefix}::11"
    assert [s.received_routes for s in speaker.sessions()] == [2, 2]

    bgp_lab.birdc("disable", "peers_static")
    try:
        await async_wait_until(lambda: speaker.received() == [], 30, "routes withdrawn by BIRD")
        kinds = []
        while True:
            try:
                kinds.append((await events.get(0.01)).kind)
            except TimeoutError:
                break
        assert kinds.count("withdrawn") == 4
    finally:
        bgp_lab.birdc("enable", "peers_static")
    await async_wait_until(lambda: len(speaker.received()) == 4, 30, "routes back")


async def test_exabgp_killed_is_restarted_and_announcements_restored(make_speaker: SpeakerFactory,
                                                                     bgp_lab: BgpLab) -> None:
    """Kill ExaBGP: it comes back, sessions re-establish, BIRD sees the announcements again."""
    speaker = await make_speaker(backoff_initial=0.2)
    events = speaker.subscribe()
    prefix_a, prefix_b = "2001:db8:103::/48", "2001:db8:104::/48"
    await speaker.announce(Announcement(prefix=prefix_a, prepend=1, communities=["64500:5"]))
    await speaker.announce(Announcement(prefix=prefix_b, med=9, route_servers=["rs2"]))
    await bird_has(bgp_lab, "rs1", prefix_a, as_path=[USER_ASN] * 2)
    await bird_has(bgp_lab, "rs2", prefix_b, med=9)

    old_pid = speaker.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    # BIRD loses the session (and the routes) with the process...
    await bird_has(bgp_lab, "rs2", prefix_b, present=False)
    # ...and gets them back from the restarted one.
    await async_wait_until(lambda: speaker.restarts == 1, 30, "restart recorded")
    await established(speaker)
    await bird_has(bgp_lab, "rs1", prefix_a, as_path=[USER_ASN] * 2, communities=["64500:5"])
    await bird_has(bgp_lab, "rs2", prefix_a, as_path=[USER_ASN] * 2)
    await bird_has(bgp_lab, "rs2", prefix_b, med=9)
    assert prefix_b not in bgp_lab.routes("rs1")
    status = speaker.status()
    assert status.pid not in (None, old_pid)
    assert status.restarts == 1 and status.last_restart_reason is not None
    # Established again: the "exabgp stopped" of the killed process is no longer the sessions' last error.
    assert [(s.last_error, s.last_notification) for s in status.sessions] == [(None, None), (None, None)]
    assert "-9" in status.last_restart_reason
    seen = []
    while True:
        try:
            seen.append(await events.get(0.01))
        except TimeoutError:
            break
    assert any(e.kind == "restart" for e in seen)


async def test_refusals_send_nothing(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """Each client-side refusal raises with its rule; ExaBGP gets no command and BIRD's table is unchanged."""
    speaker = await make_speaker(lease_list=leases(prefixes=["2001:db8:105::/48"]),
                                 safety=SafetySettings(min_change_interval=600))
    good = "2001:db8:105::/48"
    await speaker.announce(Announcement(prefix=good, med=1))
    await bird_has(bgp_lab, "rs1", good, med=1)
    before_rs1, before_rs2 = bgp_lab.routes("rs1"), bgp_lab.routes("rs2")
    sent_before = list(speaker.sent_commands)
    cases = [
        (Announcement(prefix="2001:db8:106::/48"), "lease"),
        (Announcement(prefix="2001:db8:105:1::/64"), "more-specific"),
        (Announcement(prefix="2001:db8:105::/48", prepend=5), "prepend"),
        (Announcement(prefix="2001:db8:105::/48", communities=[f"64500:{i}" for i in range(6)]),
         "communities"),
        (Announcement(prefix="2001:db8:105::/48", large_communities=[f"1:2:{i}" for i in range(6)]),
         "large-communities"),
        (Announcement(prefix="2001:db8:105::/48", communities=["65536:1"]), "malformed"),
        (Announcement(prefix="2001:db8:105::/48", large_communities=["4294967296:1:1"]), "malformed"),
        (Announcement(prefix="10.0.0.0/8"), "malformed"),
        (Announcement(prefix="2001:db8:105::1/48"), "malformed"),
        (Announcement(prefix="2001:db8:105::/48", route_servers=["rs9"]), "route-server"),
        (Announcement(prefix="2001:db8:105::/48", med=2), "rate-limit"),
    ]
    for ann, rule in cases:
        with pytest.raises(SafetyError) as info:
            await speaker.announce(ann)
        assert info.value.rule == rule, (ann, info.value)
        with pytest.raises(SafetyError):
            speaker.preview(ann)
    await asyncio.sleep(1.0)  # anything wrongly sent would have reached BIRD by now
    assert speaker.sent_commands == sent_before
    assert bgp_lab.routes("rs1") == before_rs1 and bgp_lab.routes("rs2") == before_rs2
    assert bgp_lab.routes("rs1")[good].med == 1


class SteppedClock:
    """Real time plus an offset the test moves forward: the lease schedule is exercised without waiting for
    (or racing) the wall clock."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def jump_to(self, when: datetime) -> None:
        """Make ``now`` be ``when`` (it only ever moves forward)."""
        self.offset = max(self.offset, when - datetime.now(UTC))


async def test_lease_expiry_withdraws_before_the_end(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """The schedule in the status (withdraw_at, warned), a warning ahead, then the announcement withdrawn
    before the lease ends. The lease is set once the sessions are up and time is stepped, so a loaded
    machine cannot make it expire before the announcement."""
    prefix = "2001:db8:106::/48"
    clock = SteppedClock()
    settings = SafetySettings(withdraw_margin=60, warn_ahead=300)
    speaker = await make_speaker(lease_list=[], lease_check_interval=0.1, safety=settings, clock=clock)
    lease_list = leases(ends_in=3600.0, prefixes=[prefix])
    end = lease_list[0].end_time
    speaker.set_leases(lease_list)
    events = speaker.subscribe()
    await speaker.announce(Announcement(prefix=prefix))
    await bird_has(bgp_lab, "rs1", prefix)
    withdraw_at = end - timedelta(seconds=60)
    assert {(a.rs, a.withdraw_at, a.warned) for a in speaker.announced()} == {
        ("rs1", withdraw_at, False), ("rs2", withdraw_at, False)}

    clock.jump_to(withdraw_at - timedelta(seconds=299))  # inside the 5-minute warning window
    warning = await events_until(events, "lease-warning")
    assert warning.data == {"prefix": prefix, "withdraw_at": withdraw_at.isoformat()}
    assert all(a.warned for a in speaker.announced())
    assert prefix in bgp_lab.routes("rs1")  # a warning withdraws nothing

    clock.jump_to(withdraw_at)
    withdrawn = await events_until(events, "lease-withdraw")
    assert withdrawn.time < end
    await bird_has(bgp_lab, "rs1", prefix, present=False)
    await bird_has(bgp_lab, "rs2", prefix, present=False)
    assert clock() < end  # BIRD lost it before the lease ended
    assert speaker.announced() == []


async def test_a_renewed_lease_is_warned_about_again(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """Warned, then renewed (a new end): the warning for the new end comes again."""
    prefix = "2001:db8:107::/48"
    clock = SteppedClock()
    settings = SafetySettings(withdraw_margin=60, warn_ahead=300)
    speaker = await make_speaker(lease_list=leases(ends_in=3600.0, prefixes=[prefix]),
                                 lease_check_interval=0.1, safety=settings, clock=clock)
    lease = speaker.leases[0]
    events = speaker.subscribe()
    await speaker.announce(Announcement(prefix=prefix, route_servers=["rs1"]))
    clock.jump_to(lease.end_time - timedelta(seconds=300))
    first = await events_until(events, "lease-warning")
    renewed = lease.model_copy(update={"end_time": lease.end_time + timedelta(hours=1)})
    speaker.set_leases([renewed])
    assert [a.warned for a in speaker.announced()] == [False]  # the new end has not been warned about
    clock.jump_to(renewed.end_time - timedelta(seconds=300))
    second = await events_until(events, "lease-warning")
    assert first.data["withdraw_at"] != second.data["withdraw_at"]
    assert second.data["withdraw_at"] == (renewed.end_time - timedelta(seconds=60)).isoformat()
    assert [a.prefix for a in speaker.announced()] == [prefix]  # still up: it was renewed in time


async def test_rate_limit_history_survives_a_restart(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """The change history is kept in history.json (0600): a new speaker on the same state dir still refuses
    a second change within the interval."""
    prefix = "2001:db8:100::/48"
    settings = SafetySettings(min_change_interval=600)
    first = await make_speaker(state_name="persist", safety=settings)
    await first.announce(Announcement(prefix=prefix, route_servers=["rs1"]))
    await first.stop()
    await bird_has(bgp_lab, "rs1", prefix, present=False)
    path = first.history_path
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert prefix in json.loads(path.read_text())["changes"]
    second = await make_speaker(state_name="persist", safety=settings)
    with pytest.raises(SafetyError) as info:
        await second.announce(Announcement(prefix=prefix, route_servers=["rs1"]))
    assert info.value.rule == "rate-limit"
    assert second.sent_commands == []


async def test_withdrawing_what_is_not_announced_sends_and_records_nothing(make_speaker: SpeakerFactory,
                                                                           bgp_lab: BgpLab) -> None:
    """Not announced (anywhere, or on the route servers named): NotAnnouncedError (exit 6), nothing sent,
    no change recorded, so the rate limit does not lock a later announcement."""
    speaker = await make_speaker(safety=SafetySettings(min_change_interval=600))
    prefix = "2001:db8:101::/48"
    with pytest.raises(NotAnnouncedError) as info:
        await speaker.withdraw(prefix)
    assert info.value.exit_code == 6 and "not announced" in info.value.message
    await speaker.announce(Announcement(prefix=prefix, route_servers=["rs1"]))  # not rate limited
    await bird_has(bgp_lab, "rs1", prefix)
    sent = list(speaker.sent_commands)
    history = speaker.history()
    with pytest.raises(NotAnnouncedError) as info:
        await speaker.withdraw(prefix, rs=["rs2"])
    assert "rs1" in info.value.message
    assert speaker.sent_commands == sent and speaker.history() == history
    assert prefix in bgp_lab.routes("rs1")


async def events_until(events: Subscription, kind: str) -> SpeakerEvent:
    """Read events until one of ``kind`` (fails after 20 s)."""
    async with asyncio.timeout(20):
        while True:
            event = await events.get()
            if event.kind == kind:
                return event


async def test_preview_is_exactly_what_is_sent(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """The preview's commands and AS path are what goes to ExaBGP and what BIRD then shows."""
    speaker: Speaker = await make_speaker()
    ann = Announcement(prefix="2001:db8:107::/48", prepend=2, communities=["64500:3"],
                       large_communities=["7:8:9"], med=11, route_servers=["rs2", "rs1"])
    preview = speaker.preview(ann)
    assert speaker.sent_commands == []  # a preview sends nothing
    assert preview.as_path == [USER_ASN] * 3
    assert preview.route_servers == ["rs1", "rs2"]
    sent = await speaker.announce(ann)
    assert sent == preview
    assert speaker.sent_commands == preview.commands
    assert preview.commands[0] == (
        f"neighbor {bgp_lab.prefix}::1 announce route 2001:db8:107::/48 next-hop {bgp_lab.prefix}::2 "
        f"origin igp as-path [ {USER_ASN} {USER_ASN} {USER_ASN} ] med 11 community [ 64500:3 ] "
        "large-community [ 7:8:9 ]")
    await bird_has(bgp_lab, "rs1", ann.prefix, as_path=preview.as_path, med=11, communities=["64500:3"],
                   large_communities=["7:8:9"], next_hop=preview.next_hops["rs1"])
    await bird_has(bgp_lab, "rs2", ann.prefix, as_path=preview.as_path, next_hop=preview.next_hops["rs2"])
