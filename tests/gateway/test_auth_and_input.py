"""Authorization matrix and bad input: every refusal is a clear 4xx ErrorBody, nothing else changes."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import unique
from tests.gateway.helpers import assert_error, call, enc, user_with_asn
from tests.support.gateway import GatewayHandle

USER_ENDPOINTS = [
    ("GET", "/api/user/info", None),
    ("POST", "/api/user/asn", None),
    ("POST", "/api/user/prefix", {"duration_hours": 1}),
    ("DELETE", "/api/user/prefix/2001%3Adb8%3A%3A%2F48", None),
    ("POST", "/api/user/prefix/2001%3Adb8%3A%3A%2F48/renew", {"duration_hours": 1}),
    ("GET", "/api/user/leases", None),
    ("GET", "/api/user/tunnel", None),
    ("GET", "/api/user/routes", None),
]
ADMIN_ENDPOINTS = [
    ("GET", "/admin/users", None),
    ("POST", "/admin/users", {"name": "x"}),
    ("DELETE", "/admin/users/x", None),
    ("PUT", "/admin/users/x/max-leases", {"max_leases": 2}),
    ("POST", "/admin/service-tokens", {"name": "x", "scopes": ["mappings:read"]}),
    ("GET", "/admin/service-tokens", None),
]
SERVICE_ENDPOINTS = [
    ("GET", "/service/mappings", None, "mappings:read"),
    ("GET", "/service/mappings/abc", None, "mappings:read"),
    ("GET", "/service/tunnels", None, "tunnels:read"),
    ("POST", "/service/rs/rs1/routes", {"routes": []}, "routes:write"),
]
# What the right scope gets on the shared gateway (no user "abc", no route server configured).
SERVICE_OK_STATUS = {
    "/service/mappings": 200,
    "/service/mappings/abc": 404,
    "/service/tunnels": 200,
    "/service/rs/rs1/routes": 404,
}
ALL = [(m, p, b) for m, p, b in USER_ENDPOINTS + ADMIN_ENDPOINTS] + [
    (m, p, b) for m, p, b, _ in SERVICE_ENDPOINTS
]


def test_missing_or_wrong_token_is_401(shared_gw: GatewayHandle) -> None:
    """Every protected endpoint: no header, a wrong token or a non-bearer scheme -> 401, WWW-Authenticate."""
    for method, path, body in ALL:
        for headers in (
            {},
            {"Authorization": "Bearer plu_not-a-real-token"},
            {"Authorization": "Basic eDp5"},
        ):
            resp = call(shared_gw, method, path, json=body, headers=headers)
            assert_error(resp, 401, "unauthenticated")
            assert resp.headers["www-authenticate"].lower().startswith("bearer"), (method, path)


def test_user_token_cannot_reach_admin_or_service(shared_gw: GatewayHandle) -> None:
    """A user token gets 403 on every admin and service endpoint; nothing is created."""
    user = user_with_asn(shared_gw, unique("eve"))
    for method, path, body in ADMIN_ENDPOINTS + [(m, p, b) for m, p, b, _ in SERVICE_ENDPOINTS]:
        assert_error(call(shared_gw, method, path, user["token"], json=body), 403, "forbidden")
    names = [u["name"] for u in call(shared_gw, "GET", "/admin/users", shared_gw.admin_token).json()["users"]]
    assert "x" not in names


def test_admin_and_service_tokens_cannot_use_user_api(shared_gw: GatewayHandle) -> None:
    """The user API is for user tokens only."""
    svc = shared_gw.create_service_token(unique("all"), ["mappings:read", "routes:write", "tunnels:read"])
    for token in (shared_gw.admin_token, svc):
        for method, path, body in USER_ENDPOINTS:
            assert_error(
                call(shared_gw, method, path, token, json=body), 403, "forbidden", contains="user token"
            )
    for method, path, body in ADMIN_ENDPOINTS:
        assert_error(call(shared_gw, method, path, svc, json=body), 403, "forbidden", contains="admin")


def test_service_tokens_are_limited_to_their_scopes(shared_gw: GatewayHandle) -> None:
    """A service token reaches exactly the endpoints of its scopes; the admin token reaches none of them."""
    tokens = {
        scope: shared_gw.create_service_token(unique(scope.replace(":", "-")), [scope])
        for scope in ("mappings:read", "routes:write", "tunnels:read")
    }
    for method, path, body, needed in SERVICE_ENDPOINTS:
        for scope, token in tokens.items():
            resp = call(shared_gw, method, path, token, json=body)
            if scope == needed:
                assert resp.status_code == SERVICE_OK_STATUS[path], (method, path, resp.text)
            else:
                assert_error(resp, 403, "forbidden", contains=needed)
        assert_error(call(shared_gw, method, path, shared_gw.admin_token, json=body), 403, "forbidden")


def test_revoked_service_token_stops_working(shared_gw: GatewayHandle) -> None:
    """Deleting a service token revokes it; the list never shows token values."""
    name = unique("tmp")
    token = shared_gw.create_service_token(name, ["mappings:read"])
    assert call(shared_gw, "GET", "/service/mappings", token).status_code == 200
    listed = call(shared_gw, "GET", "/admin/service-tokens", shared_gw.admin_token).json()["tokens"]
    assert {"name": name, "scopes": ["mappings:read"]}.items() <= next(
        t for t in listed if t["name"] == name
    ).items()
    assert token not in str(listed)
    assert (
        call(shared_gw, "DELETE", f"/admin/service-tokens/{name}", shared_gw.admin_token).status_code == 204
    )
    assert_error(call(shared_gw, "GET", "/service/mappings", token), 401, "unauthenticated")
    assert_error(call(shared_gw, "DELETE", f"/admin/service-tokens/{name}", shared_gw.admin_token), 404)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"duration_hours": 0}, "between 1 and 24"),
        ({"duration_hours": 25}, "between 1 and 24"),
        ({"duration_hours": -3}, "between 1 and 24"),
        ({"duration_hours": "abc"}, "duration_hours"),
        ({"duration_hours": "4"}, "duration_hours"),
        ({"duration_hours": 1.5}, "duration_hours"),
        ({"duration_hours": None}, "duration_hours"),
        ({}, "duration_hours"),
        ([], "duration_hours"),
        (None, "body is required"),
        (b"{not json", "not valid json"),
    ],
)
def test_bad_durations(shared_gw: GatewayHandle, body: object, fragment: str) -> None:
    """Bad durations are 400 bad_duration with a message naming the problem; no lease is created."""
    user = user_with_asn(shared_gw, unique("dur"))
    kwargs: dict[str, object] = {"content": body} if isinstance(body, bytes) else {"json": body}
    if body is None:
        kwargs = {}
    resp = call(shared_gw, "POST", "/api/user/prefix", user["token"], **kwargs)  # type: ignore[arg-type]
    assert_error(resp, 400, "bad_duration", contains=fragment)
    assert call(shared_gw, "GET", "/api/user/leases?history=true", user["token"]).json() == {"leases": []}


def test_bad_prefixes_and_unknown_ones(shared_gw: GatewayHandle) -> None:
    """Malformed CIDRs are 400; well-formed but unknown prefixes are 404; renew checks its body too."""
    user = user_with_asn(shared_gw, unique("cidr"))
    tok = user["token"]
    for bad in ("zzz", "2001:db8::1/48", "10.0.0.0/8", "2001:db8::/129", "::/abc"):
        assert_error(
            call(shared_gw, "DELETE", f"/api/user/prefix/{enc(bad)}", tok),
            400,
            "bad_request",
            contains="prefix",
        )
        assert_error(
            call(shared_gw, "POST", f"/api/user/prefix/{enc(bad)}/renew", tok, json={"duration_hours": 1}),
            400,
            "bad_request",
        )
    assert_error(
        call(shared_gw, "DELETE", f"/api/user/prefix/{enc('2001:db8:ffff::/48')}", tok), 404, "not_found"
    )
    prefix = call(shared_gw, "POST", "/api/user/prefix", tok, json={"duration_hours": 2}).json()["prefix"]
    assert_error(
        call(shared_gw, "POST", f"/api/user/prefix/{enc(prefix)}/renew", tok, json={"duration_hours": 0}),
        400,
        "bad_duration",
    )
    assert_error(call(shared_gw, "POST", f"/api/user/prefix/{enc(prefix)}/renew", tok), 400, "bad_duration")


def test_bad_admin_bodies_name_the_field(shared_gw: GatewayHandle) -> None:
    """Validation errors are 400 (not 422) ErrorBodies naming the offending field."""
    adm = shared_gw.admin_token
    assert_error(
        call(shared_gw, "POST", "/admin/users", adm, json={"name": "bad name!"}),
        400,
        "bad_request",
        contains="name",
    )
    assert_error(call(shared_gw, "POST", "/admin/users", adm, json={}), 400, "bad_request", contains="name")
    assert_error(
        call(shared_gw, "POST", "/admin/service-tokens", adm, json={"name": "t", "scopes": ["root"]}),
        400,
        "bad_request",
        contains="scopes",
    )
    name = shared_gw.create_user(unique("lim"))["name"]
    assert_error(
        call(shared_gw, "PUT", f"/admin/users/{name}/max-leases", adm, json={"max_leases": -1}),
        400,
        "bad_request",
        contains="max_leases",
    )
    assert_error(
        call(shared_gw, "PUT", "/admin/users/nobody-here/max-leases", adm, json={"max_leases": 2}),
        404,
        "not_found",
    )
    assert_error(call(shared_gw, "GET", "/api/user/leases?history=maybe", adm), 403)
    user = shared_gw.create_user(unique("q"))
    assert_error(
        call(shared_gw, "GET", "/api/user/leases?history=maybe", user["token"]),
        400,
        "bad_request",
        contains="history",
    )


def test_unknown_routes_and_methods_are_error_bodies(shared_gw: GatewayHandle) -> None:
    """404 and 405 from routing are ErrorBodies too."""
    assert_error(call(shared_gw, "GET", "/nope"), 404, "not_found", contains="/nope")
    assert_error(call(shared_gw, "PUT", "/api/user/info"), 405)
    assert call(shared_gw, "GET", "/healthz").json()["status"] == "ok"
