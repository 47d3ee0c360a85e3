"""The user API over real HTTP on SQLite and PostgreSQL: ASN, leases, release, history, limits."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from peerlab_tui.core.models import AsnResponse, LeaseList, PrefixResponse, UserInfo
from tests.gateway.conftest import GatewayFactory, unique
from tests.gateway.helpers import assert_error, call, enc, user_with_asn
from tests.support.gateway import GatewayHandle


def test_lease_life_cycle(shared_gw: GatewayHandle) -> None:
    """ASN (sticky), lease, info, release by URL-encoded CIDR, history with states."""
    gw = shared_gw
    alice = gw.create_user(unique("alice"))
    tok = alice["token"]

    info = UserInfo.model_validate(call(gw, "GET", "/api/user/info", tok).json())
    assert info.user_hash == alice["user_hash"] and info.asn is None and info.active_leases == []
    assert info.max_leases == 1

    first = AsnResponse.model_validate(call(gw, "POST", "/api/user/asn", tok).json())
    again = AsnResponse.model_validate(call(gw, "POST", "/api/user/asn", tok).json())
    assert again.asn == first.asn and 65000 <= first.asn <= 65534

    resp = call(gw, "POST", "/api/user/prefix", tok, json={"duration_hours": 4})
    assert resp.status_code == 200, resp.text
    lease = PrefixResponse.model_validate(resp.json())
    net = ipaddress.IPv6Network(lease.prefix)
    assert net.prefixlen == 48 and net.subnet_of(ipaddress.IPv6Network("2001:db8::/32"))
    assert lease.end_time - lease.start_time == timedelta(hours=4)
    assert abs((lease.start_time - datetime.now(lease.start_time.tzinfo)).total_seconds()) < 120

    info = UserInfo.model_validate(call(gw, "GET", "/api/user/info", tok).json())
    assert info.asn == first.asn and [x.prefix for x in info.active_leases] == [lease.prefix]

    assert_error(call(gw, "POST", "/api/user/prefix", tok, json={"duration_hours": 4}), 403, "lease_limit")

    assert call(gw, "DELETE", f"/api/user/prefix/{enc(lease.prefix)}", tok).status_code == 204
    assert_error(call(gw, "DELETE", f"/api/user/prefix/{enc(lease.prefix)}", tok), 404, "not_found")
    assert UserInfo.model_validate(call(gw, "GET", "/api/user/info", tok).json()).active_leases == []

    second = PrefixResponse.model_validate(
        call(gw, "POST", "/api/user/prefix", tok, json={"duration_hours": 1}).json()
    )
    assert second.prefix != lease.prefix  # the released one is in quarantine

    active = LeaseList.model_validate(call(gw, "GET", "/api/user/leases", tok).json())
    assert [(x.prefix, x.state) for x in active.leases] == [(second.prefix, "active")]
    history = LeaseList.model_validate(call(gw, "GET", "/api/user/leases?history=true", tok).json())
    states = {x.prefix: (x.state, x.released_at is not None) for x in history.leases}
    assert states == {lease.prefix: ("released", True), second.prefix: ("active", False)}


def test_unencoded_prefix_path_and_max_leases(shared_gw: GatewayHandle) -> None:
    """A raw ``/`` in the prefix path works too; the admin can raise a user's lease limit."""
    gw = shared_gw
    bob = user_with_asn(gw, unique("bob"))
    resp = call(gw, "PUT", f"/admin/users/{bob['name']}/max-leases", gw.admin_token, json={"max_leases": 3})
    assert resp.status_code == 200 and resp.json()["max_leases"] == 3
    got = [
        call(gw, "POST", "/api/user/prefix", bob["token"], json={"duration_hours": 2}).json()["prefix"]
        for _ in range(3)
    ]
    assert len(set(got)) == 3
    assert_error(
        call(gw, "POST", "/api/user/prefix", bob["token"], json={"duration_hours": 2}), 403, "lease_limit"
    )
    assert call(gw, "DELETE", f"/api/user/prefix/{got[1]}", bob["token"]).status_code == 204
    info = UserInfo.model_validate(call(gw, "GET", "/api/user/info", bob["token"]).json())
    assert sorted(x.prefix for x in info.active_leases) == sorted([got[0], got[2]])


