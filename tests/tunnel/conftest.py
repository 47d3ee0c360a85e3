"""Fixtures of the tunnel tests: wireguard-go devices deleted (their daemons reaped) at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from peerlab_tui.core.tunnel import WireGuardGo
from tests.support.netns import NetnsFactory
from tests.support.requirements import require_binary


class WgFactory:
    """Starts wireguard-go devices with unique names and deletes them all at teardown."""

    def __init__(self, names: NetnsFactory) -> None:
        self.names = names
        self.devices: list[WireGuardGo] = []

    def create(self, netns: str | None, stem: str = "wg") -> WireGuardGo:
        """A fresh wireguard-go interface in ``netns``."""
        dev = WireGuardGo.create(self.names.unique(stem), netns)
        self.devices.append(dev)
        return dev

    def cleanup(self) -> None:
        """Delete every device (their processes exit and are reaped)."""
        for dev in reversed(self.devices):
            with contextlib.suppress(Exception):
                dev.delete()
        self.devices.clear()


@pytest.fixture
def wg_factory(netns_factory: NetnsFactory) -> Iterator[WgFactory]:
    """wireguard-go devices for one test (needs root, ip, wireguard-go and wg)."""
    require_binary("wireguard-go", "wg", "ping")
    factory = WgFactory(netns_factory)
    try:
        yield factory
    finally:
        factory.cleanup()
