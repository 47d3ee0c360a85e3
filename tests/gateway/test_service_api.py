"""Service API (mappings with ETag, tunnels, route reports), the overlay, metrics and OpenAPI."""

from __future__ import annotations

import base64
import hashlib
import json

from peerlab_tui.core.models import MappingList, RouteList, TunnelInfo, TunnelPeerList
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import assert_error, call, enc, user_with_asn

RS_KEY_1 = base64.b64encode(b"\x01" * 32).decode()
RS_KEY_2 = base64.b64encode(b"\x02" * 32).decode()
ROUTE_SERVERS = [
    {
        "name": "rs1",
        "public_key": RS_KEY_1,
        "endpoint": "127.0.0.1:51820",
        "overlay_network": "fd70:70:1::/64",
        "overlay_address": "fd70:70:1::1",
        "asn": 64600,
    },
    {
        "name": "rs2",
        "public_key": RS_KEY_2,
        "endpoint": "127.0.0.1:51821",
        "overlay_network": "fd70:70:2::/64",
        "overlay_address": "fd70:70:2::1",
        "asn": 64600,
    },
]


def _key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


def test_mappings_etag_order_and_single_lookup(make_gateway: GatewayFactory) -> None:
    """Mappings: users with an ASN, sorted; strong ETag over the canonical body; 304 when unchanged."""
    gw = make_gateway(["--max-leases", "2"])
    svc = gw.create_service_token("agent", ["mappings:read"])
    users = [user_with_asn(gw, f"u{i}") for i in range(3)]
    gw.create_user("no-asn-yet")
    leased: dict[str, list[str]] = {}
    for u in users[:2]:
        for _ in range(2):
            p = call(gw, "POST", "/api/user/prefix", u["token"], json={"duration_hours": 3}).json()["prefix"]
            leased.setdefault(u["user_hash"], []).append(p)

    resp = call(gw, "GET", "/service/mappings", svc)
    assert resp.status_code == 200
    etag = resp.headers["etag"]
    assert (
        etag
        == '"'
        + hashlib.sha256(json.dumps(resp.json(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        + '"'
    )
    body = MappingList.model_validate(resp.json())
    assert [x.user_hash for x in body.mappings] == sorted(u["user_hash"] for u in users)
    by_hash = {x.user_hash: x for x in body.mappings}
    for u in users:
        assert by_hash[u["user_hash"]].asn == u["asn"] and by_hash[u["user_hash"]].user_id == u["name"]
        assert by_hash[u["user_hash"]].prefixes == sorted(leased.get(u["user_hash"], []))

    again = call(gw, "GET", "/service/mappings", svc)
    assert again.headers["etag"] == etag and again.content == resp.content
    not_modified = call(gw, "GET", "/service/mappings", svc, headers={"If-None-Match": etag})
    assert (
        not_modified.status_code == 304
        and not_modified.content == b""
        and not_modified.headers["etag"] == etag
    )
    listed = call(gw, "GET", "/service/mappings", svc, headers={"If-None-Match": f'"x", W/{etag}'})
    assert listed.status_code == 304

    # a change (release) changes the ETag, and the old one no longer matches
    victim = users[0]
    assert (
        call(
            gw, "DELETE", f"/api/user/prefix/{enc(leased[victim['user_hash']][0])}", victim["token"]
        ).status_code
        == 204
    )
    changed = call(gw, "GET", "/service/mappings", svc, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag

    one = call(gw, "GET", f"/service/mappings/{users[1]['user_hash']}", svc)
    assert one.status_code == 200 and one.json()["prefixes"] == sorted(leased[users[1]["user_hash"]])
    assert_error(call(gw, "GET", "/service/mappings/0000000000000000", svc), 404, "not_found")


def test_tunnels_and_looking_glass(make_gateway: GatewayFactory) -> None:
    """Keys, sticky overlay addresses per route server, service view, and per-user route verdicts."""
    gw = make_gateway(config={"route_servers": ROUTE_SERVERS})
    tunnels_svc = gw.create_service_token("tun", ["tunnels:read"])
    routes_svc = gw.create_service_token("lg", ["routes:write"])
    nobody = gw.create_user("nobody")
    assert_error(
        call(gw, "POST", "/api/user/tunnel", nobody["token"], json={"public_key": _key(9)}), 400, "no_asn"
    )
    a, b = user_with_asn(gw, "a"), user_with_asn(gw, "b")
    assert_error(call(gw, "GET", "/api/user/tunnel", a["token"]), 404, "not_found")
    assert_error(
        call(gw, "POST", "/api/user/tunnel", a["token"], json={"public_key": "short"}),
        400,
        "bad_request",
        contains="public_key",
    )

    ta = TunnelInfo.model_validate(
        call(gw, "POST", "/api/user/tunnel", a["token"], json={"public_key": _key(10)}).json()
    )
    tb = TunnelInfo.model_validate(
        call(gw, "POST", "/api/user/tunnel", b["token"], json={"public_key": _key(11)}).json()
    )
    assert ta.addresses == ["fd70:70:1::101/64", "fd70:70:2::101/64"]
    assert tb.addresses == ["fd70:70:1::102/64", "fd70:70:2::102/64"]
    assert ta.asn == a["asn"]
    assert [
        (r.name, r.public_key, r.bgp_neighbor, r.local_address, r.endpoint) for r in ta.route_servers
    ] == [
        ("rs1", RS_KEY_1, "fd70:70:1::1", "fd70:70:1::101/64", "127.0.0.1:51820"),
        ("rs2", RS_KEY_2, "fd70:70:2::1", "fd70:70:2::101/64", "127.0.0.1:51821"),
    ]
    assert_error(
        call(gw, "POST", "/api/user/tunnel", b["token"], json={"public_key": _key(10)}), 409, "conflict"
    )

    # rotation keeps the addresses; delete then re-register keeps them too (sticky index)
    rotated = call(gw, "POST", "/api/user/tunnel", a["token"], json={"public_key": _key(12)}).json()
    assert rotated["addresses"] == ta.addresses
    peers = TunnelPeerList.model_validate(call(gw, "GET", "/service/tunnels", tunnels_svc).json())
    assert {(p.user_hash, p.public_key, tuple(p.addresses)) for p in peers.peers} == {
        (a["user_hash"], _key(12), tuple(ta.addresses)),
        (b["user_hash"], _key(11), tuple(tb.addresses)),
    }
    assert call(gw, "DELETE", "/api/user/tunnel", a["token"]).status_code == 204
    assert_error(call(gw, "GET", "/api/user/tunnel", a["token"]), 404)
    assert [
        p.user_hash
        for p in TunnelPeerList.model_validate(call(gw, "GET", "/service/tunnels", tunnels_svc).json()).peers
    ] == [b["user_hash"]]
    back = call(gw, "POST", "/api/user/tunnel", a["token"], json={"public_key": _key(10)}).json()
    assert back["addresses"] == ta.addresses
    assert call(gw, "GET", "/api/user/tunnel", a["token"]).json() == back

    def route(user: dict[str, str], prefix: str, state: str, reason: str | None = None) -> dict[str, object]:
        return {
            "user_hash": user["user_hash"],
            "rs": "ignored",
            "prefix": prefix,
            "as_path": [int(user["asn"])],
            "state": state,
            "reason": reason,
            "communities": ["65000:1"],
        }

    report1 = {
        "routes": [route(a, "2001:db8:1::/48", "accepted"), route(b, "2001:db8:2::/48", "filtered", "rpki")]
    }
    assert call(gw, "POST", "/service/rs/rs1/routes", routes_svc, json=report1).status_code == 200
    report2 = {"routes": [route(a, "2001:db8:9::/48", "filtered", "not your prefix")]}
    assert call(gw, "POST", "/service/rs/rs2/routes", routes_svc, json=report2).status_code == 200
    assert_error(call(gw, "POST", "/service/rs/rs9/routes", routes_svc, json=report2), 404, "not_found")
    assert_error(
        call(gw, "POST", "/service/rs/rs1/routes", routes_svc, json={"routes": [{"prefix": 1}]}), 400
    )

    mine = RouteList.model_validate(call(gw, "GET", "/api/user/routes", a["token"]).json())
    assert [(r.rs, r.prefix, r.state, r.reason) for r in mine.routes] == [
        ("rs1", "2001:db8:1::/48", "accepted", None),
        ("rs2", "2001:db8:9::/48", "filtered", "not your prefix"),
    ]
    assert mine.routes[0].communities == ["65000:1"] and mine.routes[0].as_path == [a["asn"]]
    theirs = RouteList.model_validate(call(gw, "GET", "/api/user/routes", b["token"]).json())
    assert [(r.rs, r.prefix, r.reason) for r in theirs.routes] == [("rs1", "2001:db8:2::/48", "rpki")]

    # a new report replaces that route server's whole set
    assert call(gw, "POST", "/service/rs/rs1/routes", routes_svc, json={"routes": []}).status_code == 200
    assert [r["rs"] for r in call(gw, "GET", "/api/user/routes", a["token"]).json()["routes"]] == ["rs2"]
    assert call(gw, "GET", "/api/user/routes", b["token"]).json() == {"routes": []}


def test_metrics_and_openapi(make_gateway: GatewayFactory) -> None:
    """Prometheus text with request counts by path template and pool gauges; OpenAPI lists the API."""
    gw = make_gateway(["--prefix-pool", "2001:db8:100::/44", "--lease-length", "48"])
    u = user_with_asn(gw, "m")
    prefix = call(gw, "POST", "/api/user/prefix", u["token"], json={"duration_hours": 1}).json()["prefix"]
    call(gw, "DELETE", f"/api/user/prefix/{enc(prefix)}", u["token"])
    call(gw, "DELETE", f"/api/user/prefix/{enc(prefix)}", u["token"])
    text = call(gw, "GET", "/metrics").text
    assert 'peerlab_gateway_requests_total{method="POST",path="/api/user/prefix",status="200"} 1' in text
    assert (
        'peerlab_gateway_requests_total{method="DELETE",path="/api/user/prefix/{prefix:path}",status="204"} 1'
        in text
    )
    assert 'path="/api/user/prefix/{prefix:path}",status="404"} 1' in text
    assert prefix not in text  # raw paths never become labels
    assert "peerlab_gateway_pool_size 16" in text
    assert "peerlab_gateway_pool_free 15" in text  # the released prefix is in quarantine
    assert "peerlab_gateway_active_leases 0" in text
    spec = call(gw, "GET", "/openapi.json").json()
    for path in (
        "/api/user/info",
        "/api/user/asn",
        "/api/user/prefix",
        "/api/user/leases",
        "/admin/users",
        "/service/mappings",
        "/service/tunnels",
        "/api/user/tunnel",
        "/api/user/routes",
    ):
        assert path in spec["paths"], path
