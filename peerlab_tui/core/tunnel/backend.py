"""Choosing a WireGuard implementation: the kernel module when it works, else wireguard-go.

``PEERLAB_WG_BACKEND`` (``kernel``, ``wireguard-go`` or ``auto``) overrides the choice.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import subprocess
from pathlib import Path

from peerlab_tui.core.tunnel.device import WireGuardDevice
from peerlab_tui.core.tunnel.errors import BackendUnavailableError
from peerlab_tui.core.tunnel.kernel import KernelWireGuard
from peerlab_tui.core.tunnel.uapi import UapiClient
from peerlab_tui.core.tunnel.wggo import WireGuardGo, wireguard_go_binary

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[KernelWireGuard] | type[WireGuardGo]] = {
    KernelWireGuard.backend_name: KernelWireGuard,
    WireGuardGo.backend_name: WireGuardGo,
}


@functools.cache
def kernel_wireguard_available() -> bool:
    """True when the kernel can make WireGuard interfaces.

    The module is loaded when /sys/module/wireguard exists; otherwise (as root) a throwaway interface is
    tried, which also lets the kernel autoload an installed but unloaded module, and is deleted at once.
    """
    if Path("/sys/module/wireguard").is_dir():
        return True
    if os.geteuid() != 0:
        return False
    probe = f"plwprobe{secrets.token_hex(3)}"
    try:
        added = subprocess.run(["ip", "link", "add", probe, "type", "wireguard"], capture_output=True,
                               timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    if added:
        subprocess.run(["ip", "link", "del", probe], capture_output=True, timeout=10)
    return added


def select_backend(name: str | None = None) -> type[KernelWireGuard] | type[WireGuardGo]:
    """The backend class to use: ``name`` or env ``PEERLAB_WG_BACKEND`` if set, else kernel when it works,
    else wireguard-go (raises :class:`BackendUnavailableError` when neither is usable)."""
    choice = (name or os.environ.get("PEERLAB_WG_BACKEND") or "auto").strip().lower()
    if choice == WireGuardGo.backend_name:
        wireguard_go_binary()
        return WireGuardGo
    if choice == KernelWireGuard.backend_name:
        return KernelWireGuard
    if choice != "auto":
        raise BackendUnavailableError(
            f"unknown WireGuard backend {choice!r} (choose from: auto, {', '.join(BACKENDS)})"
        )
    if kernel_wireguard_available():
        return KernelWireGuard
    wireguard_go_binary()  # raises with an install hint when missing
    return WireGuardGo


def create_device(ifname: str, netns: str | None = None, *, backend: str | None = None) -> WireGuardDevice:
    """Create (idempotently) a WireGuard interface in ``netns`` with the selected backend, up."""
    return select_backend(backend).create(ifname, netns)


def open_device(ifname: str, netns: str | None = None, *, backend: str | None = None) -> WireGuardDevice:
    """Attach to an existing WireGuard interface: wireguard-go when its UAPI socket answers, else kernel."""
    if backend is not None:
        return BACKENDS[select_backend(backend).backend_name](ifname, netns)
    if UapiClient(ifname).reachable():
        return WireGuardGo(ifname, netns)
    return KernelWireGuard(ifname, netns)
