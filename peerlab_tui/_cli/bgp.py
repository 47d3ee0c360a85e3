"""``peerlab-tui bgp up|status|down``, ``announce``, ``withdraw``, ``received``, ``routes``.

``bgp up`` asks the gateway for the ASN, the leases and the route servers (bringing the WireGuard tunnel up
first when it is not), then starts the BGP daemon in the background (ExaBGP inside ``--netns`` when given).
The other verbs talk to that daemon over ``STATE_DIR/bgp/control.sock``; ``routes`` asks the gateway's
looking glass how each route server judged each of your announcements.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from peerlab_tui._cli.common import emit_json, handle_errors, json_option, run_async
from peerlab_tui._cli.lease import gateway_options, make_client, resolve_connection
from peerlab_tui.core.bgp import Announcement, SafetySettings, SpeakerConfig
from peerlab_tui.core.bgp.daemon import (
    LOG_FILE,
    ControlClient,
    DaemonSpec,
    bgp_dir,
    control_path,
    serve,
    write_spec,
)
from peerlab_tui.core.bgp.errors import ExaBgpError, SpeakerNotRunningError
from peerlab_tui.core.errors import InputError, NotFoundError
from peerlab_tui.core.gateway import GatewayClient
from peerlab_tui.core.models import RouteVerdict, TunnelInfo
from peerlab_tui.core.tunnel import TunnelManager, default_state_dir

STARTUP_TIMEOUT = 60.0
log = logging.getLogger(__name__)

state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="User state directory [env PEERLAB_STATE_DIR; default $XDG_STATE_HOME/peerlab].",
)
rs_option = click.option("--rs", "rs", default=None, metavar="RS1,RS2",
                         help="Only these route servers (comma-separated names); default all.")


def _state(value: Path | None) -> Path:
    return value if value is not None else default_state_dir()


def _rs_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise InputError("--rs needs at least one route server name")
    return names


def _request(state_dir: Path | None, op: str, **params: Any) -> Any:
    client = ControlClient.for_state_dir(_state(state_dir))
    return run_async(client.request(op, **params))


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def format_status(status: dict[str, Any]) -> str:
    """The human form of ``bgp status``."""
    lines = [f"ExaBGP pid {status.get('pid') or '-'} (daemon {status.get('daemon_pid', '-')}), "
             f"AS{status['asn']}, router-id {status['router_id']}, restarts {status['restarts']}"
             + (f" (last: {status['last_restart_reason']})" if status.get("last_restart_reason") else "")]
    rows: list[tuple[str, ...]] = [("RS", "NEIGHBOR", "AS", "STATE", "UPTIME", "RECEIVED", "LAST ERROR")]
    for s in status["sessions"]:
        uptime = f"{s['uptime_seconds']:.0f} s" if s.get("uptime_seconds") is not None else "-"
        rows.append((s["rs"], s["neighbor"], str(s["peer_asn"]), s["state"], uptime,
                     str(s["received_routes"]), s.get("last_notification") or s.get("last_error") or "-"))
    lines.append(_table(rows))
    if status["announced"]:
        rows = [("PREFIX", "RS", "AS PATH")]
        rows += [(a["prefix"], a["rs"], " ".join(map(str, a["as_path"]))) for a in status["announced"]]
        lines += ["", _table(rows)]
    else:
        lines += ["", "nothing announced"]
    return "\n".join(lines)


# --- bgp group ---------------------------------------------------------------------------------------------


@click.group()
def bgp() -> None:
    """The BGP speaker (ExaBGP) peering with the IXP route servers."""


async def ensure_tunnel(client: GatewayClient, state_dir: Path, netns: str | None) -> TunnelInfo:
    """The route servers to peer with; brings the WireGuard tunnel up first when it is not up here."""
    manager = TunnelManager(client, state_dir, netns)
    if manager.load_state():
        try:
            return await client.get_tunnel()
        except NotFoundError:
            pass  # registration gone on the gateway: bring it up again
    info = (await manager.up()).info
    reachable = await manager.wait_reachable()
    if not all(reachable.values()):
        log.warning("route servers not answering over the tunnel yet: %s (BGP will keep trying)",
                    ", ".join(rs for rs, ok in reachable.items() if not ok))
    return info


async def build_spec(client: GatewayClient, state_dir: Path, *, netns: str | None, tunnel: bool,
                     gateway_url: str, hold_time: int, safety: dict[str, float | int | None]) -> DaemonSpec:
    """Everything the daemon needs, from the gateway (ASN, active leases, route servers)."""
    asn = await client.ensure_asn()
    info = await client.user_info()
    tunnel_info = await ensure_tunnel(client, state_dir, netns) if tunnel else await client.get_tunnel()
    if not tunnel_info.route_servers:
        raise InputError("the gateway lists no route servers to peer with")
    settings = SafetySettings.for_gateway(gateway_url, **safety)
    try:
        config = SpeakerConfig.from_tunnel(tunnel_info, asn=asn, netns=netns, hold_time=hold_time)
    except ValueError as exc:
        raise InputError(f"cannot configure the speaker from the gateway's tunnel info: {exc}") from exc
    return DaemonSpec(speaker=config, leases=list(info.active_leases), safety=dataclasses.asdict(settings),
                      gateway_url=gateway_url)


def start_daemon(state_dir: Path, env: dict[str, str], timeout: float = STARTUP_TIMEOUT) -> dict[str, Any]:
    """Start ``peerlab-tui bgp serve`` in the background and wait until it answers; return its status."""
    directory = bgp_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = directory / LOG_FILE
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "peerlab_tui", "bgp", "serve", "--state-dir",
                                 str(state_dir)], stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                env={**os.environ, **env}, start_new_session=True)
    finally:
        os.close(fd)
    client = ControlClient.for_state_dir(state_dir)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-6:])
            raise ExaBgpError(f"the BGP daemon exited with code {proc.returncode}; log {log_path}: {tail}")
        try:
            result: dict[str, Any] = run_async(client.request("status", timeout=5))
            return result
        except SpeakerNotRunningError:
            if time.monotonic() > deadline:
                proc.terminate()
                raise
        time.sleep(0.2)


@bgp.command("up")
@click.option("--netns", default=None, help="Run ExaBGP inside this network namespace.")
@click.option("--no-tunnel", is_flag=True, help="Do not bring the WireGuard tunnel up (peer as is).")
@click.option("--hold-time", type=click.IntRange(3, 65535), default=90, show_default=True)
@click.option("--min-change-interval", type=click.FloatRange(0), default=None,
              help="Seconds between two changes of one prefix [default: 0 on a loopback gateway, else 600].")
@click.option("--max-prefix-len", type=click.IntRange(1, 128), default=None,
              help="Longest more-specific allowed inside a lease [default: the lease only].")
@click.option("--withdraw-margin", type=click.FloatRange(0), default=None,
              help="Withdraw this many seconds before a lease ends [default 60].")
@gateway_options
@state_dir_option
@json_option
@handle_errors
def bgp_up(netns: str | None, no_tunnel: bool, hold_time: int, min_change_interval: float | None,
           max_prefix_len: int | None, withdraw_margin: float | None, gateway: str | None, token: str | None,
           state_dir: Path | None, as_json: bool) -> None:
    """Start the BGP daemon in the background (after the tunnel, when it is not up)."""
    state = _state(state_dir)
    control_path(state)  # a too long state dir fails here, before anything starts
    try:
        status = run_async(ControlClient.for_state_dir(state).request("status", timeout=5))
        click.echo("the BGP daemon is already running", err=True)
    except SpeakerNotRunningError:
        url, secret = resolve_connection(gateway, token)
        client = make_client(gateway, token)
        safety = {"min_change_interval": min_change_interval, "max_prefix_len": max_prefix_len,
                  "withdraw_margin": withdraw_margin}

        async def go() -> DaemonSpec:
            async with client:
                return await build_spec(client, state, netns=netns, tunnel=not no_tunnel, gateway_url=url,
                                        hold_time=hold_time, safety=safety)

        write_spec(state, run_async(go()))
        status = start_daemon(state, {"PEERLAB_GATEWAY_URL": url, "PEERLAB_TOKEN": secret})
    if as_json:
        emit_json(status)
    else:
        click.echo(format_status(status))


@bgp.command("serve", hidden=True)
@state_dir_option
def bgp_serve(state_dir: Path | None) -> None:
    """Run the BGP daemon in the foreground (what ``bgp up`` starts)."""
    state = _state(state_dir)
    url = os.environ.get("PEERLAB_GATEWAY_URL", "").strip()
    token = os.environ.get("PEERLAB_TOKEN", "").strip()

    async def go() -> None:
        if url and token:
            async with GatewayClient(url, token) as client:
                await serve(state, lease_source=client.user_info)
        else:
            await serve(state)

    asyncio.run(go())


@bgp.command("status")
@state_dir_option
@json_option
@handle_errors
def bgp_status(state_dir: Path | None, as_json: bool) -> None:
    """Sessions per route server, restarts and what is announced."""
    status = _request(state_dir, "status")
    if as_json:
        emit_json(status)
    else:
        click.echo(format_status(status))


@bgp.command("down")
@state_dir_option
@json_option
@handle_errors
def bgp_down(state_dir: Path | None, as_json: bool) -> None:
    """Stop the BGP daemon (its sessions close; the route servers drop your routes)."""
    state = _state(state_dir)
    result = _request(state, "down")
    deadline = time.monotonic() + 30
    while control_path(state).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if as_json:
        emit_json(result)
    else:
        click.echo("BGP daemon stopped")


# --- verbs -------------------------------------------------------------------------------------------------


@click.command()
@click.argument("prefix")
@rs_option
@click.option("--prepend", type=int, default=0, show_default=True, help="Extra copies of your ASN (0-4).")
@click.option("--community", "communities", multiple=True, metavar="A:B", help="A community (repeatable).")
@click.option("--large-community", "large_communities", multiple=True, metavar="A:B:C",
              help="A large community (repeatable).")
@click.option("--med", type=int, default=None, help="Multi-exit discriminator.")
@click.option("--next-hop", default=None, help="Next hop [default: your address on each route server link].")
@click.option("--dry-run", is_flag=True, help="Check and show the ExaBGP command(s) without sending.")
@state_dir_option
@json_option
@handle_errors
def announce(prefix: str, rs: str | None, prepend: int, communities: tuple[str, ...],
             large_communities: tuple[str, ...], med: int | None, next_hop: str | None, dry_run: bool,
             state_dir: Path | None, as_json: bool) -> None:
    """Announce PREFIX (re-announcing replaces its attributes on those route servers)."""
    ann = Announcement(prefix=prefix, next_hop=next_hop, prepend=prepend, communities=list(communities),
                       large_communities=list(large_communities), med=med, route_servers=_rs_list(rs))
    op = "preview" if dry_run else "announce"
    preview = _request(state_dir, op, announcement=ann.model_dump(mode="json"))
    if as_json:
        emit_json({"dry_run": dry_run, **preview})
        return
    verb = "would send" if dry_run else "sent"
    click.echo(f"{preview['prefix']}: AS path {' '.join(map(str, preview['as_path']))}; {verb}:")
    for command in preview["commands"]:
        click.echo(f"  {command}")


@click.command()
@click.argument("prefix")
@rs_option
@state_dir_option
@json_option
@handle_errors
def withdraw(prefix: str, rs: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Withdraw PREFIX (from every route server it is announced to, or from --rs)."""
    result = _request(state_dir, "withdraw", prefix=prefix, rs=_rs_list(rs))
    if as_json:
        emit_json(result)
        return
    for command in result["commands"]:
        click.echo(f"sent: {command}")


