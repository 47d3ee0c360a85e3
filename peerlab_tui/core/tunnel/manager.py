"""The user's side of the overlay: one WireGuard interface per route server, registered with the gateway.

Each route server carries default/upstream routes, and WireGuard's cryptokey routing cannot give two peers
of one interface the same allowed IPs (``::/0``), so every route server gets its own interface with it as
the single peer. What ``up`` builds is recorded in ``<state_dir>/tunnel/state.json`` so that ``down``
removes exactly that, from another process too. The private key lives beside it (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from peerlab_tui.core import netns as nsmod
from peerlab_tui.core.errors import NotFoundError
from peerlab_tui.core.models import RouteServerPeer, TunnelInfo
from peerlab_tui.core.tunnel.backend import select_backend
from peerlab_tui.core.tunnel.device import (
    DEFAULT_KEEPALIVE,
    PeerConfig,
    WireGuardDevice,
    check_netns,
)
from peerlab_tui.core.tunnel.errors import TunnelError
from peerlab_tui.core.tunnel.kernel import KernelWireGuard
from peerlab_tui.core.tunnel.keys import generate_private_key, public_key, read_private_key, write_private_key
from peerlab_tui.core.tunnel.wggo import WireGuardGo

log = logging.getLogger(__name__)

STATE_VERSION = 1
KICK_INTERVAL = 1.0  # seconds without an answer over a new tunnel before its handshake is restarted
_RTT_RE = re.compile(r"=\s*([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+)\s*ms")


def default_state_dir() -> Path:
    """``$PEERLAB_STATE_DIR``, else ``$XDG_STATE_HOME/peerlab``, else ``~/.local/state/peerlab``."""
    if os.environ.get("PEERLAB_STATE_DIR"):
        return Path(os.environ["PEERLAB_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "peerlab"


class TunnelRegistry(Protocol):
    """The part of :class:`peerlab_tui.core.gateway.GatewayClient` the tunnel needs."""

    async def ensure_asn(self) -> int:
        """The user's ASN, requested on first use (registering a tunnel needs one)."""
        ...

    async def register_tunnel(self, public_key: str) -> TunnelInfo:
        """Register (or rotate) the public key."""
        ...

    async def get_tunnel(self) -> TunnelInfo:
        """The registered tunnel."""
        ...

    async def delete_tunnel(self) -> None:
        """Deregister the key."""
        ...


@dataclass
class InterfaceRecord:
    """One interface ``up`` created, as persisted in the state file."""

    ifname: str
    netns: str | None
    backend: str
    pid: int | None
    rs_name: str
    rs_public_key: str
    endpoint: str
    overlay_address: str
    bgp_neighbor: str
    local_address: str
    routes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TunnelPeerReport:
    """``status()`` of one route-server peer."""

    rs: str
    interface: str
    netns: str | None
    endpoint: str | None
    overlay_address: str
    local_address: str
    up: bool  # the interface exists and answers
    handshake_age_s: float | None  # None before the first handshake
    rx_bytes: int
    tx_bytes: int
    rtt_ms: float | None  # None when the route server did not answer pings over the tunnel

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return asdict(self)


