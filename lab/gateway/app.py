"""The gateway's HTTP API (FastAPI): user, admin, service, health, metrics.

Every error, including validation errors and unknown routes, is an ``ErrorBody``
(``{"error": status, "message": ..., "reason": ...}``). The database work of a request (authentication,
then the operation) runs in one step: inline on the event loop on SQLite, in one worker thread on PostgreSQL.
The user API's hot endpoints return pre-serialized JSON (their ``response_model`` only documents it).
"""

# No "from __future__ import annotations": FastAPI must see the closures' dependency types.

import hashlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lab.gateway.clock import Clock
from lab.gateway.config import GatewayConfig
from lab.gateway.db import Database
from lab.gateway.limits import BodySizeLimit
from lab.gateway.service import ApiError, GatewayService, Principal, UnresolvedToken
from peerlab_tui import __version__
from peerlab_tui.core import models as m
from peerlab_tui.core.models import ErrorReason

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServiceTokenSummary(m.WireModel):
    """One service token in ``GET /admin/service-tokens`` (the token itself is never shown again)."""

    name: str
    scopes: list[str]
    created_at: Any


class ServiceTokenList(m.WireModel):
    """``GET /admin/service-tokens``."""

    tokens: list[ServiceTokenSummary]


class Health(m.WireModel):
    """``GET /healthz``."""

    status: str
    version: str


_STATUS_REASON = {
    400: ErrorReason.BAD_REQUEST,
    401: ErrorReason.UNAUTHENTICATED,
    403: ErrorReason.FORBIDDEN,
    404: ErrorReason.NOT_FOUND,
    405: ErrorReason.BAD_REQUEST,
    409: ErrorReason.CONFLICT,
}


