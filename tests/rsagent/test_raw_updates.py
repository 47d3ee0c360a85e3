"""Verdicts on routes a BIRD client cannot send (AS_SET segments, an empty AS_PATH) and the import limit,
against a real route-server BIRD fed by a minimal raw BGP speaker (tests/rsagent/rawbgp.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.rsagent.agent import Agent
from lab.rsagent.policy import RouteFacts, evaluate
from lab.rsagent.render import protocol_name
from peerlab_tui.core import netns
from peerlab_tui.core.models import Mapping, TunnelPeer
from tests.rsagent.conftest import RS_ADDR, FakeGateway, RsLab, make_settings, rs_lab, wait_for

pytestmark = pytest.mark.netns

RAWBGP = Path(__file__).with_name("rawbgp.py")
CAROL, DAVE = 65010, 65020
CAROL_ADDR, DAVE_ADDR = "fd00:100::210", "fd00:100::220"
CAROL_LEASES = [str(ipaddress.IPv6Network(f"2001:db8:110:{i:x}00::/56")) for i in range(4)]
DAVE_LEASES = [str(ipaddress.IPv6Network(f"2001:db8:120:{i:x}00::/56")) for i in range(5)]
# prefix -> AS_PATH segments (is_set, ASNs), exactly as sent
DAVE_PATHS: dict[str, list[tuple[bool, list[int]]]] = {
    DAVE_LEASES[0]: [],  # empty AS_PATH
    DAVE_LEASES[1]: [(False, [DAVE]), (True, [DAVE])],  # ends with a set: no origin AS
    DAVE_LEASES[2]: [(True, [DAVE])],  # only a set
    DAVE_LEASES[3]: [(False, [DAVE]), (True, [65001, 65002]), (False, [DAVE])],  # a set inside
    DAVE_LEASES[4]: [(True, [DAVE, 65001]), (False, [DAVE])],  # starts with a set
}
MAX_PREFIX = 2
CAROL_PROTO = protocol_name("hash-carol", CAROL)
DAVE_PROTO = protocol_name("hash-dave", DAVE)


@dataclass
class Raw:
    lab: RsLab
    gw: FakeGateway
    agent: Agent


def _speaker(lab: RsLab, address: str, asn: int, updates: list[dict[str, object]],
             procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    ns = lab.factory.create("raw")
    if_rs, if_user = lab.factory.unique("r"), lab.factory.unique("u")
    netns.create_veth(if_rs, if_user, netns_a=lab.rs_ns, netns_b=ns)
    netns.attach_to_bridge(if_rs, lab.bridge, netns=lab.rs_ns)
    netns.add_address(if_user, f"{address}/64", netns=ns)
    spec = {"local": address, "peer": RS_ADDR, "asn": asn, "router_id": f"10.9.0.{asn % 200}",
            "updates": updates}
    proc = subprocess.Popen([*netns.netns_prefix(ns), sys.executable, str(RAWBGP), json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Raw]:
    """carol announces her 4 leases (import limit 2); dave announces AS_SET / empty-path routes."""
    settings = make_settings(max_prefix=MAX_PREFIX)
    procs: list[subprocess.Popen[str]] = []
    with rs_lab("raw", tmp_path_factory.mktemp("raw"), settings) as lab:
        gw = FakeGateway(
            mapping_list=[Mapping(user_hash="hash-carol", user_id="carol", asn=CAROL, prefixes=CAROL_LEASES),
                          Mapping(user_hash="hash-dave", user_id="dave", asn=DAVE, prefixes=DAVE_LEASES)],
            tunnel_list=[TunnelPeer(user_hash="hash-carol", public_key="C" * 43 + "=",
                                    addresses=[f"{CAROL_ADDR}/64"]),
                         TunnelPeer(user_hash="hash-dave", public_key="D" * 43 + "=",
                                    addresses=[f"{DAVE_ADDR}/64"])])
        agent = Agent(settings, gw, lab.control, lab.config_dir)
        asyncio.run(agent.step())
        try:
            _speaker(lab, CAROL_ADDR, CAROL, [{"prefixes": CAROL_LEASES, "segments": [[False, [CAROL]]]}],
                     procs)
            _speaker(lab, DAVE_ADDR, DAVE, [{"prefixes": [p], "segments": s} for p, s in DAVE_PATHS.items()],
                     procs)
            for proto, n in ((CAROL_PROTO, len(CAROL_LEASES)), (DAVE_PROTO, len(DAVE_PATHS))):
                wait_for(lambda proto=proto: lab.established(proto), what=f"{proto} established")
                wait_for(lambda proto=proto, n=n: len(lab.control.show_route(import_table=f"{proto}.ipv6"))
                         == n, what=f"{proto}'s routes received")
            yield Raw(lab, gw, agent)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)


def test_import_limit_blocks_routes_beyond_it_and_keeps_the_session(raw: Raw) -> None:
    """max_prefix=2 with 4 leased routes: 2 accepted, 2 filtered "import limit of 2 routes reached"; the
    session stays Established."""
    accepted = {r.prefix for r in raw.lab.control.show_route(protocol=CAROL_PROTO)}
    assert len(accepted) == MAX_PREFIX and accepted <= set(CAROL_LEASES)
    routes = {r.prefix: r for r in raw.agent.collect_routes() if r.user_hash == "hash-carol"}
    assert set(routes) == set(CAROL_LEASES)
    for prefix, route in routes.items():
        if prefix in accepted:
            assert route.state == "accepted" and route.reason is None
        else:
            assert route.state == "filtered"
            assert route.reason == f"import limit of {MAX_PREFIX} routes reached"
            assert route.rule == "import_limit"
    assert raw.lab.established(CAROL_PROTO)


def test_as_sets_and_empty_path_bird_and_python_agree(raw: Raw) -> None:
    """Each AS_SET / empty-path route: BIRD's accept/reject and refusing rule equal the Python policy's, and
    the path BIRD reports parses back to exactly what was sent."""
    plan = raw.agent.applied_plan
    assert plan is not None
    sess = plan.session(DAVE_PROTO)
    assert sess is not None
    received = {r.prefix: r for r in raw.lab.control.show_route(import_table=f"{DAVE_PROTO}.ipv6")}
    accepted = {r.prefix for r in raw.lab.control.show_route(protocol=DAVE_PROTO)}
    verdicts = {}
    for prefix, segments in DAVE_PATHS.items():
        sent = RouteFacts(RouteFacts.of(prefix).prefix, tuple((s, tuple(a)) for s, a in segments))
        assert RouteFacts.from_route(received[prefix]) == sent, prefix
        verdicts[prefix] = evaluate(sent, plan.policy, sess.policy)
        assert (prefix in accepted) == verdicts[prefix].accepted, (prefix, verdicts[prefix])
    filtered = {p for p, v in verdicts.items() if not v.accepted}
    assert filtered, "every AS_SET / empty-path case was accepted"
    logged = wait_for(lambda: (lambda rj: rj if all((DAVE_PROTO, p) in rj for p in filtered) else None)(
        raw.lab.rejections()), what="BIRD's reject messages")
    for prefix in filtered:
        assert logged[(DAVE_PROTO, prefix)] == verdicts[prefix].rule, prefix
    # The looking glass tells dave the same.
    reported = {r.prefix: r for r in raw.agent.collect_routes() if r.user_hash == "hash-dave"}
    for prefix, verdict in verdicts.items():
        assert reported[prefix].state == verdict.state and reported[prefix].reason == verdict.reason
