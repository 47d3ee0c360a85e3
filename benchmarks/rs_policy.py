"""Route-server policy at scale: render + validate + apply for 100, 1,000 and 10,000 users on one BIRD.

One route-server BIRD runs in a network namespace; user-side BIRDs (one namespace each) hold a few
REAL sessions (announcing their leases) that must never reset while the configuration grows, shrinks and
changes. Every apply is the agent's own path (render, atomic write, ``bird -p``, ``configure``, ``reload in``
of changed sessions). Needs root and bird. Usage::

    .venv/bin/python benchmarks/rs_policy.py [--sizes 100,1000,10000] [--real 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab.bird import BirdControl, BirdProcess  # noqa: E402
from lab.rsagent.agent import Agent  # noqa: E402
from lab.rsagent.render import build_plan, protocol_name, render_plan  # noqa: E402
from lab.rsagent.settings import OverlayNetwork, RouteServerSettings  # noqa: E402
from peerlab_tui.core import netns  # noqa: E402
from peerlab_tui.core.models import Mapping, MappingList, ReportedRoute, TunnelPeer, TunnelPeerList  # noqa: E402
from tests.support.netns import NetnsFactory  # noqa: E402

RS_ADDR = "fd00:100::1"


def user(i: int, *, shift: int = 0) -> tuple[Mapping, TunnelPeer]:
    """User i: ASN 4200000000+i, one /56 lease (moved by ``shift`` to simulate a lease change)."""
    h = f"{i:016x}"
    j = i + shift
    lease = f"2001:db8:{0x100 + j // 256:x}:{(j % 256) << 8:x}::/56"
    return (Mapping(user_hash=h, user_id=f"user{i}", asn=4200000000 + i, prefixes=[lease]),
            TunnelPeer(user_hash=h, public_key=base64.b64encode(i.to_bytes(32, "big")).decode(),
                       addresses=[f"fd00:100::{0x100 + i:x}/64"]))


class Source:
    """The gateway's answers, set by the benchmark."""

    def __init__(self) -> None:
        self.maps: list[Mapping] = []
        self.tuns: list[TunnelPeer] = []

    def set(self, n: int, *, changed: int = 0) -> None:
        pairs = [user(i, shift=50000 if i < changed else 0) for i in range(n)]
        self.maps, self.tuns = [m for m, _ in pairs], [t for _, t in pairs]

    async def mappings(self, etag: str | None) -> tuple[MappingList | None, str | None]:
        return MappingList(mappings=self.maps), None

    async def tunnels(self) -> TunnelPeerList:
        return TunnelPeerList(peers=self.tuns)

    async def report_routes(self, rs_name: str, routes: list[ReportedRoute]) -> None:
        return None


def user_side_config(i: int) -> str:
    """A user-side BIRD holding user i's session, announcing its lease."""
    m, t = user(i)
    addr = t.addresses[0].split("/")[0]
    return (f"router id 10.255.1.{i + 1};\nprotocol device {{}}\n"
            f"protocol static st {{ ipv6; route {m.prefixes[0]} unreachable; }}\n"
            f"protocol bgp to_rs {{ local as {m.asn}; neighbor {RS_ADDR} as 64500; source address {addr}; "
            f"connect delay time 1; ipv6 {{ import none; export all; }}; }}\n")


