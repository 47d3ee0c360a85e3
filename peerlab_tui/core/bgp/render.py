"""Rendering of ExaBGP's configuration, environment and API commands (deterministic text, pure functions)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from peerlab_tui.core.bgp.model import Announcement, NeighborConfig, Preview, SpeakerConfig

PROCESS_NAME = "peerlab-relay"
# The relay runs as a plain script (stdlib only, isolated mode): importing the package would cost ExaBGP's
# start, and every restart, most of a second.
RELAY_SCRIPT = Path(__file__).resolve().parent / "_relay.py"


def exabgp_env(log_level: str = "INFO") -> dict[str, str]:
    """ExaBGP settings passed as environment variables.

    Runs as root without dropping privileges (it is started inside a namespace by root), without the named
    pipe CLI, with an ack for every API command, and exits if our relay dies (our supervisor restarts it).
    """
    return {
        "exabgp.daemon.user": "root",
        "exabgp.daemon.drop": "false",
        "exabgp.daemon.daemonize": "false",
        "exabgp.api.cli": "false",
        "exabgp.api.ack": "true",
        "exabgp.api.encoder": "json",
        "exabgp.api.respawn": "false",
        "exabgp.api.terminate": "true",
        "exabgp.log.destination": "stderr",
        "exabgp.log.level": log_level,
    }


def render_config(config: SpeakerConfig, relay_socket: str, python: str = sys.executable) -> str:
    """ExaBGP's configuration: our relay as the API process and one neighbor per route server."""
    lines = [
        "# rendered by peerlab-tui; do not edit (it is rewritten on every start)",
        f"process {PROCESS_NAME} {{",
        f"    run {python} -I {RELAY_SCRIPT} {relay_socket};",
        "    encoder json;",
        "}",
    ]
    for n in sorted(config.neighbors, key=lambda n: n.name):
        lines += [
            "",
            f"# route server {n.name}",
            f"neighbor {n.address} {{",
            f"    description \"{n.name}\";",
            f"    router-id {config.router_id};",
            f"    local-address {n.local_address};",
            f"    local-as {config.asn};",
            f"    peer-as {n.asn};",
            f"    hold-time {config.hold_time};",
            "    passive false;",
            "    family {",
            "        ipv6 unicast;",
            "    }",
            "    capability {",
            "        route-refresh;",
            "    }",
            "    api {",
            f"        processes [ {PROCESS_NAME} ];",
            "        neighbor-changes;",
            "        fsm;",
            "        receive {",
            "            parsed;",
            "            update;",
            "            notification;",
            "        }",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def as_path_for(asn: int, prepend: int) -> list[int]:
    """The AS path a route server sees: our ASN, plus ``prepend`` copies (route servers are transparent)."""
    return [asn] * (1 + max(prepend, 0))


def announce_command(neighbor: NeighborConfig, ann: Announcement, asn: int) -> str:
    """The API command announcing ``ann`` to one neighbor (the AS path is explicit: sent verbatim)."""
    next_hop = ann.next_hop or neighbor.local_address
    parts = [f"neighbor {neighbor.address} announce route {ann.prefix} next-hop {next_hop}",
             "origin igp",
             "as-path [ " + " ".join(str(a) for a in as_path_for(asn, ann.prepend)) + " ]"]
    if ann.med is not None:
        parts.append(f"med {ann.med}")
    if ann.communities:
        parts.append("community [ " + " ".join(ann.communities) + " ]")
    if ann.large_communities:
        parts.append("large-community [ " + " ".join(ann.large_communities) + " ]")
    return " ".join(parts)


def withdraw_command(neighbor: NeighborConfig, prefix: str) -> str:
    """The API command withdrawing ``prefix`` from one neighbor."""
    return f"neighbor {neighbor.address} withdraw route {prefix}"


def preview(config: SpeakerConfig, ann: Announcement, targets: Sequence[NeighborConfig]) -> Preview:
    """What announcing ``ann`` to ``targets`` sends (already validated by the safety checks)."""
    ordered = sorted(targets, key=lambda n: n.name)
    return Preview(
        prefix=ann.prefix,
        route_servers=[n.name for n in ordered],
        commands=[announce_command(n, ann, config.asn) for n in ordered],
        as_path=as_path_for(config.asn, ann.prepend),
        next_hops={n.name: ann.next_hop or n.local_address for n in ordered},
    )
