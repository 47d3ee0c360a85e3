"""The agent against a real route-server BIRD and a real user-side BIRD (veth + bridge, no WireGuard).

The gateway is an in-memory stand-in here so each policy change is exact; test_gateway_e2e.py runs the same
agent (as the CLI) against the real gateway.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.rsagent.agent import Agent
from lab.rsagent.policy import RouteFacts, evaluate
from lab.rsagent.render import protocol_name
from peerlab_tui.core.models import Mapping, TunnelPeer
from tests.rsagent.conftest import Announce, FakeGateway, RsLab, make_settings, rs_lab, wait_for
from tests.support.sessions import assert_no_reset

pytestmark = pytest.mark.netns

ALICE, BOB = 65001, 65002
ALICE_ADDR = "fd00:100::101"
ALICE_KEY = "a" * 42 + "Y="  # canonical base64 (zero padding bits), as WireGuard reports it
LEASES = [f"2001:db8:100:{i:x}00::/56" for i in range(1, 8)]
BOB_LEASE = "2001:db8:1ff::/48"

# prefix -> (announcement, the rule expected to refuse it or None)
CASES: dict[str, tuple[Announce, str | None]] = {
    LEASES[0]: (Announce(LEASES[0], [ALICE]), None),
    LEASES[1]: (Announce(LEASES[1], [ALICE, 65002]), "origin_as"),
    LEASES[2]: (Announce(LEASES[2], [65003, ALICE]), "first_as"),
    LEASES[3]: (Announce(LEASES[3], [ALICE] * 6), "as_path_length"),
    LEASES[4]: (Announce(LEASES[4], [ALICE], communities=6), "communities"),
    LEASES[5]: (Announce(LEASES[5], [ALICE], large_communities=6), "large_communities"),
    LEASES[6]: (Announce(LEASES[6], [ALICE] * 5, communities=5, large_communities=5), None),  # at the limits
    BOB_LEASE: (Announce(BOB_LEASE, [ALICE]), "not_leased"),  # another user's prefix
    "2001:db8:1fe::/48": (Announce("2001:db8:1fe::/48", [ALICE]), "not_leased"),  # nobody's
    "2001:db8:100:100::/64": (Announce("2001:db8:100:100::/64", [ALICE]), "too_specific"),
    "2001:db8:ff00::/48": (Announce("2001:db8:ff00::/48", [ALICE]), "platform_space"),
    "fd00:dead::/48": (Announce("fd00:dead::/48", [ALICE]), "bogon"),
    "::/0": (Announce("::/0", [ALICE]), "bogon"),
    "2001:db8:100::/44": (Announce("2001:db8:100::/44", [ALICE]), "not_leased"),  # covers the leases
}


def baseline() -> FakeGateway:
    return FakeGateway(
        mapping_list=[Mapping(user_hash="hash-alice", user_id="alice", asn=ALICE, prefixes=list(LEASES)),
                      Mapping(user_hash="hash-bob", user_id="bob", asn=BOB, prefixes=[BOB_LEASE])],
        tunnel_list=[TunnelPeer(user_hash="hash-alice", public_key=ALICE_KEY,
                                addresses=[f"{ALICE_ADDR}/64"])],
    )


PROTO = protocol_name("hash-alice", ALICE)


@dataclass
class World:
    lab: RsLab
    gw: FakeGateway
    since: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One route server with alice's session established under the baseline policy (shared: ~5 s)."""
    settings = make_settings()
    with rs_lab("agt", tmp_path_factory.mktemp("rsagent"), settings) as lab:
        gw = baseline()
        agent = Agent(settings, gw, lab.control, lab.config_dir)
        asyncio.run(agent.step())
        lab.add_user("alice", ALICE, ALICE_ADDR, [a for a, _ in CASES.values()])
        wait_for(lambda: lab.established(PROTO), what="alice's session")
        wait_for(lambda: len(lab.control.show_route(import_table=f"{PROTO}.ipv6")) == len(CASES),
                 what="all announcements received")
        yield World(lab, gw, lab.since())


