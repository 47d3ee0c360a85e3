"""Network namespaces, veth pairs and addresses, through iproute2's ``ip`` command.

Used by the user side (``tunnel up --netns``, ``bgp up --netns``) and by the lab. IPv6 addresses are added
with ``nodad`` (duplicate address detection would delay each by ~1.4 s). Every call has a timeout.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from peerlab_tui.core.errors import ExternalProgramError

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
IFNAME_MAX = 15  # IFNAMSIZ - 1


def run(argv: Sequence[str], *, netns: str | None = None, timeout: float = 15.0,
        check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (inside ``netns`` when given) and return the completed process.

    Raises :class:`ExternalProgramError` with the command's stderr when it fails and ``check`` is true.
    """
    full = [*netns_prefix(netns), *argv]
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input_text)
    except FileNotFoundError as exc:
        raise ExternalProgramError(f"{argv[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ExternalProgramError(f"{' '.join(full)} timed out after {timeout:g} s") from exc
    if check and proc.returncode != 0:
        raise ExternalProgramError(f"{' '.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_prefix(netns: str | None) -> list[str]:
    """The argv prefix that runs a command inside ``netns`` (empty for the current namespace)."""
    return ["ip", "netns", "exec", netns] if netns else []


def netns_exists(name: str) -> bool:
    """True when a named network namespace exists."""
    return (NETNS_DIR / name).exists()


def list_netns() -> list[str]:
    """Names of all named network namespaces."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create_netns(name: str, *, loopback_up: bool = True) -> None:
    """Create a named network namespace (idempotent) with its loopback up."""
    if not netns_exists(name):
        run(["ip", "netns", "add", name])
    if loopback_up:
        run(["ip", "link", "set", "lo", "up"], netns=name)
    # Routers in the lab forward; harmless for end hosts.
    run(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"], netns=name)


def delete_netns(name: str) -> None:
    """Delete a named network namespace if it exists (its interfaces go with it)."""
    if netns_exists(name):
        run(["ip", "netns", "del", name], check=False)


def link_exists(ifname: str, *, netns: str | None = None) -> bool:
    """True when an interface exists in the namespace."""
    return run(["ip", "link", "show", "dev", ifname], netns=netns, check=False).returncode == 0


def create_veth(name_a: str, name_b: str, *, netns_a: str | None = None, netns_b: str | None = None) -> None:
    """Create a veth pair and move each end into its namespace (None = the current one); both up."""
    for n in (name_a, name_b):
        if len(n) > IFNAME_MAX:
            raise ValueError(f"interface name {n!r} is longer than {IFNAME_MAX} characters")
    if not link_exists(name_a, netns=netns_a):
        run(["ip", "link", "add", name_a, "type", "veth", "peer", "name", name_b])
        if netns_a:
            run(["ip", "link", "set", name_a, "netns", netns_a])
        if netns_b:
            run(["ip", "link", "set", name_b, "netns", netns_b])
    run(["ip", "link", "set", name_a, "up"], netns=netns_a)
    run(["ip", "link", "set", name_b, "up"], netns=netns_b)


def create_bridge(name: str, *, netns: str | None = None) -> None:
    """Create a Linux bridge (idempotent) and bring it up."""
    if not link_exists(name, netns=netns):
        run(["ip", "link", "add", name, "type", "bridge"], netns=netns)
    run(["ip", "link", "set", name, "up"], netns=netns)


def attach_to_bridge(ifname: str, bridge: str, *, netns: str | None = None) -> None:
    """Enslave an interface to a bridge."""
    run(["ip", "link", "set", ifname, "master", bridge], netns=netns)


def add_address(ifname: str, cidr: str, *, netns: str | None = None) -> None:
    """Add an address (idempotent); IPv6 addresses get ``nodad`` so they are usable at once."""
    argv = ["ip", "addr", "replace", cidr, "dev", ifname]
    if ":" in cidr:
        argv.append("nodad")
    run(argv, netns=netns)


def delete_link(ifname: str, *, netns: str | None = None) -> None:
    """Delete an interface if it exists."""
    if link_exists(ifname, netns=netns):
        run(["ip", "link", "del", ifname], netns=netns, check=False)


def pids_in_netns(name: str) -> list[int]:
    """PIDs of processes running inside a named namespace."""
    proc = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []
