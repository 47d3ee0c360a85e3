"""A pytest-friendly factory of uniquely named network namespaces that cleans up after itself."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Iterator

import pytest

from peerlab_tui.core import netns
from tests.support.requirements import require_binary, require_root


class NetnsFactory:
    """Creates namespaces named ``t<tag><random>`` and deletes them (and kills their processes) at the end."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.created: list[str] = []

    def unique(self, stem: str = "") -> str:
        """A short unique name usable for namespaces and interfaces (<= 15 characters)."""
        return f"t{self.tag[:3]}{stem[:4]}{secrets.token_hex(3)}"

    def create(self, stem: str = "") -> str:
        """Create a fresh namespace and return its name."""
        name = self.unique(stem)
        netns.create_netns(name)
        self.created.append(name)
        return name

    def cleanup(self) -> None:
        """Kill processes left in our namespaces, then delete them."""
        for name in reversed(self.created):
            for pid in netns.pids_in_netns(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            netns.delete_netns(name)
        self.created.clear()


@pytest.fixture
def netns_factory(request: pytest.FixtureRequest) -> Iterator[NetnsFactory]:
    """Namespaces for one test; requires root and iproute2."""
    require_root()
    require_binary("ip")
    factory = NetnsFactory(request.node.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))
    try:
        yield factory
    finally:
        factory.cleanup()
