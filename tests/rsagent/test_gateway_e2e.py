"""End to end with the REAL gateway: users lease through the user API, ``peerlab-tui rs-agent`` (the CLI, as
the topology runs it) drives a real route-server BIRD, a user-side BIRD announces, and the user reads the
verdicts from the looking glass (``/api/user/routes``)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.rsagent.policy import RouteFacts, evaluate
from lab.rsagent.render import build_plan, protocol_name
from lab.rsagent.settings import write_settings
from peerlab_tui.core.models import MappingList, TunnelPeerList
from tests.rsagent.conftest import RS_ADDR, Announce, RsLab, make_settings, rs_lab, wait_for
from tests.support.gateway import PEERLAB, GatewayHandle, start_gateway
from tests.support.sessions import assert_no_reset

pytestmark = pytest.mark.netns

POOL = "2001:db8:1000::/40"


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class E2E:
    gw: GatewayHandle
    lab: RsLab
    service_token: str
    alice: dict[str, Any]
    alice_asn: int
    alice_leases: list[str]
    bob_lease: str
    proto: str
    expected: dict[str, str | None]  # prefix -> rule
    agent: subprocess.Popen[bytes]
    agent_log: Path
    clock_file: Path
    since: dict[str, str]

    def call(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        resp = httpx.request(method, self.gw.url + path, headers={"Authorization": f"Bearer {token}"},
                             timeout=30, **kw)
        assert resp.status_code < 300, (path, resp.status_code, resp.text)
        return resp

    def looking_glass(self) -> dict[str, dict[str, Any]]:
        routes = self.call("GET", "/api/user/routes", self.alice["token"]).json()["routes"]
        return {r["prefix"]: r for r in routes if r["rs"] == "rs1"}

    def accepted(self) -> set[str]:
        return {r.prefix for r in self.lab.control.show_route(protocol=self.proto)}


def _user(gw: GatewayHandle, name: str, n_leases: int) -> tuple[dict[str, Any], int, list[str], list[str]]:
    user = gw.create_user(name, max_leases=10)
    h = {"Authorization": f"Bearer {user['token']}"}
    asn = httpx.post(gw.url + "/api/user/asn", headers=h, timeout=30).json()["asn"]
    leases = []
    for _ in range(n_leases):
        resp = httpx.post(gw.url + "/api/user/prefix", json={"duration_hours": 2}, headers=h, timeout=30)
        assert resp.status_code == 200, resp.text
        leases.append(resp.json()["prefix"])
    addresses: list[str] = []
    if name == "alice":
        resp = httpx.post(gw.url + "/api/user/tunnel", json={"public_key": _key()}, headers=h, timeout=30)
        assert resp.status_code == 200, resp.text
        addresses = resp.json()["addresses"]
    return user, asn, leases, addresses


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """Gateway + route server + alice's BIRD + the agent CLI, policy converged (shared by the module)."""
    tmp = tmp_path_factory.mktemp("rse2e")
    clock_file = tmp / "clock"
    gw_config = {
        "prefix_pools": [POOL], "lease_length": 48, "max_leases": 10, "clock_file": str(clock_file),
        "route_servers": [{"name": "rs1", "public_key": _key(), "endpoint": "[fd00::1]:51820",
                           "overlay_network": "fd00:100::/64", "overlay_address": RS_ADDR, "asn": 64500}],
    }
    with start_gateway(tmp, config=gw_config) as gw:
        alice, asn, leases, addresses = _user(gw, "alice", 6)
        _bob, _bob_asn, bob_leases, _ = _user(gw, "bob", 1)
        token = gw.create_service_token("rs1", ["mappings:read", "tunnels:read", "routes:write"])
        address = next(a.split("/")[0] for a in addresses if a.startswith("fd00:100:"))
        more_specific = leases[0].replace("::/48", "::/56")
        announces = {
            leases[0]: (Announce(leases[0], [asn]), None),
            leases[1]: (Announce(leases[1], [asn, 65333]), "origin_as"),
            leases[2]: (Announce(leases[2], [65333, asn]), "first_as"),
            leases[3]: (Announce(leases[3], [asn] * 6), "as_path_length"),
            leases[4]: (Announce(leases[4], [asn], communities=6), "communities"),
            leases[5]: (Announce(leases[5], [asn, asn]), None),
            bob_leases[0]: (Announce(bob_leases[0], [asn]), "not_leased"),
            "2001:db8:10ff::/48": (Announce("2001:db8:10ff::/48", [asn]), "not_leased"),
            more_specific: (Announce(more_specific, [asn]), "too_specific"),
        }
        settings = make_settings(pools=[POOL])
        with rs_lab("e2e", tmp, settings) as lab:
            write_settings(lab.config_dir, settings)
            agent_log = tmp / "agent.log"
            env = {**os.environ, "PEERLAB_SERVICE_TOKEN": token}
            with agent_log.open("wb") as log:
                agent = subprocess.Popen(
                    [PEERLAB, "-v", "rs-agent", "--rs", "rs1", "--gateway", gw.url, "--bird-socket",
                     str(lab.rs.socket_path), "--config-dir", str(lab.config_dir), "--interval", "0.5",
                     "--report-interval", "1"], stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                lab.add_user("alice", asn, address, [a for a, _ in announces.values()])
                proto = protocol_name(alice["user_hash"], asn)
                wait_for(lambda: lab.established(proto), what=f"alice's session {proto}")
                world = E2E(gw, lab, token, alice, asn, leases, bob_leases[0], proto,
                            {p: rule for p, (_, rule) in announces.items()}, agent, agent_log, clock_file,
                            lab.since())
                wait_for(lambda: set(world.looking_glass()) == set(announces), what="the looking glass")
                yield world
            finally:
                if agent.poll() is None:
                    agent.send_signal(signal.SIGTERM)
                    try:
                        agent.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        agent.kill()
                        agent.wait(timeout=20)


def _service_inputs(w: E2E) -> tuple[MappingList, TunnelPeerList]:
    h = w.service_token
    return (MappingList.model_validate(w.call("GET", "/service/mappings", h).json()),
            TunnelPeerList.model_validate(w.call("GET", "/service/tunnels", h).json()))


def test_looking_glass_explains_every_case(e2e: E2E) -> None:
    """The user sees each route accepted or filtered for the right reason, as reported by the agent."""
    lg = e2e.looking_glass()
    for prefix, rule in e2e.expected.items():
        assert lg[prefix]["state"] == ("accepted" if rule is None else "filtered"), (prefix, lg[prefix])
        # The machine-readable rule travels agent -> gateway -> user with the human reason.
        assert lg[prefix]["rule"] == rule, (prefix, lg[prefix])
    leases = e2e.alice_leases
    assert lg[leases[0]]["reason"] is None
    assert lg[e2e.bob_lease]["reason"] == f"{e2e.bob_lease} is not leased to you"
    assert lg["2001:db8:10ff::/48"]["reason"] == "2001:db8:10ff::/48 is not leased to you"
    assert lg[leases[1]]["reason"] == f"origin AS 65333 is not your ASN {e2e.alice_asn}"
    assert lg[leases[2]]["reason"] == f"first AS 65333 is not your ASN {e2e.alice_asn}"
    assert lg[leases[3]]["reason"] == "AS path length 6 exceeds 5"
    assert lg[leases[4]]["reason"] == "6 communities exceed the limit of 5"
    ms = leases[0].replace("::/48", "::/56")
    assert lg[ms]["reason"] == (f"{ms} is more specific than your lease {leases[0]} "
                                "(only the exact prefix is accepted)")
    assert lg[leases[3]]["as_path"] == [e2e.alice_asn] * 6


def test_bird_and_python_agree_on_every_route(e2e: E2E) -> None:
    """BIRD's accept/reject and the rule it logged equal the Python policy's, route by route."""
    mappings, tunnels = _service_inputs(e2e)
    plan = build_plan(make_settings(pools=[POOL]), mappings.mappings, tunnels.peers)
    sess = plan.session(e2e.proto)
    assert sess is not None
    received = e2e.lab.control.show_route(import_table=f"{e2e.proto}.ipv6")
    assert {r.prefix for r in received} == set(e2e.expected)
    accepted = e2e.accepted()
    logged = e2e.lab.rejections()
    for route in received:
        v = evaluate(RouteFacts.from_route(route), plan.policy, sess.policy)
        assert v.rule == e2e.expected[route.prefix]
        assert (route.prefix in accepted) == v.accepted
        if not v.accepted:
            assert logged[(e2e.proto, route.prefix)] == v.rule
    assert b"POLICY MISMATCH" not in e2e.agent_log.read_bytes()


def test_once_cli_reports_the_plan(e2e: E2E) -> None:
    """``rs-agent --once --json`` (beside the running agent) applies nothing new and summarises the plan."""
    out = subprocess.run(
        [PEERLAB, "rs-agent", "--rs", "rs1", "--gateway", e2e.gw.url, "--token", e2e.service_token,
         "--bird-socket", str(e2e.lab.rs.socket_path), "--config-dir", str(e2e.lab.config_dir), "--once",
         "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["protocols"] == [e2e.proto] and summary["rejected"] is None
    assert summary["config_written"] is False
    assert_no_reset(e2e.since, e2e.lab.since())


def test_release_stops_the_route_within_5s_without_reset(e2e: E2E) -> None:
    """Releasing a lease: the route server refuses the route within 5 s; the session stays up."""
    prefix = e2e.alice_leases[0]
    assert prefix in e2e.accepted()
    e2e.call("DELETE", f"/api/user/prefix/{prefix}", e2e.alice["token"])
    released = time.monotonic()
    while prefix in e2e.accepted():
        assert time.monotonic() - released < 5.0, "route still accepted 5 s after its release"
        time.sleep(0.05)
    wait_for(lambda: e2e.looking_glass()[prefix]["state"] == "filtered", what="looking glass update")
    assert e2e.looking_glass()[prefix]["reason"] == f"{prefix} is not leased to you"
    assert_no_reset(e2e.since, e2e.lab.since())


def test_expiry_stops_the_routes_within_5s_without_reset(e2e: E2E) -> None:
    """Leases expire (the gateway's clock moves 3 h): the still accepted route goes within 5 s."""
    prefix = e2e.alice_leases[5]
    assert prefix in e2e.accepted()
    e2e.clock_file.write_text(str(3 * 3600))
    moved = time.monotonic()
    while prefix in e2e.accepted():
        assert time.monotonic() - moved < 5.0, "route still accepted 5 s after its lease expired"
        time.sleep(0.05)
    wait_for(lambda: all(r["state"] == "filtered" for r in e2e.looking_glass().values()),
             what="every route filtered")
    reason = e2e.looking_glass()[prefix]["reason"]
    assert reason == f"{prefix} is not leased to you (you hold no active lease)"
    assert_no_reset(e2e.since, e2e.lab.since())
    assert e2e.agent.poll() is None, "the agent died"
    assert b"POLICY MISMATCH" not in e2e.agent_log.read_bytes()
