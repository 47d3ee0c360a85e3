"""``peerlab-tui rs-agent``: run the policy agent beside one route server's BIRD."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import click

from lab.bird import BirdControl
from lab.rsagent.agent import Agent, PeerSync, ServiceClientSource, StepResult, describe
from lab.rsagent.settings import load_settings
from peerlab_tui._cli.common import emit_json, handle_errors, json_option
from peerlab_tui.core.errors import ConfigError, ExternalProgramError, InputError


async def _run(agent: Agent, client: object, once: bool) -> StepResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        return await agent.run(once=once, stop=stop)
    finally:
        aclose = getattr(client, "aclose", None) or getattr(client, "close", None)
        if aclose is not None:
            result = aclose()
            if asyncio.iscoroutine(result):
                await result


@click.command("rs-agent")
@click.option("--rs", "rs_name", required=True, help="Route server name (must match rs.yaml).")
@click.option("--gateway", "gateway_url", envvar="PEERLAB_GATEWAY_URL", required=True,
              help="Gateway URL (env PEERLAB_GATEWAY_URL).")
@click.option("--token", envvar="PEERLAB_SERVICE_TOKEN", required=True,
              help="Service token (scopes mappings:read, tunnels:read, routes:write; "
                   "env PEERLAB_SERVICE_TOKEN).")
@click.option("--bird-socket", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="BIRD control socket.")
@click.option("--config-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory with rs.yaml; bird.conf (and bird.conf.rejected) are written here.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between gateway polls.")
@click.option("--report-interval", default=3.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between route reports (posted only when something changed).")
@click.option("--watch-interval", default=0.2, show_default=True, type=click.FloatRange(min=0.02),
              help="Seconds between two cheap checks of BIRD's session counters (routes re-read and posted "
                   "only when they moved).")
@click.option("--wg-reconcile-interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between two checks of the WireGuard device's actual peers.")
@click.option("--once", is_flag=True, help="Poll, apply and report once, then exit.")
@click.option("--bird-binary", default="bird", show_default=True, help="BIRD binary used for validation.")
@click.option("--netns", default=None,
              help="Network namespace of the WireGuard interface named in rs.yaml (wireguard_interface).")
@json_option
@handle_errors
def rs_agent(rs_name: str, gateway_url: str, token: str, bird_socket: Path, config_dir: Path,
             interval: float, report_interval: float, watch_interval: float, wg_reconcile_interval: float,
             once: bool, bird_binary: str, netns: str | None,
             as_json: bool) -> None:
    """Keep one route server's BIRD policy equal to the gateway's leases and report route verdicts."""
    settings = load_settings(config_dir)
    if settings.name != rs_name:
        raise ConfigError(f"--rs {rs_name!r} does not match name {settings.name!r} in {config_dir}/rs.yaml")
    if not os.access(config_dir, os.W_OK):
        raise InputError(f"{config_dir} is not writable")
    from peerlab_tui.core.gateway import ServiceClient

    peer_sync: PeerSync | None = None
    if settings.wireguard_interface:
        from lab.rsagent.wireguard import WireGuardPeerSync

        peer_sync = WireGuardPeerSync(settings.wireguard_interface, netns)
    client = ServiceClient(gateway_url, token)
    agent = Agent(settings, ServiceClientSource(client), BirdControl(bird_socket), config_dir,
                  peer_sync=peer_sync, interval=interval, report_interval=report_interval,
                  watch_interval=watch_interval, wg_reconcile_interval=wg_reconcile_interval,
                  bird_binary=bird_binary)
    result = asyncio.run(_run(agent, client, once))
    if once:
        summary = {"rs": settings.name, "config": str(agent.config_path), **describe(agent.applied_plan),
                   "applied": result.applied, "config_written": result.config_written,
                   "rejected": result.rejected, "reported": result.reported, "routes": result.routes,
                   "error": result.error}
        if as_json:
            emit_json(summary)
        else:
            click.echo(f"{settings.name}: {summary['sessions']} sessions, applied={result.applied}, "
                       f"routes reported={result.routes}")
        if result.rejected:
            raise ExternalProgramError(result.rejected)
