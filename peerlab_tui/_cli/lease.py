"""``peerlab-tui asn`` and ``peerlab-tui lease ...``: the user's ASN and prefix leases from the gateway.

The connection comes from ``--gateway``/``--token``, else ``PEERLAB_GATEWAY_URL``/``PEERLAB_TOKEN``. Tests
(and other front ends) swap the HTTP layer by passing a :class:`ClientFactory` as the click context object.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import httpx

from peerlab_tui._cli.common import emit_json, handle_errors, json_option, run_async
from peerlab_tui.core.errors import InputError
from peerlab_tui.core.gateway import GatewayClient, check_hours
from peerlab_tui.core.models import LeaseRecord, PrefixResponse

ENV_GATEWAY_URL = "PEERLAB_GATEWAY_URL"
ENV_TOKEN = "PEERLAB_TOKEN"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class ClientFactory:
    """Builds the :class:`GatewayClient` of a command; pass one as ``obj`` to inject a transport."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def __call__(self, base_url: str, token: str) -> GatewayClient:
        """A new client for ``base_url`` authenticated with ``token``."""
        return GatewayClient(
            base_url,
            token,
            transport=self.transport,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
        )


def resolve_connection(gateway: str | None, token: str | None) -> tuple[str, str]:
    """The gateway URL and token from the flags, else the environment; InputError names what is missing."""
    url = gateway or os.environ.get(ENV_GATEWAY_URL, "").strip()
    secret = token or os.environ.get(ENV_TOKEN, "").strip()
    if not url:
        raise InputError(f"no gateway URL: pass --gateway URL or set {ENV_GATEWAY_URL}")
    if not secret:
        raise InputError(f"no gateway token: set {ENV_TOKEN} (or pass --token)")
    return url, secret


def gateway_options(func: F) -> F:
    """Add ``--gateway`` and ``--token`` to a command (both fall back on the environment)."""
    func = click.option(
        "--token",
        metavar="TOKEN",
        default=None,
        help=f"Your gateway token [env {ENV_TOKEN}; prefer the variable: flags show up in ps].",
    )(func)
    func = click.option(
        "--gateway", metavar="URL", default=None, help=f"Gateway base URL [env {ENV_GATEWAY_URL}]."
    )(func)
    return func


def make_client(gateway: str | None, token: str | None) -> GatewayClient:
    """A client for the current command, built by the context's :class:`ClientFactory` if there is one."""
    url, secret = resolve_connection(gateway, token)
    ctx = click.get_current_context(silent=True)
    factory = ctx.find_object(ClientFactory) if ctx is not None else None
    return (factory or ClientFactory())(url, secret)


def _with_client(gateway: str | None, token: str | None, call: Callable[[GatewayClient], Awaitable[T]]) -> T:
    client = make_client(gateway, token)

    async def go() -> T:
        async with client:
            return await call(client)

    return run_async(go())


# --- formatting ---------------------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """A timestamp in UTC to the minute, e.g. ``2026-11-21 13:30 UTC``."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_remaining(end: datetime, now: datetime | None = None) -> str:
    """Time left until ``end``: ``1d 02h``, ``2h 05m``, ``14m``, ``<1m`` or ``expired``.

    Minutes are rounded up, so a lease granted for 2 hours shows ``2h 00m`` rather than ``1h 59m``.
    """
    seconds = (end - (now or datetime.now(UTC))).total_seconds()
    if seconds <= 0:
        return "expired"
    if seconds < 60:
        return "<1m"
    minutes_left = math.ceil(seconds / 60)
    days, rest = divmod(minutes_left, 1440)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m"


def lease_table(leases: list[LeaseRecord], now: datetime | None = None) -> str:
    """The human table of ``lease list``."""
    header = ("PREFIX", "STATE", "START", "END", "REMAINING")
    rows = [
        (
            lease.prefix,
            lease.state,
            format_time(lease.start_time),
            format_time(lease.released_at or lease.end_time),
            format_remaining(lease.end_time, now) if lease.state == "active" else "-",
        )
        for lease in leases
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _lease_line(verb: str, lease: PrefixResponse) -> str:
    left = format_remaining(lease.end_time)
    return f"{verb} {lease.prefix} until {format_time(lease.end_time)} ({left} left)"


# --- commands -----------------------------------------------------------------------------------------


@click.command("asn")
@gateway_options
@json_option
@handle_errors
def asn(gateway: str | None, token: str | None, as_json: bool) -> None:
    """Show your ASN, requesting one from the gateway on first use (it stays yours)."""
    result = _with_client(gateway, token, lambda gw: gw.request_asn())
    if as_json:
        emit_json(result)
    else:
        click.echo(f"ASN {result.asn} ({result.message})")


@click.group("lease")
def lease() -> None:
    """Request, list, renew and release IPv6 prefix leases."""


@lease.command("request")
@click.option("--hours", type=int, required=True, help="Lease duration in whole hours.")
@gateway_options
@json_option
@handle_errors
def lease_request(hours: int, gateway: str | None, token: str | None, as_json: bool) -> None:
    """Lease a prefix for --hours hours (requesting your ASN first if you have none)."""
    check_hours(hours)  # before the ASN request: bad input must change nothing

    async def call(gw: GatewayClient) -> tuple[int, PrefixResponse]:
        def announce() -> None:
            click.echo("you have no ASN yet: requesting one from the gateway", err=True)

        number = await gw.ensure_asn(on_request=announce)
        return number, await gw.request_prefix(hours)

    number, granted = _with_client(gateway, token, call)
    if as_json:
        emit_json({"asn": number, "lease": granted})
    else:
        click.echo(f"AS{number}: " + _lease_line("leased", granted))


@lease.command("list")
@click.option("--history", is_flag=True, help="Also show expired and released leases.")
@gateway_options
@json_option
@handle_errors
def lease_list(history: bool, gateway: str | None, token: str | None, as_json: bool) -> None:
    """List your leases with the time each has left."""
    result = _with_client(gateway, token, lambda gw: gw.leases(history=history))
    if as_json:
        emit_json(result)
    elif not result.leases:
        click.echo("no leases" if history else "no active leases")
    else:
        click.echo(lease_table(result.leases))


@lease.command("release")
@click.argument("prefix")
@gateway_options
@json_option
@handle_errors
def lease_release(prefix: str, gateway: str | None, token: str | None, as_json: bool) -> None:
    """End the lease of PREFIX (an IPv6 CIDR such as 2001:db8:1000::/48) now."""
    canonical = _with_client(gateway, token, lambda gw: gw.release_prefix(prefix))
    if as_json:
        emit_json({"released": canonical})
    else:
        click.echo(f"released {canonical}")


@lease.command("renew")
@click.argument("prefix")
@click.option("--hours", type=int, required=True, help="Renewal duration in whole hours.")
@gateway_options
@json_option
@handle_errors
def lease_renew(prefix: str, hours: int, gateway: str | None, token: str | None, as_json: bool) -> None:
    """Renew the lease of PREFIX for --hours hours."""
    renewed = _with_client(gateway, token, lambda gw: gw.renew_prefix(prefix, hours))
    if as_json:
        emit_json(renewed)
    else:
        click.echo(_lease_line("renewed", renewed))


__all__ = [
    "ENV_GATEWAY_URL",
    "ENV_TOKEN",
    "ClientFactory",
    "asn",
    "format_remaining",
    "gateway_options",
    "lease",
    "make_client",
    "resolve_connection",
]
