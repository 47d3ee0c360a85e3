"""Static settings of one route server (``DIR/rs.yaml``), written by the deployer or the lab topology.

Example::

    name: rs1
    asn: 64500
    router_id: 10.255.0.1
    overlay:
      - network: fd00:100::/64
        address: fd00:100::1
    upstreams:
      - {name: transit, address: "2001:db8:ffff::1", asn: 64496, password: SECRET, ttl_security: true}
    platform_prefixes: ["2001:db8:ff00::/40"]
    pools: ["2001:db8:100::/40"]
    max_more_specific_length: null      # null: only the exact leased prefix
    max_prefix: 100
    max_as_path_length: 5
    max_communities: 5
    max_large_communities: 5
    wireguard_interface: wgrs1
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from peerlab_tui.core.errors import ConfigError

SETTINGS_FILE = "rs.yaml"

_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,30}$"


def _v6_net(value: str) -> str:
    try:
        return str(ipaddress.IPv6Network(str(value).strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv6 prefix (host bits must be zero): {exc}") from exc


def _v6_addr(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(str(value).strip()))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv6 address") from exc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OverlayNetwork(_Strict):
    """One overlay network of the route server: the users' tunnel addresses on it, and the RS's own."""

    network: str
    address: str

    @field_validator("network")
    @classmethod
    def _net(cls, v: str) -> str:
        return _v6_net(v)

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        return _v6_addr(v)

    @model_validator(mode="after")
    def _inside(self) -> OverlayNetwork:
        if ipaddress.IPv6Address(self.address) not in ipaddress.IPv6Network(self.network):
            raise ValueError(f"address {self.address} is not inside network {self.network}")
        return self


class Upstream(_Strict):
    """An upstream BGP neighbor (transit): it receives the users' accepted routes and sends its own."""

    name: str = Field(pattern=_NAME_RE)
    address: str
    asn: int = Field(ge=1, le=4294967295)
    source_address: str | None = None
    # TCP MD5 (RFC 2385) secret of the session; rs.yaml and bird.conf are then secrets (mode 0600).
    password: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._~+/=-]{8,80}$", repr=False)
    # GTSM (RFC 5082): only packets with TTL 255 are accepted, i.e. from a directly connected neighbor.
    ttl_security: bool = False

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        return _v6_addr(v)

    @field_validator("source_address")
    @classmethod
    def _src(cls, v: str | None) -> str | None:
        return None if v is None else _v6_addr(v)


class RouteServerSettings(_Strict):
    """Everything about one route server that does not come from the gateway."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    asn: int = Field(ge=1, le=4294967295)
    router_id: str
    overlay: list[OverlayNetwork] = Field(min_length=1)
    upstreams: list[Upstream] = Field(default_factory=list)
    platform_prefixes: list[str] = Field(default_factory=list)
    pools: list[str] = Field(default_factory=list)
    max_more_specific_length: int | None = Field(default=None, ge=1, le=128)
    max_prefix: int = Field(default=100, ge=1)
    max_as_path_length: int = Field(default=5, ge=1, le=255)
    max_communities: int = Field(default=5, ge=0)
    max_large_communities: int = Field(default=5, ge=0)
    wireguard_interface: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,15}$")
    # Users connect to the route server (RouteServerPeer.bgp_neighbor); passive sessions avoid thousands of
    # futile connection attempts towards users who are offline.
    passive_user_sessions: bool = True
    # Install the best BGP routes in the kernel: the route server also forwards the users' traffic.
    kernel_export: bool = True

    @field_validator("platform_prefixes", "pools")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        return [_v6_net(x) for x in v]

    @field_validator("router_id")
    @classmethod
    def _rid(cls, v: str) -> str:
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError as exc:
            raise ValueError(f"router_id {v!r} must be an IPv4 address (BIRD's router id)") from exc

    @model_validator(mode="after")
    def _consistent(self) -> RouteServerSettings:
        names = [u.name.replace("-", "_") for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ValueError("upstream names must be unique (a '-' counts as '_')")
        platform = [ipaddress.IPv6Network(p) for p in self.platform_prefixes]
        for pool in (ipaddress.IPv6Network(p) for p in self.pools):
            for plat in platform:
                if pool.overlaps(plat):
                    raise ValueError(f"pool {pool} overlaps the platform prefix {plat} (rejected space)")
        return self

    @property
    def bird_name(self) -> str:
        """The route server's name as a BIRD-safe token (for comments and descriptions)."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.name)


def load_settings(config_dir: Path | str) -> RouteServerSettings:
    """Read and validate ``DIR/rs.yaml``; raise :class:`ConfigError` naming the problem."""
    path = Path(config_dir) / SETTINGS_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist (the route server's settings)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    try:
        return RouteServerSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path} is invalid: {exc}") from exc


def write_settings(config_dir: Path | str, settings: RouteServerSettings) -> Path:
    """Write ``DIR/rs.yaml`` (used by the topology and tests)."""
    path = Path(config_dir) / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    return path
