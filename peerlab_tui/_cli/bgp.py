"""``peerlab-tui bgp up|status|down``, ``announce``, ``withdraw``, ``received``, ``routes``.

``bgp up`` asks the gateway for the ASN and the leases, then starts the BGP daemon in the background: the
user side (:class:`~peerlab_tui.core.bgp.userside.UserSide`), which brings the WireGuard tunnel up when it is
not (and then takes it down again on ``bgp down``) and runs ExaBGP inside ``--netns`` (default: the tunnel's
namespace). The other verbs talk to that daemon over ``STATE_DIR/bgp/control.sock``; ``routes`` asks the
gateway's looking glass how each route server judged each of your announcements.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

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
    daemon_pid,
    serve,
    write_spec,
)
from peerlab_tui.core.bgp.errors import ExaBgpError, SpeakerNotRunningError
from peerlab_tui.core.bgp.userside import check_tunnel_netns, tunnel_netns
from peerlab_tui.core.errors import InputError
from peerlab_tui.core.gateway import GatewayClient
from peerlab_tui.core.models import RouteVerdict
from peerlab_tui.core.tunnel import default_state_dir

STARTUP_TIMEOUT = 90.0  # the daemon may first bring the tunnel up and wait for the route servers to answer
STOP_TIMEOUT = 60.0
DEFAULT_HOLD_TIME = 90
log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

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
    tunnel = status.get("tunnel") or {}
    if tunnel.get("interfaces"):
        owner = ("brought up by 'bgp up' (removed by 'bgp down')" if tunnel.get("created_by_bgp")
                 else "yours ('bgp down' leaves it up)")
        where = status.get("netns") or "the host"
        lines.append(f"tunnel {', '.join(tunnel['interfaces'])} in {where}: {owner}")
    rows: list[tuple[str, ...]] = [("RS", "NEIGHBOR", "AS", "STATE", "UPTIME", "RECEIVED", "LAST ERROR")]
    for s in status["sessions"]:
        uptime = f"{s['uptime_seconds']:.0f} s" if s.get("uptime_seconds") is not None else "-"
        rows.append((s["rs"], s["neighbor"], str(s["peer_asn"]), s["state"], uptime,
                     str(s["received_routes"]), s.get("last_notification") or s.get("last_error") or "-"))
    lines.append(_table(rows))
    if status["announced"]:
        rows = [("PREFIX", "RS", "AS PATH", "WITHDRAW AT (UTC)", "WARNED")]
        rows += [(a["prefix"], a["rs"], " ".join(map(str, a["as_path"])), _when(a.get("withdraw_at")),
                  "yes" if a.get("warned") else "no") for a in status["announced"]]
        lines += ["", _table(rows)]
    else:
        lines += ["", "nothing announced"]
    return "\n".join(lines)


# --- bgp group ---------------------------------------------------------------------------------------------


@click.group()
def bgp() -> None:
    """The BGP speaker (ExaBGP) peering with the IXP route servers."""


def _when(value: str | None) -> str:
    if not value:
        return "no lease: next check"
    return value.replace("T", " ").split(".")[0].split("+")[0]


async def build_spec(client: GatewayClient, state_dir: Path, *, netns: str | None, tunnel: bool,
                     gateway_url: str, hold_time: int, safety: dict[str, float | int | None]) -> DaemonSpec:
    """Everything the daemon needs from the gateway (ASN, active leases; with ``tunnel`` False also the route
    servers). With ``tunnel`` the daemon brings the tunnel up itself when none is recorded, and learns the
    route servers from it."""
    asn = await client.ensure_asn()
    info = await client.user_info()
    settings = SafetySettings.for_gateway(gateway_url, **safety)
    config = None
    if not tunnel:
        tunnel_info = await client.get_tunnel()
        if not tunnel_info.route_servers:
            raise InputError("the gateway lists no route servers to peer with")
        try:
            config = SpeakerConfig.from_tunnel(tunnel_info, asn=asn, netns=netns, hold_time=hold_time)
        except ValueError as exc:
            raise InputError(f"cannot configure the speaker from the gateway's tunnel info: {exc}") from exc
    return DaemonSpec(speaker=config, asn=asn, netns=netns, hold_time=hold_time, tunnel=tunnel,
                      leases=list(info.active_leases), safety=dataclasses.asdict(settings),
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


def _requested(netns: str | None, no_tunnel: bool, hold_time: int | None,
               safety: dict[str, float | int | None]) -> dict[str, Any]:
    """The options given on the command line (None: not given, the running daemon's are fine)."""
    wanted: dict[str, Any] = {"netns": netns, "hold_time": hold_time, **safety}
    if no_tunnel:
        wanted["tunnel"] = False
    return {k: v for k, v in wanted.items() if v is not None}


def _differences(running: dict[str, Any], wanted: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (running.get(k), v) for k, v in wanted.items() if running.get(k) != v}


def stop_daemon(state_dir: Path, timeout: float = STOP_TIMEOUT) -> dict[str, Any]:
    """Ask the daemon to stop and wait until its process is gone (killed by PID if it does not go)."""
    pid = daemon_pid(state_dir)
    client = ControlClient.for_state_dir(state_dir)
    result: dict[str, Any] = run_async(client.request("down", timeout=timeout))
    deadline = time.monotonic() + timeout
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid is not None and _alive(pid):
        log.warning("the BGP daemon (pid %d) did not exit; killing it", pid)
        os.kill(pid, signal.SIGKILL)
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@bgp.command("up")
@click.option("--netns", default=None,
              help="Run ExaBGP inside this network namespace [default: the tunnel's namespace].")
@click.option("--no-tunnel", is_flag=True, help="Do not bring the WireGuard tunnel up (peer as is).")
@click.option("--hold-time", type=click.IntRange(3, 65535), default=None,
              help=f"BGP hold time in seconds [default {DEFAULT_HOLD_TIME}].")
@click.option("--min-change-interval", type=click.FloatRange(0), default=None,
              help="Seconds between two changes of one prefix [default: 0 on a loopback gateway, else 600].")
@click.option("--max-prefix-len", type=click.IntRange(1, 128), default=None,
              help="Longest more-specific allowed inside a lease [default: the lease only].")
@click.option("--withdraw-margin", type=click.FloatRange(0), default=None,
              help="Withdraw this many seconds before a lease ends [default 60].")
@click.option("--restart", is_flag=True,
              help="If a daemon runs with other options, stop it and start one with these.")
@gateway_options
@state_dir_option
@json_option
@handle_errors
def bgp_up(netns: str | None, no_tunnel: bool, hold_time: int | None, min_change_interval: float | None,
           max_prefix_len: int | None, withdraw_margin: float | None, restart: bool, gateway: str | None,
           token: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Start the BGP daemon in the background; it brings the tunnel up when it is not (and takes a tunnel it
    brought up down again on ``bgp down``)."""
    state = _state(state_dir)
    control_path(state)  # a too long state dir fails here, before anything starts
    recorded, tunnel_ns = tunnel_netns(state)
    if netns is None and recorded:
        netns = tunnel_ns  # peer from where the tunnel is
    check_tunnel_netns(state, netns)
    safety = {"min_change_interval": min_change_interval, "max_prefix_len": max_prefix_len,
              "withdraw_margin": withdraw_margin}
    wanted = _requested(netns, no_tunnel, hold_time, safety)
    try:
        status: dict[str, Any] | None = run_async(
            ControlClient.for_state_dir(state).request("status", timeout=5))
    except SpeakerNotRunningError:
        status = None
    if status is not None:
        diff = _differences(status.get("options", {}), wanted)
        if not diff:
            click.echo(f"the BGP daemon is already running (pid {status.get('daemon_pid')})", err=True)
        elif not restart:
            listed = "; ".join(f"{k}: running {old!r}, asked {new!r}"
                               for k, (old, new) in sorted(diff.items()))
            raise InputError(f"a BGP daemon (pid {status.get('daemon_pid')}) already runs with other options "
                             f"({listed}); run 'peerlab-tui bgp down' first, or add --restart")
        else:
            click.echo(f"restarting the BGP daemon (pid {status.get('daemon_pid')}) with the new options",
                       err=True)
            stop_daemon(state)
            status = None
    if status is None:
        url, secret = resolve_connection(gateway, token)
        client = make_client(gateway, token)

        async def go() -> DaemonSpec:
            async with client:
                return await build_spec(client, state, netns=netns, tunnel=not no_tunnel, gateway_url=url,
                                        hold_time=hold_time or DEFAULT_HOLD_TIME, safety=safety)

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
                await serve(state, gateway=client)
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
    """Stop the BGP daemon (its sessions close; the route servers drop your routes) and the tunnel when
    ``bgp up`` brought it up (a tunnel you brought up with ``tunnel up`` stays)."""
    result = stop_daemon(_state(state_dir))
    if as_json:
        emit_json(result)
        return
    click.echo("BGP daemon stopped")
    if result.get("tunnel_removed"):
        click.echo(f"tunnel down (bgp up had brought it up): removed {', '.join(result['tunnel_removed'])}")
    elif result.get("tunnel_kept"):
        click.echo("the tunnel stays up (you brought it up: 'peerlab-tui tunnel down' removes it)")


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
