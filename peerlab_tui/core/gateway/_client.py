"""The three clients of the gateway: user (:class:`GatewayClient`), route-server agents
(:class:`ServiceClient`) and operators (:class:`AdminClient`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from peerlab_tui.core.errors import NotFoundError
from peerlab_tui.core.gateway._transport import BaseClient
from peerlab_tui.core.gateway._validate import build, check_hours, check_name, check_prefix, segment
from peerlab_tui.core.models import (
    AsnResponse,
    CreatedServiceToken,
    CreatedUser,
    CreateServiceTokenRequest,
    CreateUserRequest,
    DurationRequest,
    LeaseList,
    LeaseRecord,
    Mapping,
    MappingList,
    PrefixResponse,
    ReportedRoute,
    RouteList,
    RouteReport,
    SetMaxLeasesRequest,
    TunnelInfo,
    TunnelPeerList,
    TunnelRequest,
    UserInfo,
    UserList,
    UserSummary,
)

log = logging.getLogger(__name__)


class GatewayClient(BaseClient):
    """The user API (``/api/user/...``), authenticated with the user's token.

    Use as ``async with GatewayClient(url, token) as gw: ...``. Every call raises a subclass of
    :class:`~peerlab_tui.core.errors.GatewayError` on failure and :class:`InputError` on bad arguments
    (checked before anything is sent).
    """

    async def user_info(self) -> UserInfo:
        """The user's hash, ASN (None before the first ASN request), lease limit and active leases."""
        response = await self._request("GET", "/api/user/info", context="the user info")
        return self._parse(response, UserInfo, "the user info")

    async def request_asn(self) -> AsnResponse:
        """Get the user's ASN, assigning one on first use (sticky: always the same ASN afterwards)."""
        # Idempotent by contract, so a lost answer is safely retried.
        response = await self._request("POST", "/api/user/asn", context="the ASN", idempotent=True)
        return self._parse(response, AsnResponse, "the ASN")

    async def ensure_asn(self, on_request: Callable[[], None] | None = None) -> int:
        """Return the user's ASN, requesting one first when the user has none (``on_request`` is told)."""
        info = await self.user_info()
        if info.asn is not None:
            return info.asn
        log.info("user %s has no ASN yet: requesting one", info.user_hash)
        if on_request is not None:
            on_request()
        return (await self.request_asn()).asn

    async def request_prefix(self, hours: int) -> PrefixResponse:
        """Lease a prefix for ``hours`` hours. Sent once, never retried (a retry could lease twice)."""
        body = DurationRequest(duration_hours=check_hours(hours)).model_dump(mode="json")
        response = await self._request(
            "POST", "/api/user/prefix", context="the lease", json=body, idempotent=False
        )
        return self._parse(response, PrefixResponse, "the lease")

    async def renew_prefix(self, prefix: str, hours: int) -> PrefixResponse:
        """Extend the lease of ``prefix`` by ``hours`` hours (as the gateway defines renewal)."""
        prefix = check_prefix(prefix)
        body = DurationRequest(duration_hours=check_hours(hours)).model_dump(mode="json")
        context = f"the renewal of {prefix}"
        response = await self._request(
            "POST", f"/api/user/prefix/{segment(prefix)}/renew", context=context, json=body, idempotent=False
        )
        return self._parse(response, PrefixResponse, context)

    async def release_prefix(self, prefix: str) -> str:
        """End the lease of ``prefix`` now and return its canonical text.

        Raises NotFoundError when ``prefix`` is not an active lease of the user.
        """
        prefix = check_prefix(prefix)
        context = f"the release of {prefix}"
        await self._request("DELETE", f"/api/user/prefix/{segment(prefix)}", context=context)
        return prefix

    async def leases(self, history: bool = False) -> LeaseList:
        """The user's leases: active ones, or with ``history`` also expired and released ones."""
        params = {"history": "true"} if history else None
        try:
            response = await self._request("GET", "/api/user/leases", context="the lease list", params=params)
        except NotFoundError as exc:
            # nxthdr's gateway has no /api/user/leases (a bare 404 without reason): use /api/user/info.
            if exc.code is not None:
                raise
            if history:
                raise NotFoundError(
                    "this gateway keeps no lease history (it has no /api/user/leases)", status_code=404
                ) from exc
            log.info("gateway has no /api/user/leases; listing active leases from /api/user/info")
            info = await self.user_info()
            return LeaseList(
                leases=[
                    LeaseRecord(
                        prefix=lease.prefix,
                        start_time=lease.start_time,
                        end_time=lease.end_time,
                        state="active",
                        rpki_enabled=lease.rpki_enabled,
                    )
                    for lease in info.active_leases
                ]
            )
        return self._parse(response, LeaseList, "the lease list")

    async def register_tunnel(self, public_key: str) -> TunnelInfo:
        """Register (or rotate) the user's WireGuard public key; returns the overlay addresses and peers."""
        body = build(TunnelRequest, "WireGuard public key", public_key=public_key).model_dump(mode="json")
        context = "the tunnel registration"
        response = await self._request("POST", "/api/user/tunnel", context=context, json=body)
        return self._parse(response, TunnelInfo, context)

    async def get_tunnel(self) -> TunnelInfo:
        """The user's registered tunnel: overlay addresses and route-server peers."""
        response = await self._request("GET", "/api/user/tunnel", context="the tunnel")
        return self._parse(response, TunnelInfo, "the tunnel")

    async def delete_tunnel(self) -> None:
        """Remove the user's WireGuard key from the overlay."""
        await self._request("DELETE", "/api/user/tunnel", context="the tunnel removal")

    async def routes(self) -> RouteList:
        """Every route of the user as each route server sees it, with its verdict (looking glass)."""
        response = await self._request("GET", "/api/user/routes", context="the route list")
        return self._parse(response, RouteList, "the route list")


class ServiceClient(BaseClient):
    """The service API (``/service/...``) used by route-server agents, with a scoped service token."""

    async def mappings(self, etag: str | None = None) -> tuple[MappingList | None, str | None]:
        """All users' ASN and prefixes. With the previous ETag, ``(None, etag)`` means "unchanged" (304)."""
        headers = {"If-None-Match": etag} if etag else None
        response = await self._request(
            "GET", "/service/mappings", context="the mappings", headers=headers, accept=(200, 304)
        )
        new_etag = response.headers.get("ETag")
        if response.status_code == 304:
            return None, new_etag or etag
        return self._parse(response, MappingList, "the mappings"), new_etag

    async def mapping(self, user_hash: str) -> Mapping:
        """One user's ASN and prefixes."""
        user_hash = check_name(user_hash, "a user hash")
        context = f"the mapping of {user_hash}"
        response = await self._request("GET", f"/service/mappings/{segment(user_hash)}", context=context)
        return self._parse(response, Mapping, context)

    async def tunnels(self) -> TunnelPeerList:
        """Every user's registered WireGuard key and overlay addresses."""
        response = await self._request("GET", "/service/tunnels", context="the tunnel peers")
        return self._parse(response, TunnelPeerList, "the tunnel peers")

    async def report_routes(self, rs_name: str, routes: Sequence[ReportedRoute]) -> int:
        """Replace the gateway's view of the routes route server ``rs_name`` received.

        Returns how many routes the gateway stored (``len(routes)`` when the gateway does not say).
        """
        rs_name = check_name(rs_name, "a route-server name")
        body = RouteReport(routes=list(routes)).model_dump(mode="json")
        response = await self._request(
            "POST",
            f"/service/rs/{segment(rs_name)}/routes",
            context=f"the route report of {rs_name}",
            json=body,
            idempotent=False,
        )
        try:
            stored = response.json().get("stored") if response.content else None
        except ValueError:
            stored = None
        return stored if isinstance(stored, int) else len(routes)


class AdminClient(BaseClient):
    """The admin API (``/admin/...``), authenticated with the gateway's admin token."""

    async def create_user(self, name: str, max_leases: int | None = None) -> CreatedUser:
        """Create a user; the answer holds the user's token, shown this once only."""
        body = build(CreateUserRequest, "user", name=name, max_leases=max_leases)
        context = f"the creation of user {name}"
        response = await self._request(
            "POST", "/admin/users", context=context, json=body.model_dump(mode="json", exclude_none=True)
        )
        return self._parse(response, CreatedUser, context)

    async def list_users(self) -> UserList:
        """Every user with ASN, lease limit and active lease count."""
        response = await self._request("GET", "/admin/users", context="the user list")
        return self._parse(response, UserList, "the user list")

    async def delete_user(self, name: str) -> None:
        """Delete a user (their leases end and their tunnel is removed)."""
        name = check_name(name, "a user name")
        await self._request("DELETE", f"/admin/users/{segment(name)}", context=f"the deletion of user {name}")

    async def set_max_leases(self, name: str, n: int) -> UserSummary:
        """Set how many active leases ``name`` may hold at once; returns the updated user."""
        name = check_name(name, "a user name")
        body = build(SetMaxLeasesRequest, "lease limit", max_leases=n).model_dump(mode="json")
        context = f"the lease limit of {name}"
        response = await self._request(
            "PUT", f"/admin/users/{segment(name)}/max-leases", context=context, json=body
        )
        return self._parse(response, UserSummary, context)

    async def create_service_token(self, name: str, scopes: Sequence[str]) -> CreatedServiceToken:
        """Create a scoped token for a route-server agent; the token is shown this once only."""
        body = build(CreateServiceTokenRequest, "service token", name=name, scopes=list(scopes))
        context = f"the creation of service token {name}"
        response = await self._request(
            "POST", "/admin/service-tokens", context=context, json=body.model_dump(mode="json")
        )
        return self._parse(response, CreatedServiceToken, context)
