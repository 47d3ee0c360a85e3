"""``peerlab-tui lab ...``: the one-machine IXP (up, status, down, user add)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from lab.topology.builder import Lab, default_state_dir
from lab.topology.models import load_topology
from peerlab_tui._cli.common import emit_json, handle_errors, json_option


def _lab(topology: Path | None, prefix: str | None, state_dir: Path | None) -> Lab:
    topo = load_topology(topology, prefix=prefix)
    return Lab(topo, state_dir or default_state_dir())


def lab_options(func: Any) -> Any:
    """The options every ``lab`` verb shares."""
    func = click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
                        help="The lab's state directory (default: $PEERLAB_STATE_DIR/lab).")(func)
    func = click.option("--prefix",
                        help="Name prefix of everything the lab creates (overrides the topology).")(func)
    func = click.option("--topology", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                        help="Topology YAML (default: the packaged lab/topology/default.yaml).")(func)
    return func


@click.group()
def lab() -> None:
    """Run the IXP lab on this machine: gateway, route servers, upstream, in network namespaces (root)."""


@lab.command()
@lab_options
@json_option
@handle_errors
def up(topology: Path | None, prefix: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Build the lab, or repair it (idempotent: a running lab is left as it is)."""
    started = time.monotonic()
    result = _lab(topology, prefix, state_dir).up()
    if as_json:
        emit_json(result)
        return
    click.echo(f"lab up in {time.monotonic() - started:.1f} s")
    click.echo(f"  gateway          {result['gateway'] or '(missing)'}")
    click.echo(f"  admin token      {result['admin_token_file']}")
    for rs in result["route_servers"]:
        click.echo(f"  route server     {rs['name']}  AS{rs['asn']}  netns {rs['netns']}")
    click.echo(f"  state            {result['state_dir']}")
    for part in result["missing"]:
        click.echo(f"  MISSING          {part} (not installed)", err=True)


@lab.command()
@lab_options
@json_option
@handle_errors
def status(topology: Path | None, prefix: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Check every part of the lab; exit 1 when something is down."""
    result = _lab(topology, prefix, state_dir).status()
    if as_json:
        emit_json(result)
    else:
        for part in result["parts"]:
            mark = "ok  " if part["ok"] else "DOWN"
            click.echo(f"{mark} {part['part']}" + (f"  ({part['detail']})" if part["detail"] else ""))
        click.echo("lab is up" if result["ok"] else f"lab is not healthy: {', '.join(result['down'])}")
    if not result["ok"]:
        sys.exit(1)


@lab.command()
@lab_options
@json_option
@handle_errors
def down(topology: Path | None, prefix: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Remove everything the lab created (namespaces, links, daemons, state); nothing else."""
    result = _lab(topology, prefix, state_dir).down()
    if as_json:
        emit_json(result)
        return
    click.echo(f"stopped {len(result['killed'])} process(es); removed namespaces: "
               f"{', '.join(result['netns_removed']) or 'none'}")
    for wg in result["wireguard_stopped"]:
        click.echo(f"stopped the user's WireGuard {wg['ifname']} in {wg['netns']} "
                   f"(wireguard-go pid {wg['pid']})" + ("" if wg["stopped"] else ": it did not exit"))
    for name, pids in result["not_ours_left_running"].items():
        click.echo(f"left running (not started by the lab) in {name}: pids {', '.join(map(str, pids))}",
                   err=True)


@lab.group()
def user() -> None:
    """Users of the lab's gateway."""


@user.command("add")
@click.argument("name")
@click.option("--netns", "with_netns", is_flag=True, help="Also give the user a namespace on the underlay.")
@lab_options
@json_option
@handle_errors
def user_add(name: str, with_netns: bool, topology: Path | None, prefix: str | None, state_dir: Path | None,
             as_json: bool) -> None:
    """Create a gateway user (token saved 0600 in the state dir), optionally with a namespace."""
    result = _lab(topology, prefix, state_dir).add_user(name, with_netns=with_netns)
    if as_json:
        emit_json(result)
        return
    click.echo(f"user {result['name']} created; token saved to {result['token_file']}")
    click.echo(f"  token    {result['token']}")
    click.echo(f"  netns    {result['netns'] or '(host)'}   underlay {result['underlay_address']}")
    click.echo(f"  gateway  {result['gateway']}")
