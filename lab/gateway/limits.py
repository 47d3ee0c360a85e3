"""Request body size limits, enforced before any endpoint (or authentication) reads the body.

Without them, anyone — even with a made-up token — could make the gateway buffer an arbitrarily large body
before answering 401. The limit is checked against ``Content-Length`` up front, and counted while streaming
for bodies without one, so memory stays bounded either way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from peerlab_tui.core.models import ErrorReason

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_LIMIT = 64 * 1024  # user and admin calls carry a few hundred bytes
# A route server reports every route it received at once: allow a large (but bounded) report.
ROUTE_REPORT_LIMIT = 64 * 1024 * 1024
_ROUTE_REPORT = re.compile(r"^/service/rs/[^/]+/routes$")


def body_limit(path: str) -> int:
    """The largest body accepted on ``path``, in bytes."""
    return ROUTE_REPORT_LIMIT if _ROUTE_REPORT.match(path) else DEFAULT_LIMIT


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware answering 413 (with the gateway's error body) to bodies over :func:`body_limit`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length first, then count the streamed bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reject(send, 400, "Content-Length is not a number")
                    return
                if declared > limit:
                    await _reject(send, 413, f"request body larger than {limit} bytes")
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reject(send, 413, f"request body larger than {limit} bytes")


async def _reject(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": status, "message": message, "reason": ErrorReason.BAD_REQUEST.value}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