def test_users_are_isolated(shared_gw: GatewayHandle) -> None:
    """A user can neither see, release nor renew another user's lease."""
    gw = shared_gw
    alice = user_with_asn(gw, unique("alice"))
    mallory = user_with_asn(gw, unique("mallory"))
    assert alice["asn"] != mallory["asn"]
    prefix = call(gw, "POST", "/api/user/prefix", alice["token"], json={"duration_hours": 2}).json()["prefix"]
    assert_error(call(gw, "DELETE", f"/api/user/prefix/{enc(prefix)}", mallory["token"]), 404, "not_found")
    assert_error(
        call(
            gw, "POST", f"/api/user/prefix/{enc(prefix)}/renew", mallory["token"], json={"duration_hours": 1}
        ),
        404,
        "not_found",
    )
    hist = call(gw, "GET", "/api/user/leases?history=true", mallory["token"]).json()
    assert hist == {"leases": []}
    # alice's lease is untouched
    info = UserInfo.model_validate(call(gw, "GET", "/api/user/info", alice["token"]).json())
    assert [x.prefix for x in info.active_leases] == [prefix]


def test_admin_user_management(make_gateway: GatewayFactory) -> None:
    """Create (409 on duplicate), list, delete (ends leases, token stops working)."""
    gw = make_gateway()
    carol = user_with_asn(gw, "carol")
    assert_error(call(gw, "POST", "/admin/users", gw.admin_token, json={"name": "carol"}), 409, "conflict")
    prefix = call(gw, "POST", "/api/user/prefix", carol["token"], json={"duration_hours": 2}).json()["prefix"]
    users = call(gw, "GET", "/admin/users", gw.admin_token).json()["users"]
    assert [(u["name"], u["asn"], u["active_leases"]) for u in users] == [("carol", carol["asn"], 1)]
    assert call(gw, "DELETE", "/admin/users/carol", gw.admin_token).status_code == 204
    assert_error(call(gw, "DELETE", "/admin/users/carol", gw.admin_token), 404, "not_found")
    assert_error(call(gw, "GET", "/api/user/info", carol["token"]), 401, "unauthenticated")
    svc = gw.create_service_token("rs", ["mappings:read"])
    assert call(gw, "GET", "/service/mappings", svc).json() == {"mappings": []}
    # the deleted user's prefix is quarantined, not handed to the next user
    dave = user_with_asn(gw, "dave")
    got = call(gw, "POST", "/api/user/prefix", dave["token"], json={"duration_hours": 2}).json()["prefix"]
    assert got != prefix


def test_asn_range_exhausted(make_gateway: GatewayFactory) -> None:
    """503 asn_exhausted once every ASN of the range is taken; the holders keep theirs."""
    gw = make_gateway(["--asn-range", "64512-64513"])
    a, b = user_with_asn(gw, "a"), user_with_asn(gw, "b")
    assert {a["asn"], b["asn"]} == {64512, 64513}
    c = gw.create_user("c")
    assert_error(call(gw, "POST", "/api/user/asn", c["token"]), 503, "asn_exhausted")
    assert call(gw, "POST", "/api/user/asn", a["token"]).json()["asn"] == a["asn"]


def test_four_byte_private_asns_are_allocated(make_gateway: GatewayFactory) -> None:
    """The 4-byte private range works end to end (values above 2**31 survive the database), then 503."""
    gw = make_gateway(["--asn-range", "4294967293-4294967294"])
    a, b = user_with_asn(gw, "a4"), user_with_asn(gw, "b4")
    assert {a["asn"], b["asn"]} == {4294967293, 4294967294}
    info = call(gw, "GET", "/api/user/info", a["token"]).json()
    assert info["asn"] == a["asn"]
    assert_error(call(gw, "POST", "/api/user/asn", gw.create_user("c4")["token"]), 503, "asn_exhausted")


def test_a_prefix_needs_an_asn_first(make_gateway: GatewayFactory) -> None:
    """400 no_asn, on both databases, before any lease is made."""
    gw = make_gateway([])
    user = gw.create_user("no-asn")
    resp = call(gw, "POST", "/api/user/prefix", user["token"], json={"duration_hours": 1})
    assert_error(resp, 400, "no_asn")
    assert call(gw, "GET", "/api/user/info", user["token"]).json()["active_leases"] == []
