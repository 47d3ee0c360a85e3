"""``peerlab-tui tunnel up|status|down``: the user's WireGuard overlay to the IXP route servers.

``up`` registers the key with the gateway and builds one interface per route server (the wireguard-go
daemons keep running after the command exits); ``status`` reads the interfaces and pings each route server
over its tunnel; ``down`` removes what ``up`` built and deregisters the key. State (private key 0600, what
was built) lives in ``--state-dir``/``PEERLAB_STATE_DIR``/``$XDG_STATE_HOME/peerlab``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from peerlab_tui._cli.common import emit_json, handle_errors, json_option, run_async
from peerlab_tui._cli.lease import gateway_options, make_client
from peerlab_tui.core.tunnel import (
    DownResult,
    TunnelManager,
    TunnelPeerReport,
    UpResult,
    default_state_dir,
)

T = TypeVar("T")

state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where the key and tunnel state live [env PEERLAB_STATE_DIR; default $XDG_STATE_HOME/peerlab].",
)


def _state_dir(value: Path | None) -> Path:
    return value if value is not None else default_state_dir()


def _run_with_gateway(gateway: str | None, token: str | None, state_dir: Path, netns: str | None,
                      backend: str | None, call: Callable[[TunnelManager], Awaitable[T]]) -> T:
    client = make_client(gateway, token)

    async def go() -> T:
        async with client:
            return await call(TunnelManager(client, state_dir, netns, backend=backend))

    return run_async(go())


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def status_table(reports: list[TunnelPeerReport]) -> str:
    """The human form of ``tunnel status``."""
    if not reports:
        return "no tunnel is up (run: peerlab-tui tunnel up)"
    rows = [("RS", "INTERFACE", "ENDPOINT", "HANDSHAKE", "RX", "TX", "RTT")]
    for r in reports:
        if not r.up:
            hs = "interface missing"
        elif r.handshake_age_s is None:
            hs = "never"
        else:
            hs = f"{r.handshake_age_s:.0f} s ago"
        rtt = f"{r.rtt_ms:.2f} ms" if r.rtt_ms is not None else "no reply"
        rows.append((r.rs, r.interface, r.endpoint or "-", hs, _bytes(r.rx_bytes), _bytes(r.tx_bytes), rtt))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@click.group()
def tunnel() -> None:
    """WireGuard overlay to the IXP route servers (one interface per route server)."""


@tunnel.command("up")
@click.option("--netns", metavar="NAME", default=None,
              help="Build the interfaces inside this network namespace.")
@click.option("--rotate-key", is_flag=True, help="Generate a new private key and register it.")
@click.option("--wait", "wait_s", type=click.FloatRange(0), default=15.0, show_default=True,
              help="Seconds to wait until every route server answers over its tunnel (0: do not wait).")
@click.option("--backend", type=click.Choice(["auto", "kernel", "wireguard-go"]), default=None,
              help="WireGuard implementation [env PEERLAB_WG_BACKEND; default: kernel if available].")
@state_dir_option
@gateway_options
@json_option
@handle_errors
def tunnel_up(netns: str | None, rotate_key: bool, wait_s: float, backend: str | None, state_dir: Path | None,
              gateway: str | None, token: str | None, as_json: bool) -> None:
    """Register your WireGuard key and bring up a tunnel to every route server (idempotent); then wait until
    each route server answers over it (its agent has your key)."""

    async def up(manager: TunnelManager) -> tuple[UpResult, dict[str, bool] | None]:
        result = await manager.up(rotate=rotate_key)
        reachable = await manager.wait_reachable(timeout=wait_s) if wait_s > 0 else None
        return result, reachable

    result, reachable = _run_with_gateway(gateway, token, _state_dir(state_dir), netns, backend, up)
    # The user now owns the tunnel: a later `bgp down` must not take it down even if `bgp up` built it.
    from peerlab_tui.core.bgp.userside import release_tunnel_ownership

    release_tunnel_ownership(_state_dir(state_dir))
    if as_json:
        emit_json({**result.to_dict(), "reachable": reachable})
        return
    if result.rotated:
        click.echo("registered a new key (rotated)", err=True)
    click.echo(f"public key {result.public_key}  ASN {result.info.asn}")
    for i in result.interfaces:
        where = f" (netns {i.netns})" if i.netns else ""
        answers = "" if reachable is None else ("  (answers)" if reachable.get(i.rs_name) else
                                                 "  (NO ANSWER yet: see 'tunnel status')")
        click.echo(f"{i.rs_name}: {i.ifname}{where} {i.local_address} -> {i.overlay_address} "
                   f"via {i.endpoint}{answers}")


@tunnel.command("status")
@click.option("--no-rtt", is_flag=True, help="Skip the pings over each tunnel.")
@state_dir_option
@json_option
@handle_errors
def tunnel_status(no_rtt: bool, state_dir: Path | None, as_json: bool) -> None:
    """Per route server: handshake age, bytes received/sent, endpoint and RTT over the tunnel."""
    manager = TunnelManager(None, _state_dir(state_dir))
    reports = run_async(manager.status(rtt=not no_rtt))
    if as_json:
        emit_json({"peers": [r.to_dict() for r in reports]})
    else:
        click.echo(status_table(reports))


@tunnel.command("down")
@click.option("--keep-registration", is_flag=True, help="Keep the key registered with the gateway.")
@state_dir_option
@gateway_options
@json_option
@handle_errors
def tunnel_down(keep_registration: bool, state_dir: Path | None, gateway: str | None, token: str | None,
                as_json: bool) -> None:
    """Remove the tunnel interfaces, stop their daemons and deregister the key (idempotent)."""
    directory = _state_dir(state_dir)
    result: DownResult
    if keep_registration:
        result = run_async(TunnelManager(None, directory).down(keep_registration=True))
    else:
        result = _run_with_gateway(gateway, token, directory, None, None, lambda m: m.down())
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"removed {', '.join(result.removed)}" if result.removed else "no tunnel interface was up")
    if result.deregistered:
        click.echo("key deregistered from the gateway")
