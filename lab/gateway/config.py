"""Gateway settings: defaults < YAML config file < ``PEERLAB_GW_*`` environment < command-line options.

Every value is validated here, once, with an error that names the setting and says what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peerlab_tui.core.errors import ConfigError

ENV_PREFIX = "PEERLAB_GW_"

# Private-use ASN ranges (RFC 6996). 65535 and 4294967295 are reserved and never handed out.
PRIVATE_ASN_RANGES: tuple[tuple[int, int], ...] = ((64512, 65534), (4200000000, 4294967294))

DEFAULT_POOL = "2001:db8:1000::/40"  # RFC 3849 documentation space
MAX_LEASE_LENGTH = 64


def state_dir() -> Path:
    """The user's state directory: ``PEERLAB_STATE_DIR``, else ``$XDG_STATE_HOME/peerlab``."""
    if os.environ.get("PEERLAB_STATE_DIR"):
        return Path(os.environ["PEERLAB_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "peerlab"


def default_db_url() -> str:
    """SQLite file in the state directory."""
    return f"sqlite:///{state_dir() / 'gateway.sqlite'}"


@dataclass(frozen=True)
class RouteServerConfig:
    """One IXP route server users peer with through the overlay."""

    name: str
    public_key: str
    endpoint: str
    overlay_network: ipaddress.IPv6Network
    overlay_address: ipaddress.IPv6Address
    asn: int


@dataclass(frozen=True)
class GatewayConfig:
    """Validated settings of the gateway service."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    db: str = field(default_factory=default_db_url)
    prefix_pools: tuple[ipaddress.IPv6Network, ...] = (ipaddress.IPv6Network(DEFAULT_POOL),)
    lease_length: int = 48
    asn_first: int = 65000
    asn_last: int = 65534
    max_leases: int = 1
    min_hours: int = 1
    max_hours: int = 24
    max_lifetime_hours: int = 72
    quarantine_seconds: int = 600
    route_servers: tuple[RouteServerConfig, ...] = ()
    clock_file: Path | None = None

    @property
    def listen(self) -> str:
        """``HOST:PORT`` as given (IPv6 hosts in brackets)."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    def pool_capacity(self) -> int:
        """How many leases all pools hold together."""
        return sum(1 << (self.lease_length - p.prefixlen) for p in self.prefix_pools)


# --- parsing of individual settings ------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    text = str(value).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen: {value!r} is not HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)")
    return host, int(port)


def parse_pool(value: str) -> ipaddress.IPv6Network:
    """A prefix pool: an IPv6 network in CIDR form with no host bits set."""
    try:
        return ipaddress.IPv6Network(str(value).strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"prefix_pools: {value!r} is not an IPv6 prefix in CIDR form: {exc}") from exc


def parse_asn_range(value: str) -> tuple[int, int]:
    """``FIRST-LAST`` within one private ASN range."""
    first_s, sep, last_s = str(value).strip().partition("-")
    if not sep or not first_s.strip().isdigit() or not last_s.strip().isdigit():
        raise ConfigError(f"asn_range: {value!r} is not FIRST-LAST (e.g. 65000-65534)")
    first, last = int(first_s), int(last_s)
    if first > last:
        raise ConfigError(f"asn_range: {value!r} starts after it ends")
    if not any(lo <= first and last <= hi for lo, hi in PRIVATE_ASN_RANGES):
        allowed = " or ".join(f"{lo}-{hi}" for lo, hi in PRIVATE_ASN_RANGES)
        raise ConfigError(f"asn_range: {value!r} must lie within one private ASN range ({allowed})")
    return first, last


def _int(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not an integer")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not an integer") from None
    if number < minimum:
        raise ConfigError(f"{name}: {number} is below the minimum of {minimum}")
    return number


def parse_route_server(value: str | Mapping[str, Any]) -> RouteServerConfig:
    """A route server from ``NAME,PUBKEY,ENDPOINT,OVERLAY_NET,OVERLAY_ADDR,ASN`` or a mapping."""
    keys = ("name", "public_key", "endpoint", "overlay_network", "overlay_address", "asn")
    if isinstance(value, Mapping):
        missing = [k for k in keys if k not in value]
        if missing:
            raise ConfigError(f"route_servers: entry {dict(value)!r} lacks {', '.join(missing)}")
        raw = {k: str(value[k]) for k in keys}
    else:
        parts = [p.strip() for p in str(value).split(",")]
        if len(parts) != len(keys):
            raise ConfigError(
                f"route server {value!r}: expected NAME,PUBKEY,ENDPOINT,OVERLAY_NET,OVERLAY_ADDR,ASN"
            )
        raw = dict(zip(keys, parts, strict=True))
    name = raw["name"]
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"route server name {name!r}: use letters, digits, '-', '_' or '.'")
    from peerlab_tui.core.models import TunnelRequest

    try:
        TunnelRequest(public_key=raw["public_key"])
    except ValueError as exc:
        raise ConfigError(f"route server {name}: public_key is not a base64 WireGuard key") from exc
    try:
        net = ipaddress.IPv6Network(raw["overlay_network"], strict=True)
    except ValueError as exc:
        raise ConfigError(f"route server {name}: overlay_network: {exc}") from exc
    if net.prefixlen != 64:
        raise ConfigError(f"route server {name}: overlay_network {net} must be an IPv6 /64")
    try:
        addr = ipaddress.IPv6Address(raw["overlay_address"].split("/")[0])
    except ValueError as exc:
        raise ConfigError(f"route server {name}: overlay_address: {exc}") from exc
    if addr not in net:
        raise ConfigError(f"route server {name}: overlay_address {addr} is outside {net}")
    if int(addr) - int(net.network_address) >= 0x100:
        raise ConfigError(f"route server {name}: overlay_address must be below {net.network_address + 0x100}")
    if not raw["endpoint"] or ":" not in raw["endpoint"]:
        raise ConfigError(f"route server {name}: endpoint {raw['endpoint']!r} is not HOST:PORT")
    return RouteServerConfig(
        name=name,
        public_key=raw["public_key"],
        endpoint=raw["endpoint"],
        overlay_network=net,
        overlay_address=addr,
        asn=_int(f"route server {name}: asn", raw["asn"], 1),
    )


# --- layering ----------------------------------------------------------------------------------------------

# Settings a user can give, with their environment form. List-valued ones are comma-separated in the
# environment (route servers: ';'-separated, each with comma-separated fields).
SETTINGS = (
    "listen",
    "db",
    "prefix_pools",
    "lease_length",
    "asn_range",
    "max_leases",
    "min_hours",
    "max_hours",
    "max_lifetime_hours",
    "quarantine_seconds",
    "route_servers",
    "clock_file",
)
LIST_SETTINGS = {"prefix_pools", "route_servers"}


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file whose keys are the settings in snake_case."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of settings")
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(map(str, unknown))}")
    for key in LIST_SETTINGS & set(data):
        if isinstance(data[key], str):
            data[key] = [data[key]]
        if not isinstance(data[key], list):
            raise ConfigError(f"config file {path}: {key} must be a list")
    return data


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Settings from ``PEERLAB_GW_<SETTING>`` variables."""
    out: dict[str, Any] = {}
    for key in SETTINGS:
        value = env.get(ENV_PREFIX + key.upper())
        if value is None or value == "":
            continue
        if key == "prefix_pools":
            out[key] = [v for v in (p.strip() for p in value.split(",")) if v]
        elif key == "route_servers":
            out[key] = [v for v in (p.strip() for p in value.split(";")) if v]
        else:
            out[key] = value
    return out


def build_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> GatewayConfig:
    """Merge the layers (CLI > env > file > defaults) and validate the result.

    ``cli`` holds only options the user gave (None or empty lists mean "not given"). The config file is
    ``config_file``, else ``PEERLAB_GW_CONFIG`` from ``env``.
    """
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    file_path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if file_path is not None:
        merged.update(read_config_file(file_path))
    merged.update(read_env(env))
    for key, value in (cli or {}).items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if key not in SETTINGS:
            raise ConfigError(f"unknown setting {key!r}")
        merged[key] = list(value) if isinstance(value, list | tuple) else value
    return validate(merged)


def validate(values: Mapping[str, Any]) -> GatewayConfig:
    """Turn raw setting values into a checked :class:`GatewayConfig`."""
    defaults = GatewayConfig()
    kwargs: dict[str, Any] = {}
    if "listen" in values:
        kwargs["listen_host"], kwargs["listen_port"] = parse_listen(values["listen"])
    if "db" in values:
        db = str(values["db"]).strip()
        if "://" not in db:
            raise ConfigError(f"db: {db!r} is not a database URL (sqlite:///PATH or postgresql://...)")
        kwargs["db"] = db
    pools = (
        tuple(parse_pool(p) for p in values["prefix_pools"])
        if "prefix_pools" in values
        else defaults.prefix_pools
    )
    if not pools:
        raise ConfigError("prefix_pools: at least one pool is needed")
    for i, a in enumerate(pools):
        for b in pools[i + 1 :]:
            if a.overlaps(b):
                raise ConfigError(f"prefix_pools: {a} and {b} overlap")
    kwargs["prefix_pools"] = pools
    length = _int("lease_length", values.get("lease_length", defaults.lease_length), 1)
    if length > MAX_LEASE_LENGTH:
        raise ConfigError(f"lease_length: /{length} is longer than /{MAX_LEASE_LENGTH}")
    for p in pools:
        if length < p.prefixlen:
            raise ConfigError(f"lease_length: /{length} leases do not fit in pool {p} (/{p.prefixlen})")
    kwargs["lease_length"] = length
    if "asn_range" in values:
        kwargs["asn_first"], kwargs["asn_last"] = parse_asn_range(values["asn_range"])
    for key in ("max_leases", "quarantine_seconds"):
        if key in values:
            kwargs[key] = _int(key, values[key], 0)
    for key in ("min_hours", "max_hours", "max_lifetime_hours"):
        if key in values:
            kwargs[key] = _int(key, values[key], 1)
    min_h = kwargs.get("min_hours", defaults.min_hours)
    max_h = kwargs.get("max_hours", defaults.max_hours)
    life = kwargs.get("max_lifetime_hours", defaults.max_lifetime_hours)
    if min_h > max_h:
        raise ConfigError(f"min_hours ({min_h}) is greater than max_hours ({max_h})")
    if life < max_h:
        raise ConfigError(f"max_lifetime_hours ({life}) is shorter than max_hours ({max_h})")
    if "route_servers" in values:
        rs = tuple(parse_route_server(v) for v in values["route_servers"] or [])
        names = [r.name for r in rs]
        if len(set(names)) != len(names):
            raise ConfigError("route_servers: names must be unique")
        kwargs["route_servers"] = rs
    if values.get("clock_file"):
        kwargs["clock_file"] = Path(str(values["clock_file"]))
    return GatewayConfig(**kwargs)
