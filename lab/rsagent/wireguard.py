"""WireGuard peer sync of a route server: the agent's :class:`~lab.rsagent.agent.PeerSync` on top of
``peerlab_tui.core.tunnel`` (wireguard-go through its UAPI socket, or the kernel module)."""

from __future__ import annotations

import logging

from peerlab_tui.core.tunnel import PeerConfig, WireGuardDevice, open_device, sync_peers

log = logging.getLogger(__name__)


class WireGuardPeerSync:
    """Keeps the peers of the route server's WireGuard interface equal to the agent's list.

    Only differing peers are touched (learned endpoints and handshakes of the others survive). An entry with
    an invalid key is skipped with a warning rather than blocking everyone else's peers.
    """

    def __init__(self, ifname: str, netns: str | None = None, *,
                 device: WireGuardDevice | None = None) -> None:
        self.ifname = ifname
        self.netns = netns
        self._device = device

    @property
    def device(self) -> WireGuardDevice:
        """The interface (opened on first use: the topology creates it, the agent only attaches)."""
        if self._device is None:
            self._device = open_device(self.ifname, self.netns)
        return self._device

    def sync(self, peers: list[tuple[str, list[str]]]) -> None:
        """Make the interface's peers exactly ``peers`` (public key, allowed IPs)."""
        desired: list[PeerConfig] = []
        for key, allowed in peers:
            try:
                desired.append(PeerConfig(public_key=key, allowed_ips=tuple(allowed)))
            except ValueError as exc:
                log.warning("skipping WireGuard peer %s: %s", key, exc)
        diff = sync_peers(self.device, desired)
        log.debug("%s: %d peers (+%d ~%d -%d)", self.ifname, len(desired), len(diff.add), len(diff.update),
                  len(diff.remove))