def new_agent(world: World, **overrides: object) -> Agent:
    return Agent(make_settings(**overrides), world.gw, world.lab.control, world.lab.config_dir,
                 interval=0.3, report_interval=0.5)


def accepted_prefixes(lab: RsLab) -> set[str]:
    return {r.prefix for r in lab.control.show_route(protocol=PROTO)}


def assert_bird_agrees_with_python(world: World, agent: Agent) -> dict[str, str]:
    """For every received route: BIRD's accept/reject == Python's, and BIRD's refusing rule == Python's."""
    lab = world.lab
    plan = agent.applied_plan
    assert plan is not None
    sess = plan.session(PROTO)
    assert sess is not None
    received = lab.control.show_route(import_table=f"{PROTO}.ipv6")
    assert {r.prefix for r in received} == set(CASES)
    accepted = accepted_prefixes(lab)
    verdicts = {r.prefix: evaluate(RouteFacts.from_route(r), plan.policy, sess.policy) for r in received}
    for prefix, verdict in verdicts.items():
        assert (prefix in accepted) == verdict.accepted, (prefix, verdict)
    filtered = {p for p, v in verdicts.items() if not v.accepted}
    logged = wait_for(lambda: (lambda rj: rj if all((PROTO, p) in rj for p in filtered) else None)(
        lab.rejections()), what="BIRD's reject messages")
    for prefix in filtered:
        assert logged[(PROTO, prefix)] == verdicts[prefix].rule, prefix
    return {p: v.rule or "accepted" for p, v in verdicts.items()}


async def test_every_case_bird_and_python_agree(world: World) -> None:
    """Each crafted route gets the expected rule, identically in BIRD and Python; the report says why."""
    agent = new_agent(world)
    await agent.step()
    rules = assert_bird_agrees_with_python(world, agent)
    assert rules == {p: rule or "accepted" for p, (_, rule) in CASES.items()}
    report = {r.prefix: r for r in world.gw.reports[-1]}
    assert report[LEASES[0]].state == "accepted" and report[LEASES[0]].reason is None
    assert report[BOB_LEASE].reason == f"{BOB_LEASE} is not leased to you"
    assert report[LEASES[1]].reason == "origin AS 65002 is not your ASN 65001"
    assert report[LEASES[2]].reason == "first AS 65003 is not your ASN 65001"
    assert report[LEASES[3]].reason == "AS path length 6 exceeds 5"
    assert report[LEASES[4]].reason == "6 communities exceed the limit of 5"
    assert report[LEASES[2]].as_path == [65003, ALICE] and report[LEASES[0]].user_hash == "hash-alice"
    assert len(report[LEASES[4]].communities) == 6
    assert_no_reset(world.since, world.lab.since())


async def test_more_specifics_allowed_by_setting_without_reset(world: World) -> None:
    """max_more_specific_length=64 accepts the /64 inside a lease; going back refuses it; no reset."""
    agent = new_agent(world, max_more_specific_length=64)
    await agent.step()
    wait_for(lambda: "2001:db8:100:100::/64" in accepted_prefixes(world.lab), what="/64 accepted")
    rules = assert_bird_agrees_with_python(world, agent)
    assert rules["2001:db8:100:100::/64"] == "accepted"
    agent = new_agent(world)
    await agent.step()
    wait_for(lambda: "2001:db8:100:100::/64" not in accepted_prefixes(world.lab), what="/64 refused again")
    assert assert_bird_agrees_with_python(world, agent)["2001:db8:100:100::/64"] == "too_specific"
    assert_no_reset(world.since, world.lab.since())


