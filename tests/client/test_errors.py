"""Every gateway error response maps to the typed error (and exit code) a user relies on."""

from __future__ import annotations

import httpx
import pytest

from peerlab_tui.core.errors import ExitCode
from peerlab_tui.core.gateway import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GatewayClient,
    GatewayError,
    LeaseLimitError,
    LifetimeExceededError,
    NoAsnError,
    NotFoundError,
    PoolExhaustedError,
    ProtocolError,
    ServerError,
    parse_error_body,
)
from tests.client._fakes import Recorder, error, sequence

URL = "http://gateway.test"
PREFIX = "2001:db8:1000::/48"


def client(recorder: Recorder, **kw: object) -> GatewayClient:
    return GatewayClient(URL, "tok", transport=recorder.transport, backoff=0, **kw)  # type: ignore[arg-type]


async def test_nxthdr_lease_limit_without_reason_is_lease_limit() -> None:
    """nxthdr's 403 on a prefix request (no reason) is the lease limit, with the server's message."""
    rec = Recorder(
        sequence(error(403, "Maximum lease limit reached (1/1). Please revoke an existing lease."))
    )
    async with client(rec) as gw:
        with pytest.raises(LeaseLimitError) as info:
            await gw.request_prefix(1)
    assert str(info.value).startswith("gateway refused the lease: Maximum lease limit reached (1/1)")
    assert info.value.status_code == 403 and info.value.code is None
    assert info.value.exit_code == ExitCode.REFUSED
    assert rec.calls == 1


async def test_lease_limit_reason_is_lease_limit() -> None:
    rec = Recorder(sequence(error(403, "Maximum lease limit reached (2/2)", "lease_limit")))
    async with client(rec) as gw:
        with pytest.raises(LeaseLimitError, match=r"refused the lease: Maximum lease limit reached \(2/2\)"):
            await gw.request_prefix(1)


async def test_403_forbidden_reason_on_prefix_request_is_authentication() -> None:
    """Our gateway's 403 'forbidden' (e.g. a service token on the user API) is an auth error, not a limit."""
    rec = Recorder(sequence(error(403, "This token may not use the user API", "forbidden")))
    async with client(rec) as gw:
        with pytest.raises(AuthenticationError, match="may not use the user API") as info:
            await gw.request_prefix(1)
    assert info.value.exit_code == ExitCode.AUTH


async def test_403_without_reason_elsewhere_is_authentication() -> None:
    rec = Recorder(sequence(error(403, "Forbidden")))
    async with client(rec) as gw:
        with pytest.raises(AuthenticationError, match=r"HTTP 403\): Forbidden"):
            await gw.user_info()


@pytest.mark.parametrize("response", [error(401), error(401, "Invalid token", "unauthenticated")])
async def test_401_is_authentication_with_or_without_body(response: httpx.Response) -> None:
    rec = Recorder(sequence(response))
    async with client(rec) as gw:
        with pytest.raises(AuthenticationError, match="rejected the credentials for the user info"):
            await gw.user_info()
    assert rec.calls == 1  # an auth failure is never retried


async def test_nxthdr_pool_exhausted_without_reason_is_not_retried() -> None:
    rec = Recorder(sequence(error(503, "No available prefixes at this time")))
    async with client(rec, retries=3) as gw:
        with pytest.raises(PoolExhaustedError) as info:
            await gw.request_prefix(2)
    assert str(info.value) == "gateway could not grant the lease: No available prefixes at this time"
    assert info.value.exit_code == ExitCode.EXHAUSTED
    assert rec.calls == 1


async def test_asn_pool_exhausted_is_not_retried_although_asn_request_is_idempotent() -> None:
    rec = Recorder(sequence(error(503, "No available ASNs at this time")))
    async with client(rec, retries=3) as gw:
        with pytest.raises(PoolExhaustedError, match="No available ASNs"):
            await gw.request_asn()
    assert rec.calls == 1


async def test_pool_exhausted_reason_is_pool_exhausted() -> None:
    rec = Recorder(sequence(error(503, "pool empty", "pool_exhausted")))
    async with client(rec) as gw:
        with pytest.raises(PoolExhaustedError, match="pool empty"):
            await gw.request_prefix(1)
    assert rec.calls == 1


async def test_plain_503_on_a_read_is_a_retried_server_error() -> None:
    rec = Recorder(sequence(error(503, "maintenance")))
    async with client(rec, retries=2) as gw:
        with pytest.raises(ServerError, match=r"HTTP 503\): maintenance") as info:
            await gw.user_info()
    assert not isinstance(info.value, PoolExhaustedError)
    assert rec.calls == 3