def error_response(
    status: int, reason: ErrorReason | None, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An ErrorBody response."""
    body = m.ErrorBody(error=status, message=message, reason=reason)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def json_response(model: BaseModel) -> Response:
    """A model as JSON, serialized once: the endpoints' ``response_model`` still documents the schema, but
    FastAPI does not validate and serialize the returned object a second time."""
    return Response(model.model_dump_json(), media_type="application/json")


def _describe_validation(errors: list[Any]) -> str:
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) if parts else "invalid request"


class Metrics:
    """Request counters for the Prometheus text endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}

    def count(self, method: str, path: str, status: int) -> None:
        """Count one finished request."""
        with self._lock:
            key = (method, path, status)
            self.requests[key] = self.requests.get(key, 0) + 1

    def render(self, gauges: dict[str, int]) -> str:
        """Prometheus text exposition."""
        lines = [
            "# HELP peerlab_gateway_requests_total HTTP requests by method, path template and status.",
            "# TYPE peerlab_gateway_requests_total counter",
        ]
        with self._lock:
            items = sorted(self.requests.items())
        for (method, path, status), n in items:
            lines.append(
                f'peerlab_gateway_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}'
            )
        help_text = {
            "active_leases": "Leases currently active.",
            "pool_size": "Prefixes the configured pools hold.",
            "pool_free": "Prefixes that can be leased now (not held, not in quarantine).",
            "users": "Registered users.",
        }
        for key, value in gauges.items():
            lines += [
                f"# HELP peerlab_gateway_{key} {help_text.get(key, key)}",
                f"# TYPE peerlab_gateway_{key} gauge",
                f"peerlab_gateway_{key} {value}",
            ]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts requests by route template (never by raw path, which would explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.count(scope.get("method", "?"), path, status)


def create_app(config: GatewayConfig, db: Database, clock: Clock | None = None) -> FastAPI:
    """Build the FastAPI application around a database and a clock."""
    service = GatewayService(db, config, clock)
    metrics = Metrics()
    app = FastAPI(
        title="PeerLab gateway",
        version=__version__,
        description="Leases private ASNs and IPv6 prefixes; coordinates the WireGuard overlay and the "
        "route servers' looking glass. Errors are ErrorBody objects.",
    )
    app.state.service = service
    app.state.metrics = metrics

    # --- errors ------------------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="peerlab"'} if exc.status == 401 else None
        return error_response(exc.status, exc.reason, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, ErrorReason.BAD_REQUEST, _describe_validation(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        if status == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif status == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(
            status,
            _STATUS_REASON.get(status, ErrorReason.INTERNAL),
            message,
            dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return error_response(500, ErrorReason.INTERNAL, "internal error (see the gateway's log)")

    # --- authentication ----------------------------------------------------------------------------------
    # On SQLite the database work runs inline on the event loop: every operation is a few sub-millisecond
    # statements on a local file and writes are serialized anyway, whereas handing each request to a worker
    # thread and back costs more than the work (GIL hand-offs between the loop and the workers).
    inline = db.is_sqlite
    # The header is parsed on the event loop; the token lookup, the permission check, body validation and
    # the operation then run in ONE step (on PostgreSQL one worker-thread hop: two hops would queue each
    # request twice under load).
    # Authentication always comes first: a bad token gets 401/403 whatever the body holds.

    class Caller:
        """A request's bearer token and what the endpoint requires of it."""

        def __init__(self, token: str, kind: str, scope: str = "") -> None:
            self.token, self.kind, self.scope = token, kind, scope

        def check(self) -> Principal:
            found = service.authenticate(self.token)
            if found is None:
                raise ApiError(401, ErrorReason.UNAUTHENTICATED, "invalid or revoked token")
            if self.kind == "user" and (found.kind != "user" or found.user_id is None):
                raise ApiError(403, ErrorReason.FORBIDDEN, "this endpoint needs a user token")
            if self.kind == "admin" and found.kind != "admin":
                raise ApiError(403, ErrorReason.FORBIDDEN, "this endpoint needs the admin token")
            if self.kind == "service":
                if found.kind != "service":
                    raise ApiError(
                        403, ErrorReason.FORBIDDEN, f"this endpoint needs a service token with {self.scope}"
                    )
                if self.scope not in found.scopes:
                    raise ApiError(
                        403, ErrorReason.FORBIDDEN, f"this service token lacks the scope {self.scope}"
                    )
            return found

        async def run(self, work: Callable[[Principal], Any]) -> Any:
            """Authenticate, then do ``work(principal)``: inline on SQLite, else in one worker thread."""
            if inline:
                return work(self.check())
            return await run_in_threadpool(lambda: work(self.check()))

        async def by_token(self, work: Callable[[str], Any]) -> Any:
            """Do ``work(token)`` with a ``*_by_token`` service call that resolves the user itself (saving a
            round trip on PostgreSQL); the token is checked on its own only when that finds no user, or when
            the work refuses the input (authentication errors take precedence over input errors)."""

            def attempt() -> Any:
                try:
                    return work(self.token)
                except UnresolvedToken:
                    self.check()  # raises the precise 401 or 403
                    raise ApiError(401, ErrorReason.UNAUTHENTICATED, "invalid or revoked token") from None
                except ApiError as exc:
                    if exc.status == 400:
                        self.check()
                    raise

            return attempt() if inline else await run_in_threadpool(attempt)

        async def as_user(self, work: Callable[[int], Any]) -> Any:
            """Like ``run`` with the caller's user id."""
            return await self.run(lambda p: work(int(p.user_id or 0)))

    def bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(
                401, ErrorReason.UNAUTHENTICATED, "missing bearer token (Authorization: Bearer ...)"
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401, ErrorReason.UNAUTHENTICATED, "the Authorization header must be 'Bearer TOKEN'"
            )
        return token.strip()

    async def user_caller(request: Request) -> Caller:
        return Caller(bearer(request), "user")

    async def admin_caller(request: Request) -> Caller:
        return Caller(bearer(request), "admin")

    def service_caller(scope: str) -> Callable[[Request], Awaitable[Caller]]:
        async def dependency(request: Request) -> Caller:
            return Caller(bearer(request), "service", scope)

        return dependency

    UserCaller = Annotated[Caller, Depends(user_caller)]
    AdminCaller = Annotated[Caller, Depends(admin_caller)]

    def parse_body(model: type[BaseModel], body: bytes, *, duration: bool = False) -> Any:
        """Validate a JSON body strictly (``"5"`` is not an integer) with a clear 400."""
        reason = ErrorReason.BAD_DURATION if duration else ErrorReason.BAD_REQUEST
        if not body.strip():
            raise ApiError(
                400, reason, "a JSON body is required" + (' (e.g. {"duration_hours": 4})' if duration else "")
            )
        try:
            return model.model_validate_json(body, strict=True)
        except ValidationError as exc:
            message = _describe_validation(
                [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors(include_url=False)]
            )
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                message = "the request body is not valid JSON"
            elif duration:
                message = (
                    f'the body must be {{"duration_hours": N}} with N an integer from {config.min_hours} '
                    f"to {config.max_hours}; {message}"
                )
            raise ApiError(400, reason, message) from None

    def parse_bool(name: str, value: str | None) -> bool:
        if value is None:
            return False
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off", ""):
            return False
        raise ApiError(
            400, ErrorReason.BAD_REQUEST, f"invalid request: query.{name}: {value!r} is not true or false"
        )

    # --- health and metrics ------------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz() -> Health:
        """Liveness and database reachability."""
        service.ping()
        return Health(status="ok", version=__version__)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    def prometheus() -> PlainTextResponse:
        """Prometheus text: requests by path template and status, active leases, pool size and free."""
        return PlainTextResponse(metrics.render(service.stats()), media_type="text/plain; version=0.0.4")

    # --- user API ----------------------------------------------------------------------------------------

    duration_body = {
        "requestBody": {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DurationRequest"}}},
            "required": True,
        }
    }

    @app.get("/api/user/info", response_model=m.UserInfo, tags=["user"])
    async def user_info(caller: UserCaller) -> Response:
        """The caller's hash, ASN, lease limit and active leases."""
        return json_response(await caller.as_user(service.user_info))

    @app.post("/api/user/asn", response_model=m.AsnResponse, tags=["user"])
    async def user_asn(caller: UserCaller) -> Response:
        """Assign the caller an ASN (sticky; asking again returns the same one)."""
        return json_response(await caller.as_user(service.assign_asn))

    @app.post("/api/user/prefix", response_model=m.PrefixResponse, tags=["user"], openapi_extra=duration_body)
    async def user_prefix(caller: UserCaller, request: Request) -> Response:
        """Lease a prefix for ``duration_hours`` hours."""
        body = await request.body()
        return json_response(
            await caller.by_token(
                lambda token: service.request_prefix_by_token(
                    token, parse_body(m.DurationRequest, body, duration=True).duration_hours
                )
            )
        )

    @app.post(
        "/api/user/prefix/{prefix:path}/renew",
        response_model=m.PrefixResponse,
        tags=["user"],
        openapi_extra=duration_body,
    )
    async def user_renew(caller: UserCaller, prefix: str, request: Request) -> Response:
        """Extend an active lease by ``duration_hours`` from its current end (bounded by the max lifetime)."""
        body = await request.body()
        return json_response(
            await caller.as_user(
                lambda uid: service.renew_prefix(
                    uid, prefix, parse_body(m.DurationRequest, body, duration=True).duration_hours
                )
            )
        )

    @app.delete("/api/user/prefix/{prefix:path}", status_code=204, tags=["user"])
    async def user_release(caller: UserCaller, prefix: str) -> Response:
        """Release an active lease now (the prefix is then quarantined)."""
        await caller.by_token(lambda token: service.release_prefix_by_token(token, prefix))
        return Response(status_code=204)

    @app.get("/api/user/leases", response_model=m.LeaseList, tags=["user"])
    async def user_leases(caller: UserCaller, history: str | None = None) -> Response:
        """Active leases; with ``?history=true`` also expired and released ones."""
        return json_response(
            await caller.as_user(lambda uid: service.list_leases(uid, parse_bool("history", history)))
        )

    @app.post("/api/user/tunnel", response_model=m.TunnelInfo, tags=["overlay"])
    async def tunnel_register(caller: UserCaller, request: Request) -> m.TunnelInfo:
        """Register or rotate the caller's WireGuard public key."""
        body = await request.body()
        return await caller.as_user(
            lambda uid: service.register_tunnel(uid, parse_body(m.TunnelRequest, body).public_key)
        )

    @app.get("/api/user/tunnel", response_model=m.TunnelInfo, tags=["overlay"])
    async def tunnel_get(caller: UserCaller) -> m.TunnelInfo:
        """The caller's overlay addresses and the route servers to peer with."""
        return await caller.as_user(service.get_tunnel)

    @app.delete("/api/user/tunnel", status_code=204, tags=["overlay"])
    async def tunnel_delete(caller: UserCaller) -> Response:
        """Remove the caller's key."""
        await caller.as_user(service.delete_tunnel)
        return Response(status_code=204)

    @app.get("/api/user/routes", response_model=m.RouteList, tags=["looking glass"])
    async def user_routes(caller: UserCaller) -> m.RouteList:
        """The caller's routes as each route server received them, with verdicts."""
        return await caller.as_user(service.user_routes)

    # --- admin API ---------------------------------------------------------------------------------------

    @app.post("/admin/users", status_code=201, response_model=m.CreatedUser, tags=["admin"])
    async def admin_create_user(caller: AdminCaller, request: Request) -> m.CreatedUser:
        """Create a user; its token is in this answer only."""
        body = await request.body()

        def work(_p: Principal) -> m.CreatedUser:
            req = parse_body(m.CreateUserRequest, body)
            return service.create_user(req.name, req.max_leases)

        return await caller.run(work)

    @app.get("/admin/users", response_model=m.UserList, tags=["admin"])
    async def admin_list_users(caller: AdminCaller) -> m.UserList:
        """Every user."""
        return await caller.run(lambda _p: service.list_users())

    @app.delete("/admin/users/{name}", status_code=204, tags=["admin"])
    async def admin_delete_user(caller: AdminCaller, name: str) -> Response:
        """Delete a user and end its leases."""
        await caller.run(lambda _p: service.delete_user(name))
        return Response(status_code=204)

    @app.put("/admin/users/{name}/max-leases", response_model=m.UserSummary, tags=["admin"])
    async def admin_max_leases(caller: AdminCaller, name: str, request: Request) -> m.UserSummary:
        """Set one user's lease limit."""
        body = await request.body()
        return await caller.run(
            lambda _p: service.set_max_leases(name, parse_body(m.SetMaxLeasesRequest, body).max_leases)
        )

    @app.post("/admin/service-tokens", status_code=201, response_model=m.CreatedServiceToken, tags=["admin"])
    async def admin_create_service_token(caller: AdminCaller, request: Request) -> m.CreatedServiceToken:
        """Create a scoped service token; the token is in this answer only."""
        body = await request.body()

        def work(_p: Principal) -> m.CreatedServiceToken:
            req = parse_body(m.CreateServiceTokenRequest, body)
            return service.create_service_token(req.name, list(req.scopes))

        return await caller.run(work)

    @app.get("/admin/service-tokens", response_model=ServiceTokenList, tags=["admin"])
    async def admin_list_service_tokens(caller: AdminCaller) -> ServiceTokenList:
        """Names and scopes of the service tokens."""
        return await caller.run(
            lambda _p: ServiceTokenList.model_validate({"tokens": service.list_service_tokens()})
        )

    @app.delete("/admin/service-tokens/{name}", status_code=204, tags=["admin"])
    async def admin_delete_service_token(caller: AdminCaller, name: str) -> Response:
        """Revoke a service token."""
        await caller.run(lambda _p: service.delete_service_token(name))
        return Response(status_code=204)

    # --- service API -------------------------------------------------------------------------------------

    @app.get("/service/mappings", response_model=m.MappingList, tags=["service"])
    async def service_mappings(
        caller: Annotated[Caller, Depends(service_caller("mappings:read"))], request: Request
    ) -> Response:
        """Users with an ASN and their active prefixes; strong ETag, 304 on a matching If-None-Match."""
        body = await caller.run(lambda _p: service.mappings().model_dump(mode="json"))
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(raw).hexdigest() + '"'
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(raw, media_type="application/json", headers={"ETag": etag})

    @app.get("/service/mappings/{user_hash}", response_model=m.Mapping, tags=["service"])
    async def service_mapping(
        caller: Annotated[Caller, Depends(service_caller("mappings:read"))], user_hash: str
    ) -> m.Mapping:
        """One user's mapping (404 when unknown or without an ASN)."""
        found: list[m.Mapping] = await caller.run(lambda _p: service.mappings(user_hash).mappings)
        if not found:
            raise ApiError(404, ErrorReason.NOT_FOUND, f"no user with hash {user_hash!r} and an ASN")
        return found[0]

    @app.get("/service/tunnels", response_model=m.TunnelPeerList, tags=["service"])
    async def service_tunnels(
        caller: Annotated[Caller, Depends(service_caller("tunnels:read"))],
    ) -> m.TunnelPeerList:
        """Every registered WireGuard key with its owner's overlay addresses."""
        return await caller.run(lambda _p: service.tunnel_peers())

    @app.post("/service/rs/{name}/routes", tags=["service"])
    async def service_routes(
        caller: Annotated[Caller, Depends(service_caller("routes:write"))], name: str, request: Request
    ) -> dict[str, int]:
        """Replace route server ``name``'s full set of received routes with this report."""
        body = await request.body()
        stored = await caller.run(lambda _p: service.replace_routes(name, parse_body(m.RouteReport, body)))
        return {"stored": stored}

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Outermost: bound every request body before any endpoint (or authentication) reads it.
    app.add_middleware(BodySizeLimit)
    return app


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return etag in candidates