async def test_released_lease_stops_being_accepted_within_5s(world: World) -> None:
    """The agent loop (production intervals) notices the lease is gone at its next poll; BIRD drops the
    route, and the looking glass says why, both within 5 s of the release."""
    agent = Agent(make_settings(), world.gw, world.lab.control, world.lab.config_dir)
    await agent.step()
    assert LEASES[0] in accepted_prefixes(world.lab)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop=stop))
    try:
        world.gw.mapping_list[0] = world.gw.mapping_list[0].model_copy(update={"prefixes": LEASES[1:]})
        released = time.monotonic()
        while LEASES[0] in accepted_prefixes(world.lab):
            assert time.monotonic() - released < 5.0, "route still accepted 5 s after the release"
            await asyncio.sleep(0.05)
        # ... and the looking glass learns why, fresh within 5 s of the release (the promise).
        while not world.gw.reports or next(r for r in world.gw.reports[-1] if r.prefix == LEASES[0]).state \
                != "filtered":
            assert time.monotonic() - released < 5.0, "the looking glass is not fresh 5 s after the release"
            await asyncio.sleep(0.05)
        report = next(r for r in world.gw.reports[-1] if r.prefix == LEASES[0])
        assert report.reason == f"{LEASES[0]} is not leased to you"
        assert assert_bird_agrees_with_python(world, agent)[LEASES[0]] == "not_leased"
        # The lease comes back (renewed): accepted again, still without reset.
        world.gw.mapping_list[0] = world.gw.mapping_list[0].model_copy(update={"prefixes": list(LEASES)})
        await asyncio.to_thread(wait_for, lambda: LEASES[0] in accepted_prefixes(world.lab), 30.0,
                                "re-accept")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        world.gw.mapping_list[:] = baseline().mapping_list
    assert_no_reset(world.since, world.lab.since())


async def test_failed_validation_keeps_running_config(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration BIRD refuses is kept aside; the good file and the running policy stay."""
    from lab.rsagent import agent as agent_module

    agent = new_agent(world)
    await agent.step()
    good = agent.config_path.read_text()
    # A renderer bug: the next configuration has a syntax error BIRD refuses.
    real_render = agent_module.render_plan
    monkeypatch.setattr(agent_module, "render_plan", lambda plan: real_render(plan) + "protocol broken {\n")
    world.gw.mapping_list.append(Mapping(user_hash="hash-carol", user_id="carol", asn=65009,
                                         prefixes=["2001:db8:1fd::/48"]))
    try:
        result = await agent.step()
        assert result.rejected and "bird -p refused" in result.rejected
        assert agent.last_error == result.rejected
        assert agent.config_path.read_text() == good
        assert agent.rejected_path.read_text().endswith("protocol broken {\n")
        status = json.loads((agent.config_dir / "status.json").read_text())
        assert status["last_error"] == result.rejected and status["sessions"] == 1
        assert {p.name for p in world.lab.control.show_protocols()} >= {PROTO}
        assert LEASES[0] in accepted_prefixes(world.lab)
        assert world.lab.established(PROTO)
    finally:
        world.gw.mapping_list[:] = baseline().mapping_list
        monkeypatch.undo()
    result = await agent.step()  # the gateway is sane again: back to the running configuration, no error
    assert result.rejected is None and agent.last_error is None
    assert agent.config_path.read_text() == good
    assert_no_reset(world.since, world.lab.since())


async def test_unchanged_inputs_do_not_rewrite_or_reapply(world: World) -> None:
    """With nothing new from the gateway a step neither writes nor configures; the ETag is reused."""
    agent = new_agent(world)
    await agent.step()
    stat = agent.config_path.stat()
    result = await agent.step()
    assert not result.inputs_changed and not result.config_written and not result.applied
    after = agent.config_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


async def test_wireguard_peers_follow_leases(world: World, tmp_path: Path) -> None:
    """The PeerSync hook gets every tunnel's overlay address plus its leases, again after a change."""
    calls: list[list[tuple[str, list[str]]]] = []

    class Recorder:
        def sync(self, peers: list[tuple[str, list[str]]]) -> None:
            calls.append(peers)

    agent = Agent(make_settings(), world.gw, world.lab.control, world.lab.config_dir, peer_sync=Recorder())
    await agent.step()
    assert calls[-1] == [(ALICE_KEY, [f"{ALICE_ADDR}/128", *sorted(LEASES)])]
    world.gw.mapping_list[0] = world.gw.mapping_list[0].model_copy(update={"prefixes": LEASES[:1]})
    try:
        await agent.step()
        assert calls[-1] == [(ALICE_KEY, [f"{ALICE_ADDR}/128", LEASES[0]])]
        n = len(calls)
        await agent.step()
        assert len(calls) == n  # unchanged: not synced again
    finally:
        world.gw.mapping_list[:] = baseline().mapping_list
        await agent.step()


async def test_disagreement_between_bird_and_python_is_logged_loudly(
        world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """If the Python side drifted from BIRD (here: a rule that no longer checks), the agent reports what
    BIRD really did and logs the mismatch as an error (once it persists past a reload window)."""
    from lab.rsagent import policy

    agent = new_agent(world)
    await agent.step()
    monkeypatch.setattr(policy.CommunitiesRule, "check", lambda self, r, g, u: None)
    with caplog.at_level("INFO", logger="lab.rsagent.agent"):
        first = {r.prefix: r for r in agent.collect_routes()}
        second = {r.prefix: r for r in agent.collect_routes()}
    assert first[LEASES[4]].state == second[LEASES[4]].state == "filtered"  # BIRD's truth is reported
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "POLICY MISMATCH" in r.getMessage()]
    assert len(errors) == 1 and LEASES[4] in errors[0].getMessage()


async def test_route_watch_posts_changes_between_gateway_polls(world: World) -> None:
    """A route the user changes reaches the gateway from the route watch alone (the gateway is polled only
    once here), with the attributes BIRD received; nothing is posted while nothing changes."""
    agent = Agent(make_settings(), world.gw, world.lab.control, world.lab.config_dir, interval=3600,
                  report_interval=3600, watch_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop=stop))
    changed = [a if p != LEASES[0] else Announce(LEASES[0], [ALICE], communities=2)
               for p, (a, _) in CASES.items()]
    try:
        await asyncio.to_thread(wait_for, lambda: agent.last_report is not None, 30.0, "the first report")
        quiet = len(world.gw.reports)
        await asyncio.sleep(agent.watch_interval * 10)
        assert len(world.gw.reports) == quiet  # nothing changed: nothing posted
        world.lab.reannounce("alice", ALICE, ALICE_ADDR, changed)

        def reported_communities() -> list[str] | None:
            last = world.gw.reports[-1] if world.gw.reports else []
            route = next((r for r in last if r.prefix == LEASES[0]), None)
            return route.communities if route is not None and route.communities else None

        communities = await asyncio.to_thread(wait_for, reported_communities, 30.0, "the watch to post")
        assert communities == ["64999:0", "64999:1"]
    finally:
        world.lab.reannounce("alice", ALICE, ALICE_ADDR, [a for a, _ in CASES.values()])
        stop.set()
        await asyncio.wait_for(task, 30)
    assert_no_reset(world.since, world.lab.since())


