"""The WireGuard overlay: keys, devices (kernel via pyroute2, else wireguard-go via UAPI), peer sync for
route servers, and the user's :class:`TunnelManager`.

Route-server side (rs-agent, topology)::

    from peerlab_tui.core.tunnel import create_device, open_device, sync_peers, rs_peer_config

    dev = create_device("rs1wg", netns="rs1")          # topology: make the interface, up
    dev.configure(private_key, 51820, [])              # its key and port, no peers yet
    dev = open_device("rs1wg", netns="rs1")            # agent: attach to it
    sync_peers(dev, [rs_peer_config(p, overlay_network="fd00:1::/64") for p in peers])
"""

from peerlab_tui.core.tunnel.backend import (
    create_device,
    kernel_wireguard_available,
    open_device,
    select_backend,
)
from peerlab_tui.core.tunnel.device import (
    DeviceStatus,
    PeerConfig,
    PeerDiff,
    PeerStatus,
    WireGuardDevice,
    diff_peers,
    rs_peer_config,
    sync_peers,
)
from peerlab_tui.core.tunnel.errors import (
    BackendUnavailableError,
    KeyFileError,
    NamespaceNotFoundError,
    TunnelError,
    UapiError,
)
from peerlab_tui.core.tunnel.kernel import KernelWireGuard
from peerlab_tui.core.tunnel.keys import (
    generate_private_key,
    load_or_create_private_key,
    public_key,
    read_private_key,
    write_private_key,
)
from peerlab_tui.core.tunnel.manager import (
    DownResult,
    InterfaceRecord,
    TunnelManager,
    TunnelPeerReport,
    UpResult,
    default_state_dir,
    measure_rtt,
)
from peerlab_tui.core.tunnel.wggo import WireGuardGo, find_wireguard_go_pid

__all__ = [
    "BackendUnavailableError",
    "DeviceStatus",
    "DownResult",
    "InterfaceRecord",
    "KernelWireGuard",
    "KeyFileError",
    "NamespaceNotFoundError",
    "PeerConfig",
    "PeerDiff",
    "PeerStatus",
    "TunnelError",
    "TunnelManager",
    "TunnelPeerReport",
    "UapiError",
    "UpResult",
    "WireGuardDevice",
    "WireGuardGo",
    "create_device",
    "default_state_dir",
    "diff_peers",
    "find_wireguard_go_pid",
    "generate_private_key",
    "kernel_wireguard_available",
    "load_or_create_private_key",
    "measure_rtt",
    "open_device",
    "public_key",
    "read_private_key",
    "rs_peer_config",
    "select_backend",
    "sync_peers",
    "write_private_key",
]