def main() -> int:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--real", type=int, default=3, help="real, established sessions watched for resets")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = RouteServerSettings(
        name="rs1", asn=64500, router_id="10.255.0.1",
        overlay=[OverlayNetwork(network="fd00:100::/64", address=RS_ADDR)],
        pools=["2001:db8:100::/40"], platform_prefixes=["2001:db8:ff00::/40"], max_prefix=10)
    factory = NetnsFactory("bench")
    rows: list[tuple[str, int, float, float, float, float, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="rsbench") as tmpdir:
        tmp = Path(tmpdir)
        procs: list[BirdProcess] = []
        try:
            rs_ns, br = factory.create("rs"), factory.unique("br")
            netns.create_bridge(br, netns=rs_ns)
            netns.add_address(br, f"{RS_ADDR}/64", netns=rs_ns)
            conf_dir = tmp / "rs"
            conf_dir.mkdir()
            (conf_dir / "bird.conf").write_text(render_plan(build_plan(settings, [], [])))
            rs = BirdProcess(conf_dir / "bird.conf", tmp / "rs.ctl", netns=rs_ns, log_path=tmp / "rs.log")
            procs.append(rs.start())
            for i in range(args.real):  # one namespace and BIRD per real user, as in the lab
                us_ns, a, b = factory.create("us"), factory.unique("a"), factory.unique("b")
                netns.create_veth(a, b, netns_a=rs_ns, netns_b=us_ns)
                netns.attach_to_bridge(a, br, netns=rs_ns)
                netns.add_address(b, user(i)[1].addresses[0], netns=us_ns)
                (tmp / f"user{i}.conf").write_text(user_side_config(i))
                procs.append(BirdProcess(tmp / f"user{i}.conf", tmp / f"user{i}.ctl", netns=us_ns,
                                         log_path=tmp / f"user{i}.log").start())
            ctl = BirdControl(rs.socket_path, timeout=300)
            source = Source()
            agent = Agent(settings, source, ctl, conf_dir, bird_binary="bird")
            real = [protocol_name(user(i)[0].user_hash, user(i)[0].asn) for i in range(args.real)]

            def sessions() -> dict[str, str]:
                return {p.name: p.since for p in ctl.show_protocols()
                        if p.name in real and p.info.startswith("Established")}

            # Establish the real sessions first (only the real users), then measure every transition.
            source.set(args.real)
            asyncio.run(agent.poll())
            agent.apply()
            deadline = time.monotonic() + 60
            while len(sessions()) < args.real:
                if time.monotonic() > deadline:
                    raise SystemExit(f"real sessions did not come up: {sorted(sessions())}")
                time.sleep(0.2)
            baseline = sessions()

            def measure(label: str, n: int, changed: int = 0) -> None:
                source.set(n, changed=changed)
                asyncio.run(agent.poll())
                t0 = time.perf_counter()
                result = agent.apply()
                total = time.perf_counter() - t0
                assert result.applied, result
                tm = result.timings
                now = sessions()
                if any(now.get(name) != since for name, since in baseline.items()):
                    time.sleep(1.0)  # a reset changes the since-time for good; a busy read does not
                    now = sessions()
                resets = sum(1 for name, since in baseline.items() if now.get(name) != since)
                if resets:
                    print(f"{label}: session reset? before {baseline} now {now}; state:",
                          [p for p in ctl.show_protocols() if p.name in real], file=sys.stderr)
                    for line in (tmp / "rs.log").read_text().splitlines():
                        if any(name in line for name in real):
                            print("  rs.log:", line, file=sys.stderr)
                rows.append((label, n, tm["render"], tm.get("validate", 0.0), tm["configure"] + tm["reload"],
                             total, resets, len(result.reloaded)))

            for n in sizes:
                measure(f"grow to {n}", n)
            big = max(sizes)
            measure(f"{big // 100} leases change", big, changed=big // 100)
            measure(f"shrink to {min(sizes)}", min(sizes))
            time.sleep(2)  # let BIRD settle: any late reset would show now
            final = sessions()
            late_resets = sum(1 for name, since in baseline.items() if final.get(name) != since)
        finally:
            for p in reversed(procs):
                p.stop()
            factory.cleanup()
    print(f"{'transition':<22}{'users':>7}{'render s':>10}{'bird -p s':>11}{'configure+reload s':>20}"
          f"{'apply total s':>15}{'resets':>8}{'reload in':>11}")
    for label, n, r, v, c, tot, resets, rel in rows:
        print(f"{label:<22}{n:>7}{r:>10.3f}{v:>11.3f}{c:>20.3f}{tot:>15.3f}{resets:>8}{rel:>11}")
    print(f"real sessions watched: {args.real}; resets after settling: {late_resets}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
