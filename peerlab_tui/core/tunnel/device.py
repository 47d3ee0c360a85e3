"""The backend-neutral WireGuard device: peer configs, status, the device protocol, and peer sync.

A backend object stands for one interface (``ifname`` inside ``netns``). ``Backend.create(ifname, netns)``
makes the interface and returns its device; ``Backend(ifname, netns)`` attaches to one that exists (the
route-server agent attaches to the interface the topology created).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from peerlab_tui.core import netns as nsmod
from peerlab_tui.core.models import TunnelPeer, canonical_wireguard_key
from peerlab_tui.core.tunnel.errors import NamespaceNotFoundError, TunnelError
from peerlab_tui.core.tunnel.keys import decode_key

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE = 25


def normalize_cidr(value: str) -> str:
    """Canonical text of a CIDR (host bits cleared), or ``ValueError``."""
    return str(ipaddress.ip_network(value.strip(), strict=False))


def format_endpoint(host: str, port: int) -> str:
    """``[v6]:port`` or ``v4:port``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """Split ``[addr]:port``, ``addr:port`` or ``host:port`` into host and port (``ValueError`` if bad)."""
    text = endpoint.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad endpoint {endpoint!r}: expected [address]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"bad endpoint {endpoint!r}: expected host:port or [IPv6]:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad endpoint {endpoint!r}: the port is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad endpoint {endpoint!r}: port out of range")
    return host, port


def resolve_endpoint(endpoint: str) -> str:
    """An endpoint with its host resolved to an address (WireGuard takes addresses only), canonical text."""
    host, port = split_endpoint(endpoint)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise TunnelError(f"cannot resolve the WireGuard endpoint {endpoint!r}: {exc}") from exc
        addr = ipaddress.ip_address(str(infos[0][4][0]))
    return format_endpoint(str(addr), port)


@dataclass(frozen=True)
class PeerConfig:
    """What one WireGuard peer should look like.

    ``endpoint`` None leaves the endpoint to roaming (the route-server side learns users' endpoints).
    ``persistent_keepalive`` None or 0 disables keepalives.
    """

    public_key: str
    endpoint: str | None = None
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int | None = None

    def __post_init__(self) -> None:
        try:
            decode_key(self.public_key)
        except ValueError as exc:
            raise ValueError(f"peer public key {self.public_key!r}: {exc}") from exc
        # Keys are compared as text (diffs, duplicates): one spelling per key, the one WireGuard reports.
        object.__setattr__(self, "public_key", canonical_wireguard_key(self.public_key))
        object.__setattr__(self, "allowed_ips", tuple(normalize_cidr(a) for a in self.allowed_ips))
        if self.endpoint is not None:
            split_endpoint(self.endpoint)
        if self.persistent_keepalive is not None and not 0 <= self.persistent_keepalive <= 65535:
            raise ValueError("persistent_keepalive must be 0..65535 seconds")


@dataclass(frozen=True)
class PeerStatus:
    """One peer as the device reports it."""

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    last_handshake: float | None  # UNIX time, None before the first handshake
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None = None


@dataclass(frozen=True)
class DeviceStatus:
    """The device's own settings and its peers."""

    ifname: str
    public_key: str | None
    listen_port: int | None
    peers: tuple[PeerStatus, ...] = field(default_factory=tuple)

    def peer(self, public_key: str) -> PeerStatus | None:
        """The peer with this public key (any base64 spelling of it), if configured."""
        want = _canonical_or_text(public_key)
        return next((p for p in self.peers if _canonical_or_text(p.public_key) == want), None)


class WireGuardDevice(Protocol):
    """One WireGuard interface, whatever implements it (kernel module or wireguard-go)."""

    backend_name: ClassVar[str]
    ifname: str
    netns: str | None

    @classmethod
    def create(cls, ifname: str, netns: str | None = None) -> WireGuardDevice:
        """Create the interface (idempotent), bring it up and return the device."""
        ...

    def exists(self) -> bool:
        """True when the interface is there and can be driven."""
        ...

    def configure(self, private_key: str, listen_port: int | None, peers: Sequence[PeerConfig],
                  *, replace: bool = True) -> None:
        """Set the private key, listen port (None = keep/any) and peers (``replace`` drops other peers)."""
        ...

    def set_peers(self, peers: Sequence[PeerConfig]) -> None:
        """Add or update these peers (allowed IPs replaced); other peers are left alone."""
        ...

    def remove_peer(self, public_key: str) -> None:
        """Remove one peer (no error if it is absent)."""
        ...

    def remove_peers(self, public_keys: Sequence[str]) -> None:
        """Remove several peers at once (keys known to be configured, e.g. from a diff)."""
        ...

    def status(self) -> DeviceStatus:
        """Read the device's settings, peers, handshakes and counters."""
        ...

    def delete(self) -> None:
        """Delete the interface (and stop whatever runs it); no error if it is already gone."""
        ...


