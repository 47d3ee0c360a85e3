"""Retry policy and transport failures: idempotent calls retried, leases never requested twice."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from peerlab_tui.core.errors import ExitCode
from peerlab_tui.core.gateway import (
    AdminClient,
    GatewayClient,
    NotFoundError,
    PoolExhaustedError,
    ServerError,
    TransportError,
)
from tests.client._fakes import Recorder, error, sequence

URL = "http://gateway.test"
PREFIX = "2001:db8:1000::/48"
INFO = {"user_hash": "abc", "asn": 65001, "active_leases": []}
LEASE = {
    "prefix": PREFIX,
    "start_time": "2026-01-01T00:00:00Z",
    "end_time": "2026-01-01T02:00:00Z",
    "message": "ok",
}


def connect_error(request: httpx.Request | None = None) -> httpx.ConnectError:
    return httpx.ConnectError("Connection refused")


def client(rec: Recorder, retries: int = 2) -> GatewayClient:
    return GatewayClient(URL, "tok", transport=rec.transport, retries=retries, backoff=0)


async def test_get_is_retried_after_connect_errors_and_succeeds() -> None:
    rec = Recorder(sequence(connect_error(), connect_error(), httpx.Response(200, json=INFO)))
    async with client(rec) as gw:
        info = await gw.user_info()
    assert info.asn == 65001
    assert rec.calls == 3


async def test_get_gives_up_after_the_retries_with_transport_error() -> None:
    rec = Recorder(sequence(connect_error()))
    async with client(rec, retries=2) as gw:
        with pytest.raises(TransportError, match=r"cannot reach the gateway at http://gateway.test") as info:
            await gw.user_info()
    assert info.value.exit_code == ExitCode.UNREACHABLE
    assert rec.calls == 3


async def test_retries_zero_sends_once() -> None:
    rec = Recorder(sequence(connect_error()))
    async with client(rec, retries=0) as gw:
        with pytest.raises(TransportError):
            await gw.user_info()
    assert rec.calls == 1


@pytest.mark.parametrize(
    "step",
    [connect_error(), httpx.ReadTimeout("timed out"), error(502, "bad gateway"), error(504, "timeout")],
)
async def test_prefix_request_is_never_retried(step: httpx.Response | Exception) -> None:
    rec = Recorder(sequence(step, httpx.Response(200, json=LEASE)))
    async with client(rec, retries=5) as gw:
        with pytest.raises((TransportError, ServerError)):
            await gw.request_prefix(2)
    assert rec.calls == 1


@pytest.mark.parametrize("step", [connect_error(), error(503, "busy", "internal")])
async def test_renewal_is_never_retried(step: httpx.Response | Exception) -> None:
    rec = Recorder(sequence(step, httpx.Response(200, json=LEASE)))
    async with client(rec, retries=5) as gw:
        with pytest.raises((TransportError, ServerError)):
            await gw.renew_prefix(PREFIX, 1)
    assert rec.calls == 1


async def test_pool_exhausted_with_reason_is_not_retried_even_on_retried_calls() -> None:
    rec = Recorder(sequence(error(503, "no ASN left", "asn_exhausted")))
    async with client(rec, retries=5) as gw:
        with pytest.raises(PoolExhaustedError):
            await gw.request_asn()
    assert rec.calls == 1


async def test_asn_request_is_retried_as_idempotent() -> None:
    answer = httpx.Response(200, json={"asn": 65001, "message": "ASN assigned successfully"})
    rec = Recorder(sequence(error(502, "bad gateway"), httpx.ReadTimeout("slow"), answer))
    async with client(rec) as gw:
        assert (await gw.request_asn()).asn == 65001
    assert rec.calls == 3
    assert all(r.method == "POST" and r.url.path == "/api/user/asn" for r in rec.requests)


async def test_release_is_retried_on_503() -> None:
    rec = Recorder(sequence(error(503, "maintenance"), httpx.Response(204)))
    async with client(rec) as gw:
        assert await gw.release_prefix(PREFIX) == PREFIX
    assert rec.calls == 2


async def test_release_404_after_a_lost_answer_says_it_may_be_done() -> None:
    rec = Recorder(
        sequence(httpx.ReadTimeout("lost"), error(404, "Prefix lease not found or already expired"))
    )
    async with client(rec) as gw:
        with pytest.raises(
            NotFoundError, match="earlier attempt whose answer was lost may already have done it"
        ):
            await gw.release_prefix(PREFIX)
    assert rec.calls == 2


async def test_put_is_retried() -> None:
    summary = {
        "name": "alice",
        "user_hash": "h",
        "max_leases": 3,
        "active_leases": 0,
        "created_at": "2026-01-01T00:00:00Z",
    }
    rec = Recorder(sequence(error(504, "gateway timeout"), httpx.Response(200, json=summary)))
    async with AdminClient(URL, "admin", transport=rec.transport, backoff=0) as admin:
        await admin.set_max_leases("alice", 3)
    assert rec.calls == 2
    assert [r.method for r in rec.requests] == ["PUT", "PUT"]


async def test_post_tunnel_registration_is_not_retried() -> None:
    rec = Recorder(sequence(connect_error()))
    async with client(rec, retries=4) as gw:
        with pytest.raises(TransportError):
            await gw.register_tunnel("A" * 43 + "=")
    assert rec.calls == 1


# --- real sockets: a silent server and a closed port ---------------------------------------------------


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server on a random loopback port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_that_never_answers_times_out_as_transport_error(silent_server: str) -> None:
    async with GatewayClient(silent_server, "tok", timeout=0.2, retries=1, backoff=0) as gw:
        with pytest.raises(TransportError, match=r"did not answer within 0.2s \(the user info\)"):
            await gw.user_info()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_closed_port_is_transport_error() -> None:
    async with GatewayClient(f"http://127.0.0.1:{_closed_port()}", "tok", retries=0) as gw:
        with pytest.raises(TransportError, match="cannot reach the gateway"):
            await gw.leases()
