"""What the route server passes on: users get the upstream's and each other's accepted routes, the upstream
gets the users' accepted routes, and the kernel of the route server gets the best routes (it forwards)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from lab.bird import BirdControl
from lab.rsagent.agent import Agent
from lab.rsagent.render import protocol_name, upstream_protocol
from lab.rsagent.settings import Upstream
from peerlab_tui.core import netns
from peerlab_tui.core.models import Mapping, TunnelPeer
from tests.rsagent.conftest import (
    RS_ADDR,
    RS_ASN,
    Announce,
    FakeGateway,
    RsLab,
    make_settings,
    rs_lab,
    wait_for,
)

pytestmark = pytest.mark.netns

ALICE, BOB, TRANSIT = 65001, 65002, 64496
A_LEASE, B_LEASE, UNLEASED = "2001:db8:100::/48", "2001:db8:101::/48", "2001:db8:1fe::/48"
UPSTREAM_ROUTE = "2001:db8:e000::/36"
UPSTREAM_ADDR = "fd00:100::ffff"

UPSTREAM_CONF = f"""log stderr all;
router id 10.255.2.1;
protocol device {{}}
protocol static transit_routes {{ ipv6; route {UPSTREAM_ROUTE} unreachable; }}
protocol bgp to_rs {{
  local as {TRANSIT};
  neighbor {RS_ADDR} as {RS_ASN};
  source address {UPSTREAM_ADDR};
  connect delay time 1;
  ipv6 {{ import all; export where proto = "transit_routes"; }};
}}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RsLab]:
    settings = make_settings(kernel_export=True,
                             upstreams=[Upstream(name="transit", address=UPSTREAM_ADDR, asn=TRANSIT)])
    gw = FakeGateway(
        mapping_list=[Mapping(user_hash="ha", user_id="alice", asn=ALICE, prefixes=[A_LEASE]),
                      Mapping(user_hash="hb", user_id="bob", asn=BOB, prefixes=[B_LEASE])],
        tunnel_list=[TunnelPeer(user_hash="ha", public_key="ka", addresses=["fd00:100::101/64"]),
                     TunnelPeer(user_hash="hb", public_key="kb", addresses=["fd00:100::102/64"])])
    with rs_lab("rt", tmp_path_factory.mktemp("routing"), settings) as lab:
        asyncio.run(Agent(settings, gw, lab.control, lab.config_dir).step())
        lab.add_user("alice", ALICE, "fd00:100::101",
                     [Announce(A_LEASE, [ALICE]), Announce(UNLEASED, [ALICE])])
        lab.add_user("bob", BOB, "fd00:100::102", [Announce(B_LEASE, [BOB])])
        lab.add_node("transit", UPSTREAM_ADDR, UPSTREAM_CONF)
        for proto in (protocol_name("ha", ALICE), protocol_name("hb", BOB), upstream_protocol("transit")):
            wait_for(lambda p=proto: lab.established(p), what=f"session {proto}")
        yield lab


def _routes(lab: RsLab, node: str) -> dict[str, list[int]]:
    with BirdControl(lab.users[node].socket_path) as ctl:
        return {r.prefix: r.as_path for r in ctl.show_route(protocol="to_rs")}


def test_users_get_upstream_and_other_users_accepted_routes(lab: RsLab) -> None:
    """Alice sees the transit route and Bob's; never her own, never anything filtered."""
    want = {UPSTREAM_ROUTE: [RS_ASN, TRANSIT], B_LEASE: [RS_ASN, BOB]}
    got = wait_for(lambda: (r := _routes(lab, "alice")) == want and r, what="alice's received routes")
    assert got == want
    want_bob = {UPSTREAM_ROUTE: [RS_ASN, TRANSIT], A_LEASE: [RS_ASN, ALICE]}
    assert wait_for(lambda: _routes(lab, "bob") == want_bob, what="bob's received routes")


def test_upstream_gets_only_accepted_user_routes(lab: RsLab) -> None:
    """The transit receives both leases (origin kept) and not the unleased prefix."""
    want = {A_LEASE: [RS_ASN, ALICE], B_LEASE: [RS_ASN, BOB]}
    assert wait_for(lambda: _routes(lab, "transit") == want, what="the transit's received routes")


def test_route_server_kernel_forwards_best_routes(lab: RsLab) -> None:
    """The route server's kernel table holds the accepted leases and the transit route (it forwards)."""
    def kernel() -> str | None:
        text = netns.run(["ip", "-6", "route", "show", "proto", "bird"], netns=lab.rs_ns).stdout
        return text if all(p in text for p in (A_LEASE, B_LEASE, UPSTREAM_ROUTE)) else None

    text = wait_for(kernel, what="kernel routes")
    assert UNLEASED not in text
    assert "via fd00:100::101" in next(line for line in text.splitlines() if line.startswith(A_LEASE))
