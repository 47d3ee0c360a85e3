"""Request bodies are bounded before anything reads them: a made-up token cannot make the gateway buffer
an arbitrarily large body (it answers 413 at once, with the usual error body)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from tests.support.gateway import GatewayHandle, gateway  # noqa: F401  (fixture)

MIB = 1024 * 1024


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


def test_oversized_body_with_a_bogus_token_is_refused_with_413(gateway: GatewayHandle) -> None:  # noqa: F811
    """Declared too large: refused before authentication and before reading the body."""
    r = httpx.post(f"{gateway.url}/api/user/prefix", content=b"{" + b" " * (2 * MIB) + b"}",
                   headers={"Authorization": "Bearer bogus", "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert r.json()["error"] == 413 and "larger than" in r.json()["message"]


def test_streamed_body_without_length_is_cut_off(gateway: GatewayHandle) -> None:  # noqa: F811
    """Chunked (no Content-Length): counted while streaming and refused once over the limit."""
    r = httpx.post(f"{gateway.url}/admin/users", content=_chunks(4 * MIB),
                   headers={"Authorization": "Bearer bogus", "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413


def test_route_reports_may_be_large_but_still_need_a_token(gateway: GatewayHandle) -> None:  # noqa: F811
    """A 1 MiB route report passes the size check (route servers report everything) and then meets auth."""
    r = httpx.post(f"{gateway.url}/service/rs/rs1/routes", content=b" " * MIB,
                   headers={"Authorization": "Bearer bogus", "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 401


def test_normal_requests_are_unaffected(gateway: GatewayHandle) -> None:  # noqa: F811
    """A small request still works end to end."""
    user = gateway.create_user("limits-ok")
    r = httpx.post(f"{gateway.url}/api/user/asn", headers={"Authorization": f"Bearer {user['token']}"},
                   timeout=30)
    assert r.status_code == 200 and r.json()["asn"] >= 64512
