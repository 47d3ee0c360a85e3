"""Test doubles for the gateway client: a recording MockTransport and an in-memory fake gateway."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Wraps a handler in an ``httpx.MockTransport`` and keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def calls(self) -> int:
        """How many requests reached the transport."""
        return len(self.requests)


def sequence(*steps: httpx.Response | Exception) -> Handler:
    """A handler answering with ``steps`` in order (an exception is raised); the last one repeats."""
    state = {"i": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        step = steps[min(state["i"], len(steps) - 1)]
        state["i"] += 1
        if isinstance(step, Exception):
            raise step
        return step

    return handler


def error(status: int, message: str | None = None, reason: str | None = None) -> httpx.Response:
    """An error response shaped like the gateway's (``reason`` omitted, as nxthdr's gateway does)."""
    if message is None:
        return httpx.Response(status)
    body: dict[str, Any] = {"error": status, "message": message}
    if reason is not None:
        body["reason"] = reason
    return httpx.Response(status, json=body)


def iso(value: datetime) -> str:
    """RFC 3339 text of a datetime."""
    return value.astimezone(UTC).isoformat()


class FakeGateway:
    """A small in-memory gateway speaking the user API, for CLI tests (one token, one user)."""

    def __init__(self, token: str = "tok-alice", *, max_leases: int = 2, pool: int = 3) -> None:
        self.token = token
        self.asn: int | None = None
        self.max_leases = max_leases
        self.pool = [f"2001:db8:{0x1000 + i:x}::/48" for i in range(pool)]
        self.leases: dict[str, dict[str, Any]] = {}
        self.ended: list[dict[str, Any]] = []
        self.recorder = Recorder(self.handle)

    @property
    def transport(self) -> httpx.MockTransport:
        """The transport to inject into the client."""
        return self.recorder.transport

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Dispatch one request like the real gateway would."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "Invalid or missing token", "unauthenticated")
        path = request.url.path
        method = request.method
        if (method, path) == ("GET", "/api/user/info"):
            return httpx.Response(
                200,
                json={
                    "user_hash": "h" * 64,
                    "asn": self.asn,
                    "max_leases": self.max_leases,
                    "active_leases": [
                        {k: v for k, v in lease.items() if k in ("prefix", "start_time", "end_time")}
                        for lease in self.leases.values()
                    ],
                },
            )
        if (method, path) == ("POST", "/api/user/asn"):
            message = "ASN already assigned"
            if self.asn is None:
                self.asn, message = 65001, "ASN assigned successfully"
            return httpx.Response(200, json={"asn": self.asn, "message": message})
        if (method, path) == ("POST", "/api/user/prefix"):
            if self.asn is None:
                return error(400, "You need an ASN before requesting a prefix", "no_asn")
            if len(self.leases) >= self.max_leases:
                n = len(self.leases)
                return error(403, f"Maximum lease limit reached ({n}/{self.max_leases})", "lease_limit")
            free = [p for p in self.pool if p not in self.leases]
            if not free:
                return error(503, "No available prefixes at this time", "pool_exhausted")
            hours = json.loads(request.content)["duration_hours"]
            now = datetime.now(UTC)
            lease = {"prefix": free[0], "start_time": iso(now), "end_time": iso(now + timedelta(hours=hours))}
            self.leases[free[0]] = lease
            return httpx.Response(200, json={**lease, "message": "Prefix leased successfully"})
        if method == "GET" and path == "/api/user/leases":
            rows = [{**lease, "state": "active"} for lease in self.leases.values()]
            if request.url.params.get("history") == "true":
                rows += self.ended
            return httpx.Response(200, json={"leases": rows})
        if path.startswith("/api/user/prefix/"):
            rest = path.removeprefix("/api/user/prefix/")
            # httpx decodes url.path; check the raw path really carried an encoded slash.
            assert b"%2F" in request.url.raw_path, request.url.raw_path
            if method == "DELETE":
                prefix = unquote(rest)
                if prefix not in self.leases:
                    return error(404, "Prefix lease not found or already expired", "not_found")
                lease = self.leases.pop(prefix)
                self.ended.append({**lease, "state": "released", "released_at": iso(datetime.now(UTC))})
                return httpx.Response(204)
            if method == "POST" and rest.endswith("/renew"):
                prefix = unquote(rest.removesuffix("/renew"))
                if prefix not in self.leases:
                    return error(404, "Prefix lease not found or already expired", "not_found")
                hours = json.loads(request.content)["duration_hours"]
                end = datetime.fromisoformat(self.leases[prefix]["end_time"]) + timedelta(hours=hours)
                self.leases[prefix]["end_time"] = iso(end)
                return httpx.Response(200, json={**self.leases[prefix], "message": "Lease renewed"})
        return error(404, "Not found", "not_found")
