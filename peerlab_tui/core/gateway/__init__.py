"""Async client of the PeerLab lease gateway (user, service and admin APIs).

The public surface is this module; everything in the ``_``-prefixed modules is private::

    from peerlab_tui.core.gateway import GatewayClient

    async with GatewayClient("http://127.0.0.1:8080", token) as gw:
        asn = await gw.ensure_asn()
        lease = await gw.request_prefix(hours=2)

Every failure is a :class:`~peerlab_tui.core.errors.GatewayError` subclass (``AuthenticationError``,
``LeaseLimitError``, ``PoolExhaustedError``, ``NotFoundError``, ``BadRequestError``, ``ServerError``,
``TransportError``) whose message is the server's message with context; bad arguments raise
:class:`~peerlab_tui.core.errors.InputError` before anything is sent. Tests inject an
``httpx.MockTransport`` through ``transport=``. Idempotent calls are retried ``retries`` times on transport
errors and 502/503/504; a prefix request or renewal never is.
"""

from peerlab_tui.core.errors import (
    AuthenticationError,
    BadRequestError,
    GatewayError,
    LeaseLimitError,
    NotFoundError,
    PoolExhaustedError,
    ServerError,
    TransportError,
)
from peerlab_tui.core.gateway._client import AdminClient, GatewayClient, ServiceClient
from peerlab_tui.core.gateway._errors import (
    ConflictError,
    LifetimeExceededError,
    NoAsnError,
    ProtocolError,
    parse_error_body,
)
from peerlab_tui.core.gateway._validate import check_hours, check_prefix

__all__ = [
    "AdminClient",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GatewayClient",
    "GatewayError",
    "LeaseLimitError",
    "LifetimeExceededError",
    "NoAsnError",
    "NotFoundError",
    "PoolExhaustedError",
    "ProtocolError",
    "ServerError",
    "ServiceClient",
    "TransportError",
    "check_hours",
    "check_prefix",
    "parse_error_body",
]
