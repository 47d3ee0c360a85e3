"""Helpers of the route-server agent tests: settings, a user-side BIRD that announces crafted routes, and a
route-server BIRD in its own namespace joined to the user's by a veth pair."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.bird import BirdControl, BirdProcess
from lab.rsagent.render import render_config
from lab.rsagent.settings import OverlayNetwork, RouteServerSettings
from peerlab_tui.core import netns
from peerlab_tui.core.models import Mapping, MappingList, ReportedRoute, TunnelPeer, TunnelPeerList
from tests.support.netns import NetnsFactory
from tests.support.requirements import require_binary, require_root

RS_ASN = 64500
OVERLAY_NET = "fd00:100::/64"
RS_ADDR = "fd00:100::1"
WAIT = 30.0  # generous: other helpers load the machine


def make_settings(**overrides: Any) -> RouteServerSettings:
    """Settings of a test route server (overlay fd00:100::/64, pools in 2001:db8:100::/40)."""
    values: dict[str, Any] = {
        "name": "rs1",
        "asn": RS_ASN,
        "router_id": "10.255.0.1",
        "overlay": [OverlayNetwork(network=OVERLAY_NET, address=RS_ADDR)],
        "platform_prefixes": ["2001:db8:ff00::/40"],
        "pools": ["2001:db8:100::/40", "2001:db8:1000::/40"],
        "kernel_export": False,
    }
    values.update(overrides)
    return RouteServerSettings(**values)


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Announce:
    """A route the user-side BIRD announces, with the attributes it forces."""

    prefix: str
    path: Sequence[int]
    communities: int = 0
    large_communities: int = 0


def user_bird_config(asn: int, local: str, neighbor: str, announces: Sequence[Announce]) -> str:
    """A user-side BIRD announcing ``announces`` verbatim (``rs client``: it does not prepend its own AS)."""
    statics = "\n".join(f"  route {a.prefix} unreachable;" for a in announces)
    cases = []
    for a in announces:
        stmts = [f"bgp_path.prepend({asn_});" for asn_ in reversed(a.path)]
        stmts += [f"bgp_community.add((64999, {i}));" for i in range(a.communities)]
        stmts += [f"bgp_large_community.add(({asn}, 1, {i}));" for i in range(a.large_communities)]
        cases.append(f"  if net = {a.prefix} then {{ {' '.join(stmts)} }}")
    return f"""log stderr all;
