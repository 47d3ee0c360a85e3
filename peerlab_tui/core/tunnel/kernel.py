"""WireGuard through the kernel module, driven by pyroute2 (``IPRoute`` for the link, ``WireGuard`` for
keys and peers) inside the interface's namespace."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from peerlab_tui.core.tunnel.device import (
    DeviceStatus,
    PeerConfig,
    PeerStatus,
    check_ifname,
    check_netns,
    format_endpoint,
    resolve_endpoint,
    split_endpoint,
)
from peerlab_tui.core.tunnel.errors import TunnelError
from peerlab_tui.core.tunnel.keys import public_key as derive_public_key

log = logging.getLogger(__name__)

# Factories take the namespace name (None = ours) and return a pyroute2 socket (a context manager).
SocketFactory = Callable[[str | None], Any]


def _iproute(netns: str | None) -> Any:
    from pyroute2 import IPRoute

    # flags=0: never create a missing namespace (pyroute2's default would).
    return IPRoute(netns=netns, flags=0) if netns else IPRoute()


def _wireguard(netns: str | None) -> Any:
    from pyroute2 import WireGuard

    return WireGuard(netns=netns, flags=0) if netns else WireGuard()


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes | bytearray) else str(value)


def peer_to_pyroute2(peer: PeerConfig) -> dict[str, Any]:
    """The ``peer`` argument of ``pyroute2.WireGuard.set`` for one peer (allowed IPs replaced)."""
    out: dict[str, Any] = {
        "public_key": peer.public_key,
        "persistent_keepalive": peer.persistent_keepalive or 0,
        "replace_allowed_ips": True,
        "allowed_ips": list(peer.allowed_ips),
    }
    if peer.endpoint is not None:
        host, port = split_endpoint(resolve_endpoint(peer.endpoint))
        out["endpoint_addr"] = host
        out["endpoint_port"] = port
    return out


def status_from_messages(ifname: str, messages: Sequence[Any]) -> DeviceStatus:
    """Build a :class:`DeviceStatus` from the (possibly several) ``wgmsg`` replies of ``WireGuard.info``."""
    listen_port: int | None = None
    pub: str | None = None
    peers: dict[str, dict[str, Any]] = {}
    for msg in messages:
        listen_port = msg.get_attr("WGDEVICE_A_LISTEN_PORT") or listen_port
        key = msg.get_attr("WGDEVICE_A_PUBLIC_KEY")
        if key is None and msg.get_attr("WGDEVICE_A_PRIVATE_KEY") is not None:
            key = derive_public_key(_text(msg.get_attr("WGDEVICE_A_PRIVATE_KEY")))
        if key is not None:
            pub = _text(key)
        for p in msg.get_attr("WGDEVICE_A_PEERS") or []:
            pk = _text(p.get_attr("WGPEER_A_PUBLIC_KEY"))
            # A peer with many allowed IPs continues in the next message: merge by key.
            entry = peers.setdefault(pk, {"allowed": []})
            for a in p.get_attr("WGPEER_A_ALLOWEDIPS") or []:
                if a.get("addr"):
                    entry["allowed"].append(a.get("addr"))
            ep = p.get_attr("WGPEER_A_ENDPOINT")
            if ep is not None and ep.get("port"):
                entry["endpoint"] = format_endpoint(str(ipaddress.ip_address(ep["addr"])), int(ep["port"]))
            hs = p.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
            if hs is not None:
                entry["handshake"] = (hs["tv_sec"] + hs["tv_nsec"] / 1e9) if hs["tv_sec"] else None
            for attr, name in (("WGPEER_A_RX_BYTES", "rx"), ("WGPEER_A_TX_BYTES", "tx"),
                               ("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", "keepalive")):
                value = p.get_attr(attr)
                if value is not None:
                    entry[name] = value
    return DeviceStatus(
        ifname=ifname,
        public_key=pub,
        listen_port=listen_port,
        peers=tuple(
            PeerStatus(public_key=k, endpoint=e.get("endpoint"), allowed_ips=tuple(e["allowed"]),
                       last_handshake=e.get("handshake"), rx_bytes=int(e.get("rx", 0)),
                       tx_bytes=int(e.get("tx", 0)), persistent_keepalive=e.get("keepalive") or None)
            for k, e in peers.items()
        ),
    )


class KernelWireGuard:
    """A kernel WireGuard interface. ``KernelWireGuard(ifname, netns)`` attaches; :meth:`create` makes one."""

    backend_name: ClassVar[str] = "kernel"

    def __init__(self, ifname: str, netns: str | None = None, *,
                 iproute_factory: SocketFactory | None = None,
                 wireguard_factory: SocketFactory | None = None) -> None:
        check_ifname(ifname)
        self.ifname = ifname
        self.netns = netns
        self._iproute_factory = iproute_factory or _iproute
        self._wireguard_factory = wireguard_factory or _wireguard

    def __repr__(self) -> str:
        return f"KernelWireGuard({self.ifname!r}, netns={self.netns!r})"

    @contextmanager
    def _ipr(self) -> Iterator[Any]:
        from pyroute2.netlink.exceptions import NetlinkError  # lazy: pyroute2 costs ~0.4 s to import

        try:
            with self._iproute_factory(self.netns) as ipr:
                yield ipr
        except (OSError, NetlinkError) as exc:
            raise TunnelError(f"{self.ifname}: netlink request failed: {exc}") from exc

    @contextmanager
    def _wg(self) -> Iterator[Any]:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            with self._wireguard_factory(self.netns) as wg:
                yield wg
        except (OSError, NetlinkError) as exc:
            raise TunnelError(f"{self.ifname}: WireGuard netlink request failed: {exc}") from exc

    def _index(self, ipr: Any) -> int | None:
        found = ipr.link_lookup(ifname=self.ifname)
        return int(found[0]) if found else None

    @classmethod
    def create(cls, ifname: str, netns: str | None = None, *,
               iproute_factory: SocketFactory | None = None,
               wireguard_factory: SocketFactory | None = None) -> KernelWireGuard:
        """Create the interface (kind wireguard) if missing and bring it up."""
        check_ifname(ifname)
        check_netns(netns)
        dev = cls(ifname, netns, iproute_factory=iproute_factory, wireguard_factory=wireguard_factory)
        with dev._ipr() as ipr:
            if dev._index(ipr) is None:
                ipr.link("add", ifname=ifname, kind="wireguard")
            index = dev._index(ipr)
            if index is None:
                raise TunnelError(f"{ifname}: the kernel did not create the WireGuard interface")
            ipr.link("set", index=index, state="up")
        log.info("created kernel WireGuard interface %s (netns %s)", ifname, netns or "-")
        return dev

    def exists(self) -> bool:
        """True when the interface exists in its namespace."""
        with self._ipr() as ipr:
            return self._index(ipr) is not None

    def configure(self, private_key: str, listen_port: int | None, peers: Sequence[PeerConfig],
                  *, replace: bool = True) -> None:
        """Set key and port, then the peers; with ``replace`` peers not listed are removed."""
        with self._wg() as wg:
            wg.set(self.ifname, private_key=private_key, listen_port=listen_port)
            if replace:
                wanted = {p.public_key for p in peers}
                current = status_from_messages(self.ifname, list(wg.info(self.ifname)))
                for p in current.peers:
                    if p.public_key not in wanted:
                        wg.set(self.ifname, peer={"public_key": p.public_key, "remove": True})
            for peer in peers:
                wg.set(self.ifname, peer=peer_to_pyroute2(peer))

    def set_peers(self, peers: Sequence[PeerConfig]) -> None:
        """Add or update peers; others untouched."""
        with self._wg() as wg:
            for peer in peers:
                wg.set(self.ifname, peer=peer_to_pyroute2(peer))

    def remove_peer(self, public_key: str) -> None:
        """Remove one peer (absent peers are ignored)."""
        if self.status().peer(public_key) is None:
            return
        with self._wg() as wg:
            wg.set(self.ifname, peer={"public_key": public_key, "remove": True})

    def remove_peers(self, public_keys: Sequence[str]) -> None:
        """Remove several peers (one netlink request each, over one socket)."""
        with self._wg() as wg:
            for key in public_keys:
                wg.set(self.ifname, peer={"public_key": key, "remove": True})

    def status(self) -> DeviceStatus:
        """Settings, peers, handshakes and counters."""
        with self._wg() as wg:
            return status_from_messages(self.ifname, list(wg.info(self.ifname)))

    def delete(self) -> None:
        """Delete the interface if it exists."""
        with self._ipr() as ipr:
            index = self._index(ipr)
            if index is not None:
                ipr.link("del", index=index)
                log.info("deleted kernel WireGuard interface %s", self.ifname)
