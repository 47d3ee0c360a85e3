"""The ``peerlab-tui`` command: the composition root.

Command groups live in their own modules and are imported only when invoked, so ``peerlab-tui sflow ...``
does not pay for FastAPI and ``peerlab-tui lease ...`` does not pay for numpy. This is the only module of
``peerlab_tui`` allowed to import ``lab`` (the platform side), and it does so lazily.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os

import click

from peerlab_tui import __version__

# name -> "module:attribute" of a click command or group. Each area owns its module.
LAZY_COMMANDS: dict[str, str] = {
    # user side: gateway client (lease platform)
    "asn": "peerlab_tui._cli.lease:asn",
    "lease": "peerlab_tui._cli.lease:lease",
    # user side: overlay, BGP speaker, looking glass
    "tunnel": "peerlab_tui._cli.tunnel:tunnel",
    "bgp": "peerlab_tui._cli.bgp:bgp",
    "announce": "peerlab_tui._cli.bgp:announce",
    "withdraw": "peerlab_tui._cli.bgp:withdraw",
    "received": "peerlab_tui._cli.bgp:received",
    "routes": "peerlab_tui._cli.bgp:routes",
    # traffic
    "sflow": "peerlab_tui._cli.sflow:sflow",
    # platform side (lab)
    "gateway": "lab.gateway.cli:gateway",
    "lab": "lab.topology.cli:lab",
    "rs-agent": "lab.rsagent.cli:rs_agent",
    # the embedded default, end to end
    "demo": "lab.demo:demo",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """List every registered command, lazy or not."""
        return sorted(set(super().list_commands(ctx)) | set(self._available()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the named command."""
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        target = self._available().get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    @staticmethod
    def _available() -> dict[str, str]:
        # A command whose module is not written yet is simply not listed.
        found: dict[str, str] = {}
        for name, target in LAZY_COMMANDS.items():
            module_name = target.split(":")[0]
            if importlib.util.find_spec(module_name) is not None:
                found[name] = target
        return found


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="peerlab-tui")
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """PeerLab TUI: lease a prefix, peer with IXP route servers, announce, and watch traffic."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    if os.environ.get("PEERLAB_LOG_LEVEL"):
        level = getattr(logging, os.environ["PEERLAB_LOG_LEVEL"].upper(), level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # pragma: no cover
    main()