@dataclass(frozen=True)
class UpResult:
    """What ``up()`` built."""

    public_key: str
    rotated: bool
    info: TunnelInfo
    interfaces: tuple[InterfaceRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output (no private material)."""
        return {
            "public_key": self.public_key,
            "rotated": self.rotated,
            "asn": self.info.asn,
            "addresses": list(self.info.addresses),
            "interfaces": [asdict(i) for i in self.interfaces],
        }


@dataclass(frozen=True)
class DownResult:
    """What ``down()`` removed."""

    removed: tuple[str, ...]
    deregistered: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {"removed": list(self.removed), "deregistered": self.deregistered}


def parse_ping_avg(output: str) -> float | None:
    """The average RTT (ms) from ping's summary line, None when nothing answered."""
    m = _RTT_RE.search(output)
    return float(m.group(2)) if m else None


def measure_rtt(address: str, *, netns: str | None = None, ifname: str | None = None,
                count: int = 3) -> float | None:
    """Average RTT in ms of ``count`` pings to ``address`` (inside ``netns``); None when none came back."""
    addr = ipaddress.ip_address(address.split("/")[0])
    argv = ["ping", "-6" if addr.version == 6 else "-4", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1"]
    if ifname and addr.is_link_local:
        argv += ["-I", ifname]
    argv.append(str(addr))
    proc = nsmod.run(argv, netns=netns, check=False, timeout=count * 0.2 + 5)
    return parse_ping_avg(proc.stdout)


class TunnelManager:
    """Brings the user's overlay up and down and reports on it.

    ``client`` is a :class:`~peerlab_tui.core.gateway.GatewayClient` (or anything with its tunnel calls);
    it may be None for ``status()`` and for ``down(keep_registration=True)``. ``backend`` forces
    ``kernel`` or ``wireguard-go`` (default: :func:`select_backend`).
    """

    def __init__(self, client: TunnelRegistry | None, state_dir: Path, netns: str | None = None,
                 *, backend: str | None = None) -> None:
        self.client = client
        self.state_dir = Path(state_dir)
        self.netns = netns
        self.backend = backend
        self.dir = self.state_dir / "tunnel"
        self.key_path = self.dir / "private.key"
        self.state_path = self.dir / "state.json"
        # Devices this object started, kept so their processes are reaped by us.
        self._devices: dict[str, WireGuardDevice] = {}

    # --- naming and state ---------------------------------------------------------------------------

    def ifname(self, index: int) -> str:
        """The interface name for the ``index``-th route server: unique per state dir and namespace,
        because wireguard-go's UAPI socket path is global."""
        digest = hashlib.sha256(f"{self.state_dir.resolve()}\0{self.netns or ''}".encode()).hexdigest()
        name = f"plw{digest[:6]}{index}"
        if len(name) > nsmod.IFNAME_MAX:
            raise TunnelError(f"too many route servers for interface names ({index})")
        return name

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load_state(self) -> list[InterfaceRecord]:
        """The interfaces recorded by the last ``up`` (empty when there are none)."""
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise TunnelError(f"the tunnel state file {self.state_path} is unreadable: {exc}") from exc
        return [InterfaceRecord(**rec) for rec in data.get("interfaces", [])]

    def _save_state(self, records: list[InterfaceRecord], public: str | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": STATE_VERSION, "public_key": public,
                       "interfaces": [asdict(r) for r in records]}, fh, indent=2)
        os.replace(tmp, self.state_path)

    def _device(self, rec: InterfaceRecord) -> WireGuardDevice:
        if rec.ifname in self._devices:
            return self._devices[rec.ifname]
        if rec.backend == WireGuardGo.backend_name:
            return WireGuardGo(rec.ifname, rec.netns, pid=rec.pid)
        return KernelWireGuard(rec.ifname, rec.netns)

    def public_key(self) -> str | None:
        """The public key of the stored private key (None before the first ``up``)."""
        return public_key(read_private_key(self.key_path)) if self.key_path.exists() else None

    # --- up -----------------------------------------------------------------------------------------

    async def up(self, *, rotate: bool = False) -> UpResult:
        """Register the key (a new one with ``rotate``) and build one interface per route server.

        Idempotent: an existing interface is reconfigured in place, one no longer needed is removed.
        """
        if self.client is None:
            raise TunnelError("bringing the tunnel up needs a gateway connection")
        check_netns(self.netns)
        select_backend(self.backend)  # fail before registering when no WireGuard can run here
        with self._locked():
            fresh = rotate or not self.key_path.exists()
            private = generate_private_key() if fresh else read_private_key(self.key_path)
            pub = public_key(private)
            await self.client.ensure_asn()
            info = await self.client.register_tunnel(pub)
            if fresh:
                # Stored only once the gateway took it: a refused rotation leaves the working key in place.
                write_private_key(self.key_path, private)
            if not info.route_servers:
                raise TunnelError("the gateway lists no route servers for the overlay")
            records = await asyncio.to_thread(self._build, info, private, pub)
        log.info("tunnel up: %d interface(s), key %s", len(records), pub)
        return UpResult(public_key=pub, rotated=rotate, info=info, interfaces=tuple(records))

    def _local_address(self, info: TunnelInfo, index: int, rs: RouteServerPeer) -> str:
        if rs.local_address:
            return rs.local_address
        if index < len(info.addresses):
            return info.addresses[index]
        raise TunnelError(f"the gateway gave no overlay address for route server {rs.name!r}")

    def _build(self, info: TunnelInfo, private: str, pub: str) -> list[InterfaceRecord]:
        previous = {r.ifname: r for r in self.load_state()}
        records: list[InterfaceRecord] = []
        wanted = {self.ifname(i) for i in range(len(info.route_servers))}
        # Interfaces of an earlier up that the gateway no longer asks for go first.
        for name, rec in list(previous.items()):
            if name not in wanted or rec.netns != self.netns:
                self._teardown(rec)
                del previous[name]
        self._save_state(list(previous.values()), pub)
        for index, rs in enumerate(info.route_servers):
            name = self.ifname(index)
            old = previous.get(name)
            dev = self._ensure_device(name, old)
            pid = dev.pid if isinstance(dev, WireGuardGo) else None
            local = self._local_address(info, index, rs)
            rec = InterfaceRecord(ifname=name, netns=self.netns, backend=dev.backend_name, pid=pid,
                                  rs_name=rs.name, rs_public_key=rs.public_key, endpoint=rs.endpoint,
                                  overlay_address=rs.overlay_address, bgp_neighbor=rs.bgp_neighbor,
                                  local_address=local)
            # Record before configuring, so a failure half-way is still cleaned up by down().
            previous[name] = rec
            self._save_state(list(previous.values()), pub)
            dev.configure(private, None, [PeerConfig(public_key=rs.public_key, endpoint=rs.endpoint,
                                                     allowed_ips=("::/0",),
                                                     persistent_keepalive=DEFAULT_KEEPALIVE)], replace=True)
            self._addresses(rec, old)
            records.append(rec)
            self._save_state(list(previous.values()), pub)
        return records

    def _ensure_device(self, name: str, old: InterfaceRecord | None) -> WireGuardDevice:
        if old is not None:
            dev = self._device(old)
            if dev.exists():
                return dev
            self._teardown(old)  # half-gone: clear leftovers before recreating
        cls = select_backend(self.backend)
        if cls is WireGuardGo:
            dev = WireGuardGo.create(name, self.netns, log_path=self.dir / f"{name}.log")
        else:
            dev = cls.create(name, self.netns)
        self._devices[name] = dev
        return dev

    def _addresses(self, rec: InterfaceRecord, old: InterfaceRecord | None) -> None:
        if old is not None and old.local_address != rec.local_address:
            nsmod.run(["ip", "addr", "del", old.local_address, "dev", rec.ifname],
                      netns=rec.netns, check=False)
        nsmod.add_address(rec.ifname, rec.local_address, netns=rec.netns)
        local_net = ipaddress.ip_interface(rec.local_address).network
        for target in dict.fromkeys([rec.overlay_address, rec.bgp_neighbor]):
            if not target:
                continue
            ip = ipaddress.ip_interface(target).ip
            if ip in local_net:
                continue  # on-link through the address's own prefix route
            route = f"{ip}/{ip.max_prefixlen}"
            nsmod.run(["ip", f"-{ip.version}", "route", "replace", route, "dev", rec.ifname], netns=rec.netns)
            rec.routes.append(route)

    # --- status -------------------------------------------------------------------------------------

    async def status(self, *, rtt: bool = True) -> list[TunnelPeerReport]:
        """Per route server: interface, endpoint, handshake age, counters and RTT over the tunnel."""
        records = self.load_state()
        return list(await asyncio.gather(*(asyncio.to_thread(self._report, r, rtt) for r in records)))

    def _report(self, rec: InterfaceRecord, with_rtt: bool) -> TunnelPeerReport:
        dev = self._device(rec)
        alive = (rec.netns is None or nsmod.netns_exists(rec.netns)) and dev.exists()
        peer = dev.status().peer(rec.rs_public_key) if alive else None
        age = None
        if peer is not None and peer.last_handshake is not None:
            age = max(0.0, time.time() - peer.last_handshake)
        rtt = None
        if alive and with_rtt:
            rtt = measure_rtt(rec.overlay_address, netns=rec.netns, ifname=rec.ifname)
        return TunnelPeerReport(
            rs=rec.rs_name, interface=rec.ifname, netns=rec.netns,
            endpoint=(peer.endpoint if peer is not None else rec.endpoint),
            overlay_address=rec.overlay_address, local_address=rec.local_address, up=alive,
            handshake_age_s=age, rx_bytes=peer.rx_bytes if peer else 0, tx_bytes=peer.tx_bytes if peer else 0,
            rtt_ms=rtt,
        )

    async def wait_reachable(self, *, timeout: float = 15.0) -> dict[str, bool]:  # noqa: ASYNC109
        """Wait until every route server answers a ping over its tunnel (its peer has our key and the
        handshake is done), at most ``timeout`` s; return route server -> reachable.

        Worth it before starting BGP: a TCP SYN sent before the route server's agent added our key is lost
        and the kernel's retransmit backoff delays the session by seconds.
        """
        records = self.load_state()
        deadline = time.monotonic() + timeout

        def one(rec: InterfaceRecord) -> bool:
            target = ipaddress.ip_interface(rec.overlay_address).ip.compressed
            kicked = time.monotonic()
            while True:
                argv = ["ping", "-6", "-n", "-q", "-c", "1", "-W", "1", target]
                if nsmod.run(argv, netns=rec.netns, check=False, timeout=5).returncode == 0:
                    return True
                if time.monotonic() > deadline:
                    return False
                if time.monotonic() - kicked >= KICK_INTERVAL:
                    # WireGuard waits 5 s (REKEY_TIMEOUT) before it retries a handshake the route server
                    # dropped because its agent had not added our key yet; a re-added peer retries now.
                    self._kick(rec)
                    kicked = time.monotonic()
                time.sleep(0.05)

        results = await asyncio.gather(*(asyncio.to_thread(one, r) for r in records))
        return {r.rs_name: ok for r, ok in zip(records, results, strict=True)}

    def _kick(self, rec: InterfaceRecord) -> None:
        dev = self._device(rec)
        try:
            dev.remove_peer(rec.rs_public_key)
            dev.set_peers([PeerConfig(public_key=rec.rs_public_key, endpoint=rec.endpoint,
                                      allowed_ips=("::/0",), persistent_keepalive=DEFAULT_KEEPALIVE)])
        except (TunnelError, OSError) as exc:
            log.debug("could not re-add the peer of %s: %s", rec.ifname, exc)

    # --- down ---------------------------------------------------------------------------------------

    def _teardown(self, rec: InterfaceRecord) -> None:
        dev = self._device(rec)
        if rec.netns is not None and not nsmod.netns_exists(rec.netns) and isinstance(dev, KernelWireGuard):
            return  # the namespace took the interface with it
        dev.delete()
        self._devices.pop(rec.ifname, None)

    async def down(self, *, keep_registration: bool = False) -> DownResult:
        """Remove every interface ``up`` created, stop its wireguard-go, and deregister the key.

        Idempotent: nothing recorded means nothing to remove; an already deregistered key is fine.
        """
        with self._locked():
            records = self.load_state()
            removed: list[str] = []
            for rec in records:
                await asyncio.to_thread(self._teardown, rec)
                removed.append(rec.ifname)
                self._save_state([r for r in records if r.ifname not in removed], None)
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
            deregistered = False
            if not keep_registration:
                if self.client is None:
                    raise TunnelError("deregistering the tunnel needs a gateway connection "
                                      "(or keep the registration)")
                with contextlib.suppress(NotFoundError):
                    await self.client.delete_tunnel()
                deregistered = True
        log.info("tunnel down: removed %s", ", ".join(removed) or "nothing")
        return DownResult(removed=tuple(removed), deregistered=deregistered)