@pytest.mark.parametrize("reason", [None, "not_found"])
async def test_404_on_release_is_not_found(reason: str | None) -> None:
    rec = Recorder(sequence(error(404, "Prefix lease not found or already expired", reason)))
    async with client(rec) as gw:
        with pytest.raises(NotFoundError) as info:
            await gw.release_prefix(PREFIX)
    assert str(info.value) == (
        f"the release of {PREFIX} failed: Prefix lease not found or already expired (HTTP 404)"
    )
    assert info.value.exit_code == ExitCode.NOT_FOUND
    assert rec.calls == 1  # a 404 is final even for an idempotent call


async def test_nxthdr_no_asn_is_bad_request_and_reason_gives_no_asn_error() -> None:
    rec = Recorder(sequence(error(400, "You need an ASN before requesting a prefix")))
    async with client(rec) as gw:
        with pytest.raises(BadRequestError, match="You need an ASN") as info:
            await gw.request_prefix(1)
    assert info.value.exit_code == ExitCode.USAGE
    rec = Recorder(sequence(error(400, "You need an ASN before requesting a prefix", "no_asn")))
    async with client(rec) as gw:
        with pytest.raises(NoAsnError, match="request an ASN first"):
            await gw.request_prefix(1)


async def test_bad_duration_is_bad_request() -> None:
    rec = Recorder(sequence(error(400, "Duration must be between 1 and 24 hours", "bad_duration")))
    async with client(rec) as gw:
        with pytest.raises(BadRequestError, match="as invalid: Duration must be between 1 and 24 hours"):
            await gw.request_prefix(48)


async def test_fastapi_422_detail_list_is_bad_request_with_field_names() -> None:
    body = {"detail": [{"loc": ["body", "duration_hours"], "msg": "Input should be a valid integer"}]}
    rec = Recorder(sequence(httpx.Response(422, json=body)))
    async with client(rec) as gw:
        with pytest.raises(BadRequestError, match="duration_hours: Input should be a valid integer"):
            await gw.request_prefix(1)


async def test_lifetime_exceeded_is_a_refusal() -> None:
    rec = Recorder(sequence(error(403, "Lease would exceed 72 h", "lifetime_exceeded")))
    async with client(rec) as gw:
        with pytest.raises(LifetimeExceededError, match=f"refused the renewal of {PREFIX}: Lease would"):
            await gw.renew_prefix(PREFIX, 100)


async def test_conflict_is_conflict_error() -> None:
    rec = Recorder(sequence(error(409, "user alice exists", "conflict")))
    async with client(rec) as gw:
        with pytest.raises(ConflictError, match="user alice exists"):
            await gw.user_info()


async def test_500_is_server_error_and_not_retried() -> None:
    rec = Recorder(sequence(error(500, "Failed to retrieve user information")))
    async with client(rec) as gw:
        with pytest.raises(ServerError, match=r"HTTP 500\): Failed to retrieve user information") as info:
            await gw.user_info()
    assert info.value.exit_code == ExitCode.ERROR
    assert rec.calls == 1


async def test_html_502_from_a_proxy_uses_the_status_phrase() -> None:
    page = httpx.Response(502, text="<html><body>Bad gateway from nginx</body></html>")
    rec = Recorder(sequence(page))
    async with client(rec) as gw:
        with pytest.raises(ServerError, match=r"HTTP 502\): Bad Gateway"):
            await gw.user_info()
    assert rec.calls == 3


async def test_unknown_reason_from_a_newer_server_falls_back_on_status() -> None:
    rec = Recorder(sequence(error(404, "gone", "some_future_reason")))
    async with client(rec) as gw:
        with pytest.raises(NotFoundError, match="gone"):
            await gw.get_tunnel()


async def test_unexpected_status_is_a_plain_gateway_error() -> None:
    rec = Recorder(sequence(error(429, "slow down")))
    async with client(rec) as gw:
        with pytest.raises(GatewayError, match=r"HTTP 429\): slow down") as info:
            await gw.routes()
    assert type(info.value) is GatewayError


async def test_garbage_success_body_is_protocol_error() -> None:
    rec = Recorder(sequence(httpx.Response(200, json={"unexpected": True})))
    async with client(rec) as gw:
        with pytest.raises(ProtocolError, match="unexpected answer for the user info"):
            await gw.user_info()


def test_parse_error_body_tolerates_any_body() -> None:
    req = httpx.Request("GET", "http://x/")
    assert parse_error_body(httpx.Response(400, text="Invalid prefix format", request=req)) == (
        "Invalid prefix format",
        None,
    )
    assert parse_error_body(httpx.Response(404, request=req)) == ("Not Found", None)
    assert parse_error_body(httpx.Response(400, json={"error": 400}, request=req)) == ("Bad Request", None)
    assert parse_error_body(httpx.Response(400, json=[1, 2], request=req)) == ("Bad Request", None)
