"""The client library against the real gateway: paths, encodings, error mapping and ETags agree."""

from __future__ import annotations

import secrets

import pytest

from peerlab_tui.core.gateway import (
    AdminClient,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GatewayClient,
    LeaseLimitError,
    NoAsnError,
    NotFoundError,
    ServiceClient,
)
from peerlab_tui.core.models import ReportedRoute
from tests.client.conftest import RS_KEY
from tests.support.gateway import GatewayHandle

USER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, base64


def unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(3)}"


async def test_user_lease_cycle_through_the_library(shared_gateway: GatewayHandle) -> None:
    gw_url = shared_gateway.url
    token = shared_gateway.create_user(unique("lib"))["token"]
    async with GatewayClient(gw_url, token) as gw:
        with pytest.raises(NoAsnError):
            await gw.request_prefix(1)
        told: list[bool] = []
        asn = await gw.ensure_asn(on_request=lambda: told.append(True))
        assert told == [True]
        assert await gw.ensure_asn() == asn
        lease = await gw.request_prefix(1)
        with pytest.raises(LeaseLimitError, match="gateway refused the lease: "):
            await gw.request_prefix(1)
        with pytest.raises(BadRequestError):
            await gw.renew_prefix(lease.prefix, 10_000)
        renewed = await gw.renew_prefix(lease.prefix, 2)
        assert renewed.end_time > lease.end_time
        info = await gw.user_info()
        assert [active.prefix for active in info.active_leases] == [lease.prefix]
        assert await gw.release_prefix(lease.prefix) == lease.prefix
        with pytest.raises(NotFoundError, match="is not one of your active leases"):
            await gw.release_prefix(lease.prefix)
        assert (await gw.leases()).leases == []
        assert [r.state for r in (await gw.leases(history=True)).leases] == ["released"]


async def test_admin_api(shared_gateway: GatewayHandle) -> None:
    name = unique("adm")
    async with AdminClient(shared_gateway.url, shared_gateway.admin_token) as admin:
        created = await admin.create_user(name, max_leases=2)
        with pytest.raises(ConflictError, match="already exists"):
            await admin.create_user(name)
        assert name in {u.name for u in (await admin.list_users()).users}
        assert (await admin.set_max_leases(name, 3)).max_leases == 3
        await admin.delete_user(name)
        with pytest.raises(NotFoundError):
            await admin.delete_user(name)
    async with GatewayClient(shared_gateway.url, created.token) as gone:
        with pytest.raises(AuthenticationError):
            await gone.user_info()


async def test_wrong_and_misplaced_tokens_are_authentication_errors(shared_gateway: GatewayHandle) -> None:
    user_token = shared_gateway.create_user(unique("tok"))["token"]
    async with AdminClient(shared_gateway.url, user_token) as not_admin:
        with pytest.raises(AuthenticationError, match="HTTP 403"):
            await not_admin.list_users()
    async with GatewayClient(shared_gateway.url, "wrong") as gw:
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            await gw.request_prefix(1)
    async with ServiceClient(shared_gateway.url, user_token) as svc:
        with pytest.raises(AuthenticationError):
            await svc.mappings()


async def test_tunnel_service_api_etag_and_looking_glass(shared_gateway: GatewayHandle) -> None:
    svc_token = shared_gateway.create_service_token(
        unique("rs"), ["mappings:read", "routes:write", "tunnels:read"]
    )
    user = shared_gateway.create_user(unique("svc"))
    async with (
        GatewayClient(shared_gateway.url, user["token"]) as gw,
        ServiceClient(shared_gateway.url, svc_token) as svc,
    ):
        await gw.ensure_asn()
        _, etag = await svc.mappings()
        assert etag
        assert await svc.mappings(etag) == (None, etag)
        lease = await gw.request_prefix(1)
        changed, new_etag = await svc.mappings(etag)
        assert changed is not None and new_etag != etag
        mine = await svc.mapping(user["user_hash"])
        assert mine.prefixes == [lease.prefix]

        tunnel = await gw.register_tunnel(USER_KEY)
        assert [rs.name for rs in tunnel.route_servers] == ["rs1"]
        assert tunnel.route_servers[0].public_key == RS_KEY
        assert (await gw.get_tunnel()).addresses == tunnel.addresses
        peers = {p.user_hash: p.public_key for p in (await svc.tunnels()).peers}
        assert peers[user["user_hash"]] == USER_KEY

        route = ReportedRoute(
            rs="rs1",
            prefix=lease.prefix,
            as_path=[await gw.ensure_asn()],
            state="filtered",
            reason="test verdict",
            user_hash=user["user_hash"],
        )
        assert await svc.report_routes("rs1", [route]) == 1
        seen = (await gw.routes()).routes
        assert [(r.rs, r.prefix, r.state, r.reason) for r in seen] == [
            ("rs1", lease.prefix, "filtered", "test verdict")
        ]
        with pytest.raises(NotFoundError, match="no route server named"):
            await svc.report_routes("nope", [route])

        await gw.delete_tunnel()
        with pytest.raises(NotFoundError, match="no tunnel"):
            await gw.get_tunnel()
        await gw.release_prefix(lease.prefix)
