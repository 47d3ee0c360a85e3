"""A two-namespace lab for the speaker: BIRD 2 playing two route servers, our Speaker (ExaBGP) in the other.

``rs`` namespace: BIRD with two BGP protocols, ``rs1`` (AS 64500, fd..::1 <-> speaker fd..::2) and ``rs2``
(AS 64501, fd..::11 <-> speaker fd..::12). ``rs2`` rejects routes tagged 64501:666 (kept as filtered, so the
refusal is visible). Both export two static routes with communities; nothing learned from the speaker is
exported back. The lab is shared by a module; each test starts its own Speaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lab.topology.procs import is_running
from peerlab_tui.core import netns
from peerlab_tui.core.bgp import NeighborConfig, SessionState, Speaker, SpeakerConfig
from peerlab_tui.core.models import Lease
from tests.support.netns import NetnsFactory
from tests.support.requirements import require_binary, require_root

USER_ASN = 4200000123
LEASED = ["2001:db8:100::/48", "2001:db8:101::/48", "2001:db8:102::/48", "2001:db8:103::/48",
          "2001:db8:104::/48", "2001:db8:105::/48", "2001:db8:106::/48", "2001:db8:107::/48"]
STATIC_ROUTES = {
    "2001:db8:f00::/48": {"communities": ["64500:10"], "large_communities": ["64500:1:2"]},
    "2001:db8:f01::/48": {"communities": ["64500:20", "64500:21"], "large_communities": []},
}
REJECT_COMMUNITY = "64501:666"

BIRD_CONF = """
router id 192.0.2.1;
log "{log}" all;
protocol device {{ }}
protocol static peers_static {{
  ipv6;
  route 2001:db8:f00::/48 unreachable {{
    bgp_community.add((64500,10)); bgp_large_community.add((64500,1,2));
  }};
  route 2001:db8:f01::/48 unreachable {{
    bgp_community.add((64500,20)); bgp_community.add((64500,21));
    bgp_path = prepend(prepend(+empty+, 64511), 64510); bgp_med = 33;
  }};
}}
template bgp rsclient {{
  rs client;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 2;
  hold time 90;
}}
protocol bgp rs1 from rsclient {{
  local {p}::1 as 64500;
  neighbor {p}::2 as {asn};
  ipv6 {{ import all; export where source = RTS_STATIC; }};
}}
protocol bgp rs2 from rsclient {{
  local {p}::11 as 64501;
  neighbor {p}::12 as {asn};
  ipv6 {{
    import keep filtered on;
    import filter {{ if (64501, 666) ~ bgp_community then reject; accept; }};
    export where source = RTS_STATIC;
  }};
}}
"""


@dataclass
class BirdRoute:
    """A route as BIRD shows it (``show route all``)."""

    prefix: str
    as_path: list[int]
    next_hop: str | None
    med: int | None
    communities: list[str]
    large_communities: list[str]


def parse_show_route(text: str) -> dict[str, BirdRoute]:
    """Parse ``birdc show route all`` into prefix -> route (one route per prefix: we ask per protocol)."""
    routes: dict[str, BirdRoute] = {}
    current: BirdRoute | None = None
    for line in text.splitlines():
        head = re.match(r"^([0-9a-f:]+/\d+)\s+unicast", line)
        if head:
            current = BirdRoute(head.group(1), [], None, None, [], [])
            routes[current.prefix] = current
            continue
        if current is None:
            continue
        stripped = line.strip()
        key, _, value = stripped.partition(": ")
        if key == "BGP.as_path":
            current.as_path = [int(a) for a in value.split()]
        elif key == "BGP.next_hop":
            current.next_hop = value.split()[0]
        elif key == "BGP.med":
            current.med = int(value)
        elif key == "BGP.community":
            current.communities = [f"{a}:{b}" for a, b in re.findall(r"\((\d+),(\d+)\)", value)]
        elif key == "BGP.large_community":
            current.large_communities = [f"{a}:{b}:{c}" for a, b, c in
                                         re.findall(r"\((\d+), (\d+), (\d+)\)", value)]
    return routes


@dataclass
class BgpLab:
    """The shared lab: namespaces, BIRD and the speaker's neighbor configuration."""

    rs_ns: str
    speaker_ns: str
    prefix: str  # the /64 of the link, without the trailing "::"
    bird_socket: str
    bird_log: Path

    def birdc(self, *args: str) -> str:
        """Run a birdc command and return its output."""
        out = subprocess.run(["birdc", "-s", self.bird_socket, *args], capture_output=True, text=True,
                             timeout=30, check=True)
        return out.stdout

    def routes(self, protocol: str, *, filtered: bool = False) -> dict[str, BirdRoute]:
        """Routes BIRD has from one protocol (``filtered``: those its import filter rejected)."""
        args = ["show", "route", "all", "protocol", protocol]
        if filtered:
            args.insert(2, "filtered")
        return parse_show_route(self.birdc(*args))

    def leased_routes(self, protocol: str) -> dict[str, BirdRoute]:
        """Routes from ``protocol`` inside the test leases (what the speaker announced)."""
        return {p: r for p, r in self.routes(protocol).items() if p.startswith("2001:db8:1")}

    def config(self, **extra: Any) -> SpeakerConfig:
        """The speaker's configuration: one neighbor per BIRD protocol."""
        return SpeakerConfig(
            asn=USER_ASN, router_id="10.0.0.123", netns=self.speaker_ns,
            neighbors=[
                NeighborConfig(name="rs1", address=f"{self.prefix}::1", asn=64500,
                               local_address=f"{self.prefix}::2"),
                NeighborConfig(name="rs2", address=f"{self.prefix}::11", asn=64501,
                               local_address=f"{self.prefix}::12"),
            ], **extra)


