"""The HTTP layer shared by the three clients: one httpx.AsyncClient, the retry policy, error mapping.

Retry policy: only idempotent calls are retried (the caller says which), on transport failures and on
502/503/504 -- except a 503 that means "pool exhausted", which retrying cannot fix. Non-idempotent calls
(a prefix request, a renewal) are sent exactly once: a lost answer must not turn into a second lease.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Collection, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from peerlab_tui import __version__
from peerlab_tui.core.errors import (
    GatewayError,
    InputError,
    NotFoundError,
    PoolExhaustedError,
    TransportError,
)
from peerlab_tui.core.gateway._errors import ProtocolError, error_for_response

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

RETRYABLE_STATUS = frozenset({502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_MAX_BACKOFF = 5.0

# Failures after which the server may have processed the request although we got no answer.
_AMBIGUOUS = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def check_base_url(base_url: str) -> str:
    """Return the gateway URL without a trailing slash, or raise InputError when it is not http(s)."""
    text = (base_url or "").strip()
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InputError(f"gateway URL {base_url!r} is not a valid URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(f"gateway URL {base_url!r} must look like http://HOST:PORT or https://HOST")
    return text.rstrip("/")


def check_token(token: str) -> str:
    """Return the token stripped of surrounding whitespace, or raise InputError when it cannot be sent."""
    value = (token or "").strip()
    if not value:
        raise InputError("the gateway token is empty")
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise InputError("the gateway token contains whitespace, control or non-ASCII characters")
    return value


class BaseClient:
    """An authenticated connection to the gateway; subclasses add the calls of one API surface."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        if timeout <= 0:
            raise InputError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise InputError(f"retries must be >= 0, got {retries}")
        self.base_url = check_base_url(base_url)
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = max(0.0, backoff)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(self.timeout),
            headers={
                "Authorization": f"Bearer {check_token(token)}",
                "Accept": "application/json",
                "User-Agent": f"peerlab-tui/{__version__}",
            },
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connections."""
        await self._http.aclose()

    def __repr__(self) -> str:  # never shows the token
        return f"{type(self).__name__}({self.base_url!r})"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        context: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        accept: Collection[int] = (200, 201, 204),
    ) -> httpx.Response:
        """Send one call with the retry policy; return the response when its status is in ``accept``.

        ``path`` is relative to the base URL and already URL-encoded; ``context`` names the operation in
        error messages ("the lease"). ``idempotent`` defaults to the HTTP method's semantics.
        """
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        attempts = 1 + (self.retries if idempotent else 0)
        maybe_applied = False
        error: GatewayError | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(_MAX_BACKOFF, self.backoff * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)
                log.info("retrying %s %s in %.2fs after: %s", method, path, delay, error)
                await asyncio.sleep(delay)
            try:
                response = await self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TimeoutException as exc:
                maybe_applied = maybe_applied or isinstance(exc, _AMBIGUOUS)
                error = TransportError(
                    f"the gateway at {self.base_url} did not answer within {self.timeout:g}s ({context})"
                )
                continue
            except httpx.RequestError as exc:
                maybe_applied = maybe_applied or isinstance(exc, _AMBIGUOUS)
                detail = str(exc) or type(exc).__name__
                error = TransportError(f"cannot reach the gateway at {self.base_url} ({context}): {detail}")
                continue
            log.debug("%s %s -> %d", method, path, response.status_code)
            if response.status_code in accept:
                return response
            error = error_for_response(response, context, (method, path.split("?")[0].rstrip("/")))
            if response.status_code not in RETRYABLE_STATUS or isinstance(error, PoolExhaustedError):
                break
        assert error is not None
        if maybe_applied and isinstance(error, NotFoundError) and method == "DELETE":
            # The first DELETE may have succeeded before its answer was lost.
            error.message += " -- an earlier attempt whose answer was lost may already have done it"
        raise error

    @staticmethod
    def _parse(response: httpx.Response, model: type[M], context: str) -> M:
        """Validate a JSON answer into ``model``; an unexpected body is a ProtocolError."""
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ProtocolError(
                f"the gateway sent an unexpected answer for {context} (HTTP {response.status_code}): "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
                status_code=response.status_code,
            ) from exc
