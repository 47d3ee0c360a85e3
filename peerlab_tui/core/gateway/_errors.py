"""Mapping of gateway error responses to the typed errors of :mod:`peerlab_tui.core.errors`.

Our gateway sends ``{"error": status, "message": ..., "reason": ...}``; nxthdr's gateway sends the same body
without ``reason`` (and axum sometimes sends no body at all), so every decision falls back on the status code
and the request's method and path when ``reason`` is absent.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx

from peerlab_tui.core.errors import (
    AuthenticationError,
    BadRequestError,
    GatewayError,
    LeaseLimitError,
    NotFoundError,
    PoolExhaustedError,
    ServerError,
)
from peerlab_tui.core.models import ErrorReason

# The calls whose 403 means "limit reached" and whose 503 means "pool exhausted" on a server without `reason`.
_PREFIX_REQUEST = ("POST", "/api/user/prefix")
_ASN_REQUEST = ("POST", "/api/user/asn")


class NoAsnError(BadRequestError):
    """A prefix was requested before the user had an ASN (ask for one with ``request_asn`` first)."""


class LifetimeExceededError(LeaseLimitError):
    """A renewal would make the lease outlive the gateway's maximum lifetime."""


class ConflictError(BadRequestError):
    """The request conflicts with existing state (HTTP 409, e.g. a user that already exists)."""


class ProtocolError(ServerError):
    """The gateway answered with a body this client cannot understand."""


def _reason(value: Any) -> ErrorReason | None:
    try:
        return ErrorReason(value) if isinstance(value, str) else None
    except ValueError:
        return None  # a reason from a newer server: decide on the status code


def parse_error_body(response: httpx.Response) -> tuple[str, ErrorReason | None]:
    """Return the server's message and reason from an error response, tolerating any body."""
    text = response.text.strip() if response.content else ""
    data: Any = None
    is_json = False
    if text:
        with contextlib.suppress(ValueError):
            data, is_json = json.loads(text), True
    if isinstance(data, dict):
        reason = _reason(data.get("reason"))
        message = data.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip(), reason
        detail = data.get("detail")  # FastAPI's default validation body
        if isinstance(detail, str) and detail.strip():
            return detail.strip(), reason
        if isinstance(detail, list) and detail:
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            if parts:
                return "; ".join(parts), reason
        return response.reason_phrase or f"HTTP {response.status_code}", reason
    if text and not is_json and len(text) <= 200 and "<" not in text:
        return text, None  # a short plain-text body (axum's default rejections)
    return response.reason_phrase or f"HTTP {response.status_code}", None


def error_for_response(response: httpx.Response, context: str, call: tuple[str, str]) -> GatewayError:
    """Build the typed error for a non-success response.

    ``context`` names the operation for the message ("the lease"); ``call`` is the (method, API path) sent,
    relative to the gateway's base URL, used when the server gives no ``reason``.
    """
    status = response.status_code
    message, reason = parse_error_body(response)

    def make(cls: type[GatewayError], text: str) -> GatewayError:
        return cls(text, status_code=status, code=reason.value if reason else None)

    if reason is ErrorReason.LEASE_LIMIT or (status == 403 and reason is None and call == _PREFIX_REQUEST):
        return make(LeaseLimitError, f"gateway refused {context}: {message}")
    if reason is ErrorReason.LIFETIME_EXCEEDED:
        return make(LifetimeExceededError, f"gateway refused {context}: {message}")
    if reason in (ErrorReason.POOL_EXHAUSTED, ErrorReason.ASN_EXHAUSTED) or (
        status == 503 and reason is None and call in (_PREFIX_REQUEST, _ASN_REQUEST)
    ):
        return make(PoolExhaustedError, f"gateway could not grant {context}: {message}")
    if status in (401, 403) or reason in (ErrorReason.UNAUTHENTICATED, ErrorReason.FORBIDDEN):
        return make(
            AuthenticationError, f"gateway rejected the credentials for {context} (HTTP {status}): {message}"
        )
    if reason is ErrorReason.NO_ASN:
        return make(NoAsnError, f"gateway refused {context}: {message} (request an ASN first)")
    if status == 404 or reason is ErrorReason.NOT_FOUND:
        return make(NotFoundError, f"{context} failed: {message} (HTTP 404)")
    if status == 409 or reason is ErrorReason.CONFLICT:
        return make(ConflictError, f"{context} failed: {message} (HTTP {status})")
    if status in (400, 422) or reason in (ErrorReason.BAD_REQUEST, ErrorReason.BAD_DURATION):
        return make(BadRequestError, f"gateway rejected {context} as invalid: {message}")
    if status >= 500:
        return make(ServerError, f"gateway failed on {context} (HTTP {status}): {message}")
    return make(GatewayError, f"{context} failed (HTTP {status}): {message}")