async def test_wireguard_reconcile_restores_peers_of_a_restarted_device(world: World, tmp_path: Path) -> None:
    """wireguard-go restarted under a running agent comes back without peers; the agent's reconcile against
    the device's actual peers puts them back, without a gateway change and without restarting the agent."""
    from lab.rsagent.wireguard import WireGuardPeerSync
    from peerlab_tui.core import netns
    from peerlab_tui.core.tunnel import create_device, generate_private_key, public_key
    from tests.support.requirements import require_binary

    require_binary("wireguard-go")
    ifname = f"wr{secrets.token_hex(3)}"
    key = generate_private_key()
    dev = create_device(ifname, netns=world.lab.rs_ns)
    agent = Agent(make_settings(), world.gw, world.lab.control, world.lab.config_dir,
                  peer_sync=WireGuardPeerSync(ifname, world.lab.rs_ns), interval=3600,
                  wg_reconcile_interval=0.1)
    stop = asyncio.Event()
    task: asyncio.Task[object] | None = None
    alice_key = public_key(generate_private_key())  # canonical base64, as WireGuard reports it
    world.gw.tunnel_list[0] = world.gw.tunnel_list[0].model_copy(update={"public_key": alice_key})
    try:
        dev.configure(key, None, [])
        task = asyncio.create_task(agent.run(stop=stop))
        want = {alice_key: {f"{ALICE_ADDR}/128", *LEASES}}

        def peers() -> dict[str, set[str]]:
            try:
                return {p.public_key: set(p.allowed_ips) for p in dev.status().peers}
            except Exception:
                return {}

        await asyncio.to_thread(wait_for, lambda: peers() == want, 30.0, "the peers")
        dev.delete()  # wireguard-go dies; a new one starts with the same name and no peers
        assert not netns.link_exists(ifname, netns=world.lab.rs_ns)
        dev = create_device(ifname, netns=world.lab.rs_ns)
        dev.configure(key, None, [])
        await asyncio.to_thread(wait_for, lambda: peers() == want, 30.0, "the peers back on the new device")
        assert not task.done()
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 30)
        dev.delete()
        world.gw.tunnel_list[:] = baseline().tunnel_list