def check_ifname(ifname: str) -> None:
    """Refuse interface names the kernel would refuse (or that could escape a socket path)."""
    if not ifname or len(ifname) > nsmod.IFNAME_MAX or "/" in ifname or ifname in {".", ".."} or any(
        c.isspace() for c in ifname
    ):
        raise ValueError(
            f"invalid interface name {ifname!r} (1..{nsmod.IFNAME_MAX} characters, no / or spaces)"
        )


def check_netns(netns: str | None) -> None:
    """Raise :class:`NamespaceNotFoundError` when a named namespace does not exist."""
    if netns is not None and not nsmod.netns_exists(netns):
        raise NamespaceNotFoundError(
            f"network namespace {netns!r} does not exist (create it with ip netns add)"
        )


# --- sync ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerDiff:
    """What :func:`sync_peers` changed (or would change): public keys added, updated and removed."""

    add: tuple[PeerConfig, ...] = ()
    update: tuple[PeerConfig, ...] = ()
    remove: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the device already matches."""
        return not (self.add or self.update or self.remove)


def _needs_update(want: PeerConfig, have: PeerStatus) -> bool:
    if set(want.allowed_ips) != {normalize_cidr(a) for a in have.allowed_ips}:
        return True
    if (want.persistent_keepalive or 0) != (have.persistent_keepalive or 0):
        return True
    # An unset endpoint means "whatever the peer roams from": never a reason to touch it.
    return want.endpoint is not None and (
        have.endpoint is None or resolve_endpoint(want.endpoint) != resolve_endpoint(have.endpoint)
    )


def _canonical_or_text(key: str) -> str:
    try:
        return canonical_wireguard_key(key)
    except ValueError:
        return key


def diff_peers(current: Iterable[PeerStatus], desired: Iterable[PeerConfig]) -> PeerDiff:
    """The changes that turn ``current`` into ``desired``, matched by public key (the 32 bytes, not the
    base64 text: two spellings of one key are one peer).

    A rotated key shows up as the old key removed and the new key added.
    """
    have = {_canonical_or_text(p.public_key): p for p in current}
    want: dict[str, PeerConfig] = {}
    for p in desired:
        key = canonical_wireguard_key(p.public_key)
        if key in want and want[key] != p:
            raise ValueError(f"public key {key} is desired twice with different settings")
        want[key] = p
    add = tuple(p for k, p in want.items() if k not in have)
    update = tuple(p for k, p in want.items() if k in have and _needs_update(p, have[k]))
    remove = tuple(p.public_key for k, p in have.items() if k not in want)
    return PeerDiff(add=add, update=update, remove=remove)


def sync_peers(device: WireGuardDevice, desired: Sequence[PeerConfig]) -> PeerDiff:
    """Make the device's peers equal to ``desired``, touching only peers that differ; return the diff.

    Removals happen first so that a rotated key's allowed IPs are free for the new key. The device's own
    key, port and the settings of unchanged peers (their endpoints, handshakes, counters) are untouched.
    """
    diff = diff_peers(device.status().peers, desired)
    if diff.remove:
        device.remove_peers(diff.remove)
    if diff.add or diff.update:
        device.set_peers([*diff.add, *diff.update])
    if not diff.empty:
        log.info("%s: peers +%d ~%d -%d", device.ifname, len(diff.add), len(diff.update), len(diff.remove))
    return diff


def host_cidr(cidr: str) -> str:
    """The address of a CIDR as a host route (``fd00::5/64`` -> ``fd00::5/128``)."""
    iface = ipaddress.ip_interface(cidr.strip())
    return f"{iface.ip}/{iface.max_prefixlen}"


def rs_peer_config(peer: TunnelPeer, *, overlay_network: str | None = None,
                   extra_allowed_ips: Sequence[str] = (),
                   persistent_keepalive: int | None = None) -> PeerConfig:
    """The route server's side of a user's tunnel, from a ``/service/tunnels`` entry.

    Allowed IPs are the user's overlay addresses as host routes (users share the overlay subnet, so the
    subnet itself can't be a cryptokey route), limited to ``overlay_network`` when given, plus
    ``extra_allowed_ips`` (e.g. the user's leased prefixes). The endpoint is learned when the user connects.
    """
    net = ipaddress.ip_network(overlay_network, strict=False) if overlay_network else None
    allowed: list[str] = []
    for addr in peer.addresses:
        iface = ipaddress.ip_interface(addr)
        if net is None or (iface.version == net.version and iface.ip in net):
            allowed.append(host_cidr(addr))
    allowed.extend(extra_allowed_ips)
    return PeerConfig(public_key=peer.public_key, endpoint=None, allowed_ips=tuple(allowed),
                      persistent_keepalive=persistent_keepalive)
