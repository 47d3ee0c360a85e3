"""The route server's WireGuard peer sync on a real wireguard-go interface."""

from __future__ import annotations

from lab.rsagent.wireguard import WireGuardPeerSync
from peerlab_tui.core.tunnel import create_device, generate_private_key, public_key
from tests.support.netns import NetnsFactory
from tests.support.requirements import require_binary


def test_peers_follow_the_agent(netns_factory: NetnsFactory) -> None:
    """Peers are added with their allowed IPs, changed, and removed; a bad key does not block others."""
    require_binary("wireguard-go")
    ns = netns_factory.create("wg")
    ifname = netns_factory.unique("wg")
    dev = create_device(ifname, netns=ns)
    try:
        dev.configure(generate_private_key(), None, [])
        alice, bob = public_key(generate_private_key()), public_key(generate_private_key())
        sync = WireGuardPeerSync(ifname, ns)
        sync.sync([(alice, ["fd00:100::101/128", "2001:db8:1000::/48"]), (bob, ["fd00:100::102/128"]),
                   ("not-a-key", ["fd00:100::103/128"])])
        peers = {p.public_key: set(p.allowed_ips) for p in dev.status().peers}
        assert peers == {alice: {"fd00:100::101/128", "2001:db8:1000::/48"}, bob: {"fd00:100::102/128"}}
        sync.sync([(alice, ["fd00:100::101/128"])])  # lease gone, bob's tunnel gone
        peers = {p.public_key: set(p.allowed_ips) for p in dev.status().peers}
        assert peers == {alice: {"fd00:100::101/128"}}
    finally:
        dev.delete()