router id 10.255.1.1;
protocol device {{}}
protocol static user_routes {{
  ipv6;
{statics}
}}
filter user_out
{{
{chr(10).join(cases)}
  accept;
}}
protocol bgp to_rs {{
  local as {asn};
  neighbor {neighbor} as {RS_ASN};
  source address {local};
  connect delay time 1;
  rs client;
  ipv6 {{ import all; export filter user_out; }};
}}
"""


@dataclass
class FakeGateway:
    """An in-memory stand-in for the service API (used where the real gateway adds nothing)."""

    mapping_list: list[Mapping] = field(default_factory=list)
    tunnel_list: list[TunnelPeer] = field(default_factory=list)
    reports: list[list[ReportedRoute]] = field(default_factory=list)
    polls: int = 0

    def etag(self) -> str:
        return str(hash(MappingList(mappings=self.mapping_list).model_dump_json()))

    async def mappings(self, etag: str | None) -> tuple[MappingList | None, str | None]:
        self.polls += 1
        current = self.etag()
        if etag == current:
            return None, etag
        return MappingList(mappings=list(self.mapping_list)), current

    async def tunnels(self) -> TunnelPeerList:
        return TunnelPeerList(peers=list(self.tunnel_list))

    async def report_routes(self, rs_name: str, routes: list[ReportedRoute]) -> None:
        self.reports.append(list(routes))


class RsLab:
    """A route-server BIRD in one namespace and user-side BIRDs in others, each on its own veth."""

    def __init__(self, factory: NetnsFactory, workdir: Path, settings: RouteServerSettings) -> None:
        self.factory = factory
        self.workdir = workdir
        self.settings = settings
        self.rs_ns = factory.create("rs")
        self.config_dir = workdir / "rs"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "bird.conf").write_text(render_config(settings, [], []))
        self.rs_log = self.config_dir / "bird.log"
        self.rs = BirdProcess(self.config_dir / "bird.conf", workdir / f"{self.rs_ns}.ctl", netns=self.rs_ns,
                              log_path=self.rs_log)
        self.users: dict[str, BirdProcess] = {}
        # A bridge stands in for the WireGuard overlay: one /64, the route server owns one address on it.
        self.bridge = factory.unique("br")
        netns.create_bridge(self.bridge, netns=self.rs_ns)
        netns.add_address(self.bridge, f"{RS_ADDR}/64", netns=self.rs_ns)
        self.rs.start()
        self.control = BirdControl(self.rs.socket_path)

    def add_user(self, name: str, asn: int, address: str, announces: Sequence[Announce]) -> BirdProcess:
        """A user namespace with ``address`` on a veth to the route server, running a BIRD that announces."""
        return self.add_node(name, address, user_bird_config(asn, address, RS_ADDR, announces))

    def add_node(self, name: str, address: str, config: str) -> BirdProcess:
        """A namespace with ``address`` on the route server's segment, running BIRD with ``config``."""
        ns = self.factory.create("us")
        if_rs, if_user = self.factory.unique("r"), self.factory.unique("u")
        netns.create_veth(if_rs, if_user, netns_a=self.rs_ns, netns_b=ns)
        netns.attach_to_bridge(if_rs, self.bridge, netns=self.rs_ns)
        netns.add_address(if_user, f"{address}/64", netns=ns)
        conf = self.workdir / f"user-{name}.conf"
        conf.write_text(config)
        proc = BirdProcess(conf, self.workdir / f"{ns}.ctl", netns=ns,
                           log_path=self.workdir / f"user-{name}.log")
        proc.start()
        self.users[name] = proc
        return proc

    def reannounce(self, name: str, asn: int, address: str, announces: Sequence[Announce]) -> None:
        """Change what a user announces (reconfigure the user-side BIRD)."""
        proc = self.users[name]
        proc.config.write_text(user_bird_config(asn, address, RS_ADDR, announces))
        with BirdControl(proc.socket_path) as ctl:
            ctl.configure()

    def established(self, protocol: str) -> bool:
        """True when the route server's session is up."""
        return any(p.name == protocol and p.info.startswith("Established")
                   for p in self.control.show_protocols())

    def since(self) -> dict[str, str]:
        """Since-time of every BGP session (changes on any reset)."""
        return {p.name: p.since for p in self.control.show_protocols() if p.proto == "BGP"}

    def rejections(self) -> dict[tuple[str, str], str]:
        """The LAST rule BIRD's filter logged per (protocol, prefix)."""
        out: dict[tuple[str, str], str] = {}
        text = self.rs_log.read_text(errors="replace") if self.rs_log.exists() else ""
        for m in re.finditer(r"peerlab-rs reject (\S+) (\S+) rule=(\w+)", text):
            out[(m.group(1), m.group(2))] = m.group(3)
        return out

    def close(self) -> None:
        """Stop every BIRD."""
        self.control.close()
        for proc in self.users.values():
            proc.stop()
        self.rs.stop()


@pytest.fixture
def bird_bin() -> str:
    """Path of the bird binary (fails in CI when missing)."""
    return require_binary("bird")["bird"]


@contextlib.contextmanager
def rs_lab(tag: str, workdir: Path, settings: RouteServerSettings) -> Iterator[RsLab]:
    """An :class:`RsLab` that cleans up its processes and namespaces."""
    require_root()
    require_binary("bird", "ip")
    factory = NetnsFactory(tag)
    lab = None
    try:
        lab = RsLab(factory, workdir, settings)
        yield lab
    finally:
        if lab is not None:
            lab.close()
        factory.cleanup()
