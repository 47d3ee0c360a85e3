"""Small HTTP helpers shared by the gateway tests."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from peerlab_tui.core.models import ErrorBody
from tests.support.gateway import GatewayHandle


def bearer(token: str) -> dict[str, str]:
    """Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def enc(prefix: str) -> str:
    """URL-encode a CIDR for a path segment (``/`` included)."""
    return quote(prefix, safe="")


def call(gw: GatewayHandle, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    """One request to the gateway."""
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers.update(bearer(token))
    return httpx.request(method, gw.url + path, headers=headers, timeout=60, **kw)


def assert_error(
    resp: httpx.Response, status: int, reason: str | None = None, *, contains: str = ""
) -> ErrorBody:
    """The response is an ErrorBody with this status (and reason / message text)."""
    assert resp.status_code == status, resp.text
    body = ErrorBody.model_validate(resp.json())
    assert body.error == status
    assert body.message
    if reason is not None:
        assert body.reason == reason, body
    if contains:
        assert contains.lower() in body.message.lower(), body.message
    return body


def user_with_asn(gw: GatewayHandle, name: str, **kw: Any) -> dict[str, Any]:
    """A new user that already has an ASN."""
    user = gw.create_user(name, **kw)
    resp = call(gw, "POST", "/api/user/asn", user["token"])
    assert resp.status_code == 200, resp.text
    user["asn"] = resp.json()["asn"]
    return user