async def test_key_rotation_alone_reaches_wireguard(world: World) -> None:
    """A rotated key changes no BIRD text; the peers still follow it (old key out, new key in)."""
    calls: list[list[tuple[str, list[str]]]] = []

    class Recorder:
        def sync(self, peers: list[tuple[str, list[str]]]) -> None:
            calls.append(peers)

    agent = Agent(make_settings(), world.gw, world.lab.control, world.lab.config_dir, peer_sync=Recorder())
    await agent.step()
    text = agent.config_path.read_text()
    rotated = "b" * 42 + "A="
    world.gw.tunnel_list[0] = world.gw.tunnel_list[0].model_copy(update={"public_key": rotated})
    try:
        result = await agent.step()
        assert not result.config_written and agent.config_path.read_text() == text
        assert [key for key, _ in calls[-1]] == [rotated]
        assert agent.reconcile_wireguard() and [key for key, _ in calls[-1]] == [rotated]
    finally:
        world.gw.tunnel_list[:] = baseline().tunnel_list
        await agent.step()


async def test_change_while_bird_is_down_reaches_wireguard_and_applies_once_bird_is_back(
        world: World, tmp_path: Path) -> None:
    """A key registered while BIRD is unreachable goes to WireGuard at once; the failure is in status.json;
    when BIRD answers again the pending configuration is applied without any further gateway change, and
    the error is cleared."""
    from lab.bird import BirdControl

    calls: list[list[tuple[str, list[str]]]] = []

    class Recorder:
        def sync(self, peers: list[tuple[str, list[str]]]) -> None:
            calls.append(peers)

    agent = Agent(make_settings(), world.gw, world.lab.control, world.lab.config_dir, peer_sync=Recorder())
    await agent.step()
    assert agent.last_error is None
    agent.control = BirdControl(tmp_path / "nobody.ctl", timeout=2)  # BIRD is down
    rotated = "c" * 42 + "A="
    world.gw.tunnel_list[0] = world.gw.tunnel_list[0].model_copy(update={"public_key": rotated})
    world.gw.mapping_list[0] = world.gw.mapping_list[0].model_copy(update={"prefixes": LEASES[:3]})
    status_file = world.lab.config_dir / "status.json"
    try:
        result = await agent.step()
        assert result.error and "apply failed" in result.error and not result.applied
        assert [key for key, _ in calls[-1]] == [rotated]  # WireGuard did not wait for BIRD
        status = json.loads(status_file.read_text())
        assert status["last_error"] and "apply failed" in status["last_error"] and status["pending_apply"]
        # Still down: retried, still reported.
        result = await agent.step()
        assert not result.inputs_changed and result.error and not result.applied
        assert agent.reconcile_wireguard() and [key for key, _ in calls[-1]] == [rotated]
        # BIRD is back; the gateway has not changed since.
        agent.control = world.lab.control
        result = await agent.step()
        assert not result.inputs_changed and result.applied and result.error is None
        status = json.loads(status_file.read_text())
        assert status["last_error"] is None and not status["pending_apply"]
        assert agent.applied_plan is not None and agent.applied_plan.session(PROTO) is not None
        sess = agent.applied_plan.session(PROTO)
        assert sess is not None and len(sess.policy.leases) == 3
    finally:
        world.gw.tunnel_list[:] = baseline().tunnel_list
        world.gw.mapping_list[:] = baseline().mapping_list
        agent.control = world.lab.control
        await agent.step()
