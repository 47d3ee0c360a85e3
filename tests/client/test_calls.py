"""What each call sends and returns: paths, URL-encoded prefixes, bodies, headers, ETags, input checks."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerlab_tui.core.errors import InputError
from peerlab_tui.core.gateway import AdminClient, GatewayClient, NotFoundError, ServiceClient
from peerlab_tui.core.models import ReportedRoute
from tests.client._fakes import Recorder, error, sequence

URL = "http://gateway.test"
LEASE = {
    "prefix": "2001:db8:1000::/48",
    "start_time": "2026-01-01T00:00:00Z",
    "end_time": "2026-01-01T03:00:00+00:00",
    "message": "ok",
}
KEY = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="  # 32 bytes, base64


def ok(body: Any = None, status: int = 200, **headers: str) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


async def test_release_url_encodes_the_cidr_and_normalizes_it() -> None:
    rec = Recorder(sequence(ok(status=204)))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        released = await gw.release_prefix(" 2001:DB8:1000:0::/48 ")
    assert released == "2001:db8:1000::/48"
    (req,) = rec.requests
    assert req.method == "DELETE"
    assert req.url.raw_path == b"/api/user/prefix/2001%3Adb8%3A1000%3A%3A%2F48"


@settings(max_examples=200, deadline=None)
@given(address=st.integers(min_value=0, max_value=2**128 - 1), length=st.integers(min_value=0, max_value=128))
def test_any_prefix_travels_as_one_path_segment(address: int, length: int) -> None:
    """Whatever the prefix, the path has exactly one segment for it, which decodes to the canonical CIDR."""
    net = ipaddress.IPv6Network((address, length), strict=False)
    rec = Recorder(sequence(ok(status=204)))

    async def release() -> str:
        async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
            return await gw.release_prefix(str(net))

    assert asyncio.run(release()) == str(net)
    segments = rec.requests[0].url.raw_path.decode().split("/")
    assert segments[:4] == ["", "api", "user", "prefix"] and len(segments) == 5
    assert unquote(segments[4]) == str(net)


async def test_renew_url_encodes_and_sends_the_duration() -> None:
    rec = Recorder(sequence(ok(LEASE)))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        renewed = await gw.renew_prefix("2001:db8:1000::/48", 3)
    assert renewed.end_time.hour == 3
    (req,) = rec.requests
    assert req.method == "POST"
    assert req.url.raw_path == b"/api/user/prefix/2001%3Adb8%3A1000%3A%3A%2F48/renew"
    assert body(req) == {"duration_hours": 3}


async def test_request_prefix_sends_duration_and_bearer_token() -> None:
    rec = Recorder(sequence(ok(LEASE)))
    async with GatewayClient(URL + "/", "  secret-token\n", transport=rec.transport) as gw:
        lease = await gw.request_prefix(2)
    assert lease.prefix == "2001:db8:1000::/48"
    (req,) = rec.requests
    assert str(req.url) == "http://gateway.test/api/user/prefix"
    assert req.headers["Authorization"] == "Bearer secret-token"
    assert req.headers["User-Agent"].startswith("peerlab-tui/")
    assert body(req) == {"duration_hours": 2}


async def test_base_url_with_a_path_prefix_is_kept() -> None:
    rec = Recorder(sequence(ok({"user_hash": "h", "asn": None})))
    async with GatewayClient("https://example.test/peerlab", "tok", transport=rec.transport) as gw:
        await gw.user_info()
    assert str(rec.requests[0].url) == "https://example.test/peerlab/api/user/info"


def test_repr_never_shows_the_token() -> None:
    gw = GatewayClient(URL, "very-secret")
    assert "very-secret" not in repr(gw)


@pytest.mark.parametrize(
    "prefix",
    ["2001:db8::1/48", "10.0.0.0/8", "garbage", "", "2001:db8::/129", "2001:db8::"],
)
async def test_malformed_prefixes_fail_before_sending(prefix: str) -> None:
    rec = Recorder(sequence(ok(status=204)))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        with pytest.raises(InputError, match="not an IPv6 prefix in CIDR form"):
            await gw.release_prefix(prefix)
        with pytest.raises(InputError, match="not an IPv6 prefix in CIDR form"):
            await gw.renew_prefix(prefix, 1)
    assert rec.calls == 0


@pytest.mark.parametrize("hours", [0, -1, True, 1.5, "2"])
async def test_bad_durations_fail_before_sending(hours: Any) -> None:
    rec = Recorder(sequence(ok(LEASE)))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        with pytest.raises(InputError, match="positive whole number of hours"):
            await gw.request_prefix(hours)
        with pytest.raises(InputError, match="positive whole number of hours"):
            await gw.renew_prefix("2001:db8::/48", hours)
    assert rec.calls == 0


@pytest.mark.parametrize("url", ["gateway.test:8080", "ftp://gateway.test", "", "http://"])
def test_bad_base_urls_are_input_errors(url: str) -> None:
    with pytest.raises(InputError, match="gateway URL"):
        GatewayClient(url, "tok")


@pytest.mark.parametrize("token", ["", "   ", "two words", "tab\there", "tökén"])
def test_bad_tokens_are_input_errors(token: str) -> None:
    with pytest.raises(InputError, match="token"):
        GatewayClient(URL, token)


async def test_ensure_asn_does_not_request_when_the_user_has_one() -> None:
    rec = Recorder(sequence(ok({"user_hash": "h", "asn": 65010})))
    called: list[bool] = []
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        assert await gw.ensure_asn(on_request=lambda: called.append(True)) == 65010
    assert [r.method for r in rec.requests] == ["GET"]
    assert called == []


async def test_ensure_asn_requests_one_when_missing() -> None:
    rec = Recorder(sequence(ok({"user_hash": "h", "asn": None}), ok({"asn": 65020, "message": "assigned"})))
    called: list[bool] = []
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        assert await gw.ensure_asn(on_request=lambda: called.append(True)) == 65020
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("GET", "/api/user/info"),
        ("POST", "/api/user/asn"),
    ]
    assert called == [True]


async def test_leases_history_sends_the_flag() -> None:
    rows = {"leases": [{**LEASE, "state": "released", "released_at": "2026-01-01T01:00:00Z"}]}
    rec = Recorder(sequence(ok({"leases": []}), ok(rows)))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        assert (await gw.leases()).leases == []
        history = await gw.leases(history=True)
    assert history.leases[0].state == "released"
    assert "history" not in rec.requests[0].url.params
    assert rec.requests[1].url.params["history"] == "true"


async def test_leases_fall_back_on_user_info_for_nxthdr_gateways() -> None:
    info = {"user_hash": "h", "asn": 65001, "active_leases": [LEASE]}
    rec = Recorder(sequence(error(404), ok(info)))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        result = await gw.leases()
    assert [(lease.prefix, lease.state) for lease in result.leases] == [("2001:db8:1000::/48", "active")]


async def test_leases_history_on_nxthdr_gateways_is_a_clear_not_found() -> None:
    rec = Recorder(sequence(error(404)))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        with pytest.raises(NotFoundError, match="keeps no lease history"):
            await gw.leases(history=True)


async def test_tunnel_calls() -> None:
    tunnel = {"addresses": ["fd00::2/64"], "asn": 65001, "route_servers": []}
    rec = Recorder(sequence(ok(tunnel), ok(tunnel), ok(status=204)))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        assert (await gw.register_tunnel(KEY)).addresses == ["fd00::2/64"]
        assert (await gw.get_tunnel()).asn == 65001
        await gw.delete_tunnel()
        with pytest.raises(InputError, match="WireGuard public key"):
            await gw.register_tunnel("not-a-key")
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("POST", "/api/user/tunnel"),
        ("GET", "/api/user/tunnel"),
        ("DELETE", "/api/user/tunnel"),
    ]
    assert body(rec.requests[0]) == {"public_key": KEY}


async def test_routes() -> None:
    route = {
        "rs": "rs1",
        "prefix": "2001:db8:1000::/48",
        "as_path": [65001],
        "state": "filtered",
        "reason": "x",
    }
    rec = Recorder(sequence(ok({"routes": [route]})))
    async with GatewayClient(URL, "tok", transport=rec.transport) as gw:
        routes = await gw.routes()
    assert routes.routes[0].state == "filtered"


# --- service API --------------------------------------------------------------------------------------


MAPPINGS = {
    "mappings": [{"user_hash": "h1", "user_id": "alice", "asn": 65001, "prefixes": ["2001:db8::/48"]}]
}


async def test_mappings_etag_round_trip() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return httpx.Response(304, headers={"ETag": '"v1"'})
        return httpx.Response(200, json=MAPPINGS, headers={"ETag": '"v1"'})

    rec = Recorder(handler)
    async with ServiceClient(URL, "svc", transport=rec.transport) as svc:
        first, etag = await svc.mappings(None)
        again, etag2 = await svc.mappings(etag)
        changed, etag3 = await svc.mappings('"v0"')
    assert first is not None and first.mappings[0].asn == 65001
    assert etag == '"v1"'
    assert again is None and etag2 == '"v1"'
    assert changed == first and etag3 == '"v1"'
    assert "If-None-Match" not in rec.requests[0].headers
    assert rec.requests[1].headers["If-None-Match"] == '"v1"'


async def test_mappings_304_without_etag_header_keeps_the_callers_etag() -> None:
    rec = Recorder(sequence(httpx.Response(304)))
    async with ServiceClient(URL, "svc", transport=rec.transport) as svc:
        assert await svc.mappings('"abc"') == (None, '"abc"')


async def test_mapping_tunnels_and_route_report() -> None:
    peers = {"peers": [{"user_hash": "h1", "public_key": KEY, "addresses": ["fd00::2/64"]}]}
    rec = Recorder(sequence(ok(MAPPINGS["mappings"][0]), ok(peers), ok({"stored": 1})))
    route = ReportedRoute(
        rs="rs 1", prefix="2001:db8::/48", as_path=[65001], state="accepted", user_hash="h1"
    )
    async with ServiceClient(URL, "svc", transport=rec.transport) as svc:
        assert (await svc.mapping("h1")).user_id == "alice"
        assert (await svc.tunnels()).peers[0].public_key == KEY
        assert await svc.report_routes("rs 1", [route]) == 1
    assert rec.requests[0].url.path == "/service/mappings/h1"
    assert rec.requests[2].url.raw_path == b"/service/rs/rs%201/routes"
    assert body(rec.requests[2])["routes"][0]["user_hash"] == "h1"
    assert body(rec.requests[2])["routes"][0]["as_path"] == [65001]


# --- admin API ----------------------------------------------------------------------------------------


async def test_admin_calls_send_the_documented_bodies() -> None:
    created = {"name": "alice", "user_hash": "h", "token": "t"}
    users = {"users": []}
    svc = {"name": "rs1", "scopes": ["mappings:read"], "token": "s"}
    summary = {
        "name": "alice",
        "user_hash": "h",
        "asn": None,
        "max_leases": 4,
        "active_leases": 0,
        "created_at": "2026-01-01T00:00:00Z",
    }
    rec = Recorder(sequence(ok(created, 201), ok(users), ok(status=204), ok(summary), ok(svc, 201)))
    async with AdminClient(URL, "admin", transport=rec.transport) as admin:
        assert (await admin.create_user("alice")).token == "t"
        assert (await admin.list_users()).users == []
        await admin.delete_user("alice")
        assert (await admin.set_max_leases("alice", 4)).max_leases == 4
        assert (await admin.create_service_token("rs1", ["mappings:read"])).token == "s"
    calls = [(r.method, r.url.path) for r in rec.requests]
    assert calls == [
        ("POST", "/admin/users"),
        ("GET", "/admin/users"),
        ("DELETE", "/admin/users/alice"),
        ("PUT", "/admin/users/alice/max-leases"),
        ("POST", "/admin/service-tokens"),
    ]
    assert body(rec.requests[0]) == {"name": "alice"}
    assert body(rec.requests[3]) == {"max_leases": 4}
    assert body(rec.requests[4]) == {"name": "rs1", "scopes": ["mappings:read"]}


async def test_admin_input_is_checked_before_sending() -> None:
    rec = Recorder(sequence(ok(status=204)))
    async with AdminClient(URL, "admin", transport=rec.transport) as admin:
        with pytest.raises(InputError, match="invalid user: name"):
            await admin.create_user("bad name!")
        with pytest.raises(InputError, match="max_leases"):
            await admin.create_user("bob", max_leases=-1)
        with pytest.raises(InputError, match="invalid service token: scopes"):
            await admin.create_service_token("rs1", ["root"])
        with pytest.raises(InputError, match="lease limit"):
            await admin.set_max_leases("bob", 5000)
        with pytest.raises(InputError, match="user name"):
            await admin.delete_user("")
    assert rec.calls == 0
