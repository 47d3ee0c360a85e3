"""The lab's topology file (what to build) and its state file (what was built).

:class:`Topology` is read from YAML (``lab/topology/default.yaml`` documents every field). Names and
addresses derived from it (namespaces, interfaces, the underlay and overlay networks) are computed in one
place, :class:`Plan`, so ``lab up``, ``lab status`` and ``lab down`` always agree on them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from peerlab_tui.core.errors import ConfigError
from peerlab_tui.core.netns import IFNAME_MAX

DEFAULT_TOPOLOGY = Path(__file__).with_name("default.yaml")

# Prefix: short so "<prefix>-<rs>" and "<prefix>-p<port>" fit in IFNAMSIZ; no "-" so "<prefix>-" never
# matches another lab's names.
PREFIX_PATTERN = r"^[a-z][a-z0-9]{0,7}$"
RS_NAME_PATTERN = r"^[a-z][a-z0-9]{0,5}$"
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Namespace suffixes the lab itself uses: a user cannot be named like them.
RESERVED_SUFFIXES = ("ixp", "upstream")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteServerSpec(_Model):
    """One IXP route server: BIRD in ``<prefix>-<name>`` with a WireGuard listener on the underlay."""

    name: str = Field(pattern=RS_NAME_PATTERN)
    router_id: ipaddress.IPv4Address
    wireguard_port: int = Field(ge=1, le=65535)
    asn: int | None = Field(default=None, ge=1, le=4294967295)  # None: the topology's platform_asn


class UpstreamRoute(_Model):
    """A prefix the upstream originates, with the AS path the route servers should see after its ASN."""

    prefix: ipaddress.IPv6Network
    prepend: list[int] = Field(default_factory=list)  # ASNs appended after the upstream's own ASN


class UpstreamSpec(_Model):
    """The upstream "Internet": a BIRD that originates a small table to every route server."""

    asn: int = Field(ge=1, le=4294967295)
    router_id: ipaddress.IPv4Address
    address: ipaddress.IPv6Address  # configured on its loopback, inside one of its routes: ping target
    routes: list[UpstreamRoute] = Field(min_length=1)

    @model_validator(mode="after")
    def _address_is_routed(self) -> UpstreamSpec:
        if not any(self.address in r.prefix for r in self.routes):
            raise ValueError(f"upstream address {self.address} is not inside any of its routes")
        return self


class GatewaySpec(_Model):
    """The lab's gateway: listen address and the lease policy written into its config file."""

    listen: str = "127.0.0.1:0"  # port 0: a free port chosen at the first ``lab up`` and kept
    prefix_pools: list[str] = Field(min_length=1)
    lease_length: int = Field(default=48, ge=1, le=128)
    asn_range: tuple[int, int]
    extra: dict[str, Any] = Field(default_factory=dict)  # passed through to the gateway config verbatim

    @field_validator("listen")
    @classmethod
    def _loopback_only(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            raise ValueError("gateway.listen must be 127.0.0.1:PORT (the lab gateway stays on loopback)")
        return v

    @property
    def host(self) -> str:
        """The listen host."""
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        """The configured port (0 = choose a free one)."""
        return int(self.listen.rpartition(":")[2])


class PolicySpec(_Model):
    """The route servers' import policy knobs (written into each ``rs.yaml``; see ``default.yaml``)."""

    # None: only the exact leased prefix; N: more-specifics inside a lease down to /N.
    max_more_specific_length: int | None = Field(default=None, ge=1, le=128)
    max_prefix: int = Field(default=100, ge=1)  # BGP import limit per user session
    max_as_path_length: int = Field(default=5, ge=1, le=255)
    max_communities: int = Field(default=5, ge=0)
    max_large_communities: int = Field(default=5, ge=0)


class Topology(_Model):
    """The whole lab (see ``default.yaml`` for the meaning of every field)."""

    prefix: str = Field(default="plab", pattern=PREFIX_PATTERN)
    underlay: ipaddress.IPv6Network | None = None  # None: a /64 of a ULA /48 derived from the prefix
    platform_asn: int = Field(default=64500, ge=1, le=4294967295)
    route_servers: list[RouteServerSpec] = Field(min_length=1)
    upstream: UpstreamSpec
    gateway: GatewaySpec
    agent_interval: float = Field(default=1.0, gt=0, le=3600)
    policy: PolicySpec = Field(default_factory=PolicySpec)

    @model_validator(mode="after")
    def _check(self) -> Topology:
        names = [rs.name for rs in self.route_servers]
        if len(set(names)) != len(names):
            raise ValueError("route server names must be unique")
        if any(n in RESERVED_SUFFIXES for n in names):
            raise ValueError(f"route servers cannot be named {' or '.join(RESERVED_SUFFIXES)}")
        ports = [rs.wireguard_port for rs in self.route_servers]
        if len(set(ports)) != len(ports):
            raise ValueError("route server WireGuard ports must be unique")
        more = self.policy.max_more_specific_length
        if more is not None and more < self.gateway.lease_length:
            raise ValueError(f"policy.max_more_specific_length ({more}) is shorter than the leases "
                             f"(/{self.gateway.lease_length}): use null for the exact leased prefix only")
        ula = ipaddress.IPv6Network("fc00::/7")
        if self.underlay is not None and (self.underlay.prefixlen != 64 or not self.underlay.subnet_of(ula)):
            raise ValueError("underlay must be a ULA /64 (fc00::/7)")
        return self

    def with_prefix(self, prefix: str | None) -> Topology:
        """A copy with another prefix (validated)."""
        if prefix is None or prefix == self.prefix:
            return self
        return Topology.model_validate({**self.model_dump(), "prefix": prefix})


def load_topology(path: Path | None = None, *, prefix: str | None = None) -> Topology:
    """Read and validate a topology file (the packaged default when ``path`` is None)."""
    source = path or DEFAULT_TOPOLOGY
    try:
        raw = yaml.safe_load(source.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read topology {source}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"topology {source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"topology {source} must be a mapping")
    try:
        topo = Topology.model_validate(raw)
        return topo.with_prefix(prefix)
    except ValidationError as exc:
        raise ConfigError(f"invalid topology {source}: {exc}") from exc


class Plan:
    """Every name and address derived from a topology, computed in one place."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        p = topo.prefix
        self.prefix = p
        digest = hashlib.sha256(f"peerlab-lab:{p}".encode()).digest()
        # A ULA /48 (fd + 40 bits) per prefix, so two labs never share host routes.
        site = ipaddress.IPv6Network((int.from_bytes(b"\xfd" + digest[:5], "big") << 80, 48))
        self.site = site
        self.underlay = topo.underlay or ipaddress.IPv6Network((int(site.network_address), 64))
        self.ixp_netns = f"{p}-ixp"
        self.upstream_netns = f"{p}-upstream"
        self.bridge = f"{p}-br"
        self.host_link = f"{p}-ul"  # the host's end on the underlay
        self.netns_link = f"{p}-ul"  # every namespace's end on the underlay (same name, other namespaces)
        for name in (self.bridge, self.host_link, self.port("host")):
            _check_ifname(name)

    # --- names ------------------------------------------------------------------------------------
    def rs_netns(self, rs: str) -> str:
        """The namespace of a route server."""
        return f"{self.prefix}-{rs}"

    def rs_wg_ifname(self, rs: str) -> str:
        """A route server's WireGuard interface (unique machine-wide: its UAPI socket path is global)."""
        return _check_ifname(f"{self.prefix}-{rs}")

    def user_netns(self, user: str) -> str:
        """The namespace of a user created with ``--netns``."""
        return f"{self.prefix}-{user}"

    def port(self, key: str) -> str:
        """The bridge-side end (in the ixp namespace) of a member's underlay veth."""
        return _check_ifname(f"{self.prefix}-p{key}")

    def member_mac(self, key: str) -> str:
        """A stable, locally administered MAC for a member's underlay interface."""
        raw = hashlib.sha256(f"peerlab-lab:{self.prefix}:{key}".encode()).digest()[:5]
        return ":".join(f"{b:02x}" for b in (0x02, *raw))

    def owns_netns(self, name: str) -> bool:
        """True for a namespace name of this lab."""
        return name.startswith(f"{self.prefix}-")

    # --- addresses --------------------------------------------------------------------------------
    def _underlay_host(self, n: int) -> ipaddress.IPv6Address:
        return self.underlay.network_address + n

    @property
    def host_address(self) -> ipaddress.IPv6Address:
        """The host namespace's underlay address."""
        return self._underlay_host(1)

    @property
    def upstream_address(self) -> ipaddress.IPv6Address:
        """The upstream's underlay address (its BGP sessions to the route servers)."""
        return self._underlay_host(2)

    def rs_index(self, rs: str) -> int:
        """1-based position of a route server in the topology."""
        return [r.name for r in self.topo.route_servers].index(rs) + 1

    def rs_underlay_address(self, rs: str) -> ipaddress.IPv6Address:
        """A route server's underlay address (BGP to the upstream, WireGuard endpoint)."""
        return self._underlay_host(0x10 + self.rs_index(rs))

    def user_underlay_address(self, index: int) -> ipaddress.IPv6Address:
        """The underlay address of the user namespace number ``index`` (1-based)."""
        return self._underlay_host(0x1000 + index)

    def rs_overlay_network(self, rs: str) -> ipaddress.IPv6Network:
        """The overlay /64 of a route server's WireGuard interface (users get addresses inside it)."""
        base = int(self.site.network_address)
        return ipaddress.IPv6Network((base + ((0x100 + self.rs_index(rs)) << 64), 64))

    def rs_overlay_address(self, rs: str) -> ipaddress.IPv6Address:
        """A route server's own overlay address (the users' BGP neighbor)."""
        return self.rs_overlay_network(rs).network_address + 1

    def rs_asn(self, rs: RouteServerSpec) -> int:
        """A route server's ASN."""
        return rs.asn or self.topo.platform_asn


def _check_ifname(name: str) -> str:
    if len(name) > IFNAME_MAX:
        raise ConfigError(
            f"interface name {name!r} is longer than {IFNAME_MAX} characters; use a shorter prefix"
        )
    return name


# --- state ------------------------------------------------------------------------------------------------


class ProcessRecord(BaseModel):
    """A daemon the lab started: enough to find it again and to be sure it is ours before signalling it."""

    model_config = ConfigDict(extra="ignore")

    pid: int
    argv: list[str]  # the daemon's own command line (after ``ip netns exec``)
    netns: str | None = None
    log: str


class UserRecord(BaseModel):
    """A user created by ``lab user add``."""

    model_config = ConfigDict(extra="ignore")

    name: str
    token_file: str
    netns: str | None = None
    index: int | None = None  # position on the underlay (user namespaces only)
    underlay_address: str | None = None


class LabState(BaseModel):
    """``state.json``: what ``lab up`` built, read by ``status``/``down``/``user add``."""

    model_config = ConfigDict(extra="ignore")

    prefix: str
    topology: dict[str, Any]
    gateway_url: str | None = None
    processes: dict[str, ProcessRecord] = Field(default_factory=dict)
    users: dict[str, UserRecord] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)  # parts whose code is not installed


def read_state(path: Path) -> LabState | None:
    """Read ``state.json`` (None when absent or unreadable: ``down`` must still work)."""
    try:
        return LabState.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def write_private(path: Path, text: str) -> None:
    """Write a file readable only by its owner (tokens, keys, the state), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_state(path: Path, state: LabState) -> None:
    """Write ``state.json`` (0600)."""
    write_private(path, json.dumps(state.model_dump(mode="json"), indent=2) + "\n")
