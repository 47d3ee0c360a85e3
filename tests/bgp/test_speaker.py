"""The speaker against real BIRD route servers, with ExaBGP running in its own namespace."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime

import pytest

from peerlab_tui.core.bgp import (
    Announcement,
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


async def test_lease_expiry_withdraws_before_the_end(make_speaker: SpeakerFactory, bgp_lab: BgpLab) -> None:
    """With a lease ending in a few seconds the announcement is withdrawn before the end, after a warning."""
    prefix = "2001:db8:106::/48"
    lease_list = leases(ends_in=6.0, prefixes=[prefix])
    end = lease_list[0].end_time
    speaker = await make_speaker(lease_list=lease_list, lease_check_interval=0.1,
                                 safety=SafetySettings(withdraw_margin=3.0))
    events = speaker.subscribe()
    await speaker.announce(Announcement(prefix=prefix))
    await bird_has(bgp_lab, "rs1", prefix)
    warning = await events_until(events, "lease-warning")
    assert warning.data["prefix"] == prefix
    withdrawn = await events_until(events, "lease-withdraw")
    assert withdrawn.time < end
    await bird_has(bgp_lab, "rs1", prefix, present=False)
    await bird_has(bgp_lab, "rs2", prefix, present=False)
    assert datetime.now(UTC) < end  # BIRD lost it before the lease ended
    assert speaker.announced() == []


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
