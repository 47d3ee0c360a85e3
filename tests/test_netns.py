"""The shared netns helpers: namespaces, veth, nodad addresses, cleanup."""

from __future__ import annotations

import subprocess

from peerlab_tui.core import netns
from tests.support.netns import NetnsFactory


def test_veth_between_namespaces_carries_ipv6_at_once(netns_factory: NetnsFactory) -> None:
    """Two namespaces joined by a veth pair ping each other over IPv6 immediately (nodad)."""
    a, b = netns_factory.create("a"), netns_factory.create("b")
    ia, ib = netns_factory.unique("va"), netns_factory.unique("vb")
    netns.create_veth(ia, ib, netns_a=a, netns_b=b)
    netns.add_address(ia, "fd00:99::1/64", netns=a)
    netns.add_address(ib, "fd00:99::2/64", netns=b)
    netns.add_address(ib, "fd00:99::2/64", netns=b)  # idempotent
    out = subprocess.run([*netns.netns_prefix(a), "ping", "-6", "-c", "1", "-W", "2", "fd00:99::2"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cleanup_removes_namespaces(netns_factory: NetnsFactory) -> None:
    """Namespaces created by the factory are gone after cleanup."""
    name = netns_factory.create("c")
    assert netns.netns_exists(name)
    netns_factory.cleanup()
    assert not netns.netns_exists(name)