@click.command()
@click.option("--rs", "rs", default=None, metavar="NAME", help="Only this route server.")
@state_dir_option
@json_option
@handle_errors
def received(rs: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Routes received from the route servers (Adj-RIB-In)."""
    routes = _request(state_dir, "received", rs=rs)
    if as_json:
        emit_json({"routes": routes})
        return
    if not routes:
        click.echo("no routes received")
        return
    rows: list[tuple[str, ...]] = [("RS", "PREFIX", "NEXT HOP", "AS PATH", "MED", "COMMUNITIES")]
    for r in routes:
        comms = " ".join(r["communities"] + r["large_communities"]) or "-"
        rows.append((r["rs"], r["prefix"], r["next_hop"] or "-", " ".join(map(str, r["as_path"])) or "-",
                     "-" if r["med"] is None else str(r["med"]), comms))
    click.echo(_table(rows))


def looking_glass(verdicts: list[RouteVerdict],
                  announced: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One row per (announcement, route server): the RS's verdict, or ``not-seen`` when it has no report;
    then any verdict about a route the daemon does not announce (e.g. from an earlier session)."""
    by_key = {(v.prefix, v.rs): v for v in verdicts}
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for a in announced or []:
        key = (a["prefix"], a["rs"])
        seen.add(key)
        verdict = by_key.get(key)
        if verdict is None:
            rows.append({"prefix": a["prefix"], "rs": a["rs"], "state": "not-seen", "reason": None,
                         "rule": None, "as_path": a["as_path"], "sent_as_path": a["as_path"],
                         "communities": [], "large_communities": [], "med": None})
        else:
            rows.append({**verdict.model_dump(mode="json"), "sent_as_path": a["as_path"]})
    rows += [{**v.model_dump(mode="json"), "sent_as_path": None} for k, v in sorted(by_key.items())
             if k not in seen]
    return rows


@click.command()
@gateway_options
@state_dir_option
@json_option
@handle_errors
def routes(gateway: str | None, token: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Looking glass: how each route server judged each of your announcements (accepted/filtered, why)."""
    client = make_client(gateway, token)

    async def fetch() -> list[RouteVerdict]:
        async with client:
            return list((await client.routes()).routes)

    verdicts = run_async(fetch())
    try:
        announced: list[dict[str, Any]] | None = _request(state_dir, "status")["announced"]
    except SpeakerNotRunningError:
        announced = None  # the daemon is down: the gateway's view alone
    rows = looking_glass(verdicts, announced)
    if as_json:
        emit_json({"routes": rows})
        return
    if not rows:
        click.echo("no routes: nothing announced and nothing reported by the route servers")
        return
    table: list[tuple[str, ...]] = [
        ("PREFIX", "RS", "STATE", "REASON", "RULE", "AS PATH", "MED", "COMMUNITIES")]
    for r in rows:
        comms = " ".join(r["communities"] + r["large_communities"]) or "-"
        table.append((r["prefix"], r["rs"], r["state"], r["reason"] or "-", r.get("rule") or "-",
                      " ".join(map(str, r["as_path"])), "-" if r["med"] is None else str(r["med"]), comms))
    click.echo(_table(table))