def leases(*, ends_in: float = 3600.0, prefixes: list[str] | None = None) -> list[Lease]:
    """Active leases of the test user."""
    now = datetime.now(UTC)
    return [Lease(prefix=p, start_time=now - timedelta(minutes=5), end_time=now + timedelta(seconds=ends_in))
            for p in (prefixes or LEASED)]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll a synchronous predicate."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


async def async_wait_until(predicate: Callable[[], bool], limit: float = 30.0,
                           what: str = "condition") -> None:
    """Poll a predicate without blocking the event loop (the speaker runs on it)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        await asyncio.sleep(0.1)


async def established(speaker: Speaker, limit: float = 30.0) -> None:
    """Wait until every session of the speaker is established."""
    await async_wait_until(lambda: all(s.state is SessionState.ESTABLISHED for s in speaker.sessions()),
                           limit, "sessions established")


@pytest.fixture(scope="module")
def bgp_lab() -> Iterator[BgpLab]:
    """Two namespaces joined by a veth, BIRD in one (two route-server protocols)."""
    require_root()
    require_binary("ip", "bird", "birdc")
    factory = NetnsFactory("bgp")
    sockdir = Path(tempfile.mkdtemp(prefix="plbgp"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        rs_ns = factory.create("rs")
        sp_ns = factory.create("sp")
        if_rs, if_sp = factory.unique("vr"), factory.unique("vs")
        netns.create_veth(if_rs, if_sp, netns_a=rs_ns, netns_b=sp_ns)
        # Canonical text (no leading zeros, no zero groups) as BIRD and ExaBGP print it: tests compare them.
        g1, g2 = secrets.randbelow(65535) + 1, secrets.randbelow(65535) + 1
        prefix = f"fd{secrets.randbelow(256):02x}:{g1:x}:{g2:x}"
        netns.add_address(if_rs, f"{prefix}::1/64", netns=rs_ns)
        netns.add_address(if_rs, f"{prefix}::11/64", netns=rs_ns)
        netns.add_address(if_sp, f"{prefix}::2/64", netns=sp_ns)
        netns.add_address(if_sp, f"{prefix}::12/64", netns=sp_ns)
        conf = sockdir / "bird.conf"
        log = sockdir / "bird.log"
        conf.write_text(BIRD_CONF.format(p=prefix, asn=USER_ASN, log=log))
        sock = str(sockdir / "bird.ctl")
        proc = subprocess.Popen(["ip", "netns", "exec", rs_ns, "bird", "-f", "-c", str(conf), "-s", sock],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab = BgpLab(rs_ns, sp_ns, prefix, sock, log)
        wait_until(lambda: Path(sock).exists(), 30, "BIRD's control socket")
        yield lab
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        factory.cleanup()
        shutil.rmtree(sockdir, ignore_errors=True)


SpeakerFactory = Callable[..., Awaitable[Speaker]]


@pytest.fixture
async def make_speaker(bgp_lab: BgpLab, tmp_path: Path) -> AsyncIterator[SpeakerFactory]:
    """Start speakers against the lab (stopped at the end; stopping closes the sessions cleanly)."""
    started: list[Speaker] = []

    async def make(*, lease_list: list[Lease] | None = None, wait_established: bool = True,
                   state_name: str | None = None, **kwargs: Any) -> Speaker:
        state = tmp_path / (state_name or f"state{len(started)}")
        speaker = Speaker(bgp_lab.config(), state, leases=lease_list if lease_list is not None else leases(),
                          **kwargs)
        started.append(speaker)
        await speaker.start()
        if wait_established:
            await established(speaker)
        return speaker

    yield make
    await stop_speakers(started)
    # The sessions must be gone from BIRD before the next test's speaker connects.
    wait_until(lambda: not bgp_lab.leased_routes("rs1") and not bgp_lab.leased_routes("rs2"), 30,
               "BIRD to drop the stopped speaker's routes")


async def stop_speakers(speakers: list[Speaker]) -> None:
    """Stop the speakers; an ExaBGP that survives its speaker's stop is killed by its recorded PID, and the
    test fails (nothing of ours may be left running)."""
    pids = [pid for pid in (sp.pid for sp in speakers) if pid is not None]
    for speaker in speakers:
        with contextlib.suppress(Exception):
            await speaker.stop()
    leaked = [pid for pid in pids if is_running(pid)]
    for pid in leaked:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # ExaBGP leads its own session: its relay goes with it
    assert not leaked, f"ExaBGP survived its speaker's stop and was killed by PID: {leaked}"
