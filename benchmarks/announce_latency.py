"""Announce latency, end to end on the embedded lab and speaker -> BIRD alone (needs root, bird, birdc).

Section 1, the embedded lab (the goal: < 0.5 s median, < 1 s p95): ``lab up`` with its own prefix (first and
second run timed), a user in its own namespace, a lease, the tunnel and the BGP daemon (a real process, as
``bgp up`` starts it), then N announcements of the lease, each a real change (a new MED), timed from the
``announce`` request to "accepted at every route server" as the looking glass (``GET /api/user/routes``, what
``peerlab-tui routes`` shows) reports it, with where the time goes: the speaker's ack, BGP until both BIRDs
hold the new route, and the rest (the rs-agent's detection and report, plus the gateway).

Section 2, speaker -> BIRD alone: two namespaces joined by a veth, BIRD in one, the Speaker (ExaBGP) in the
other: start to established, the ack latency of ``announce()``, announce/withdraw until BIRD shows the
change, and the time from killing ExaBGP to BIRD having the announcement back.

Run: ``.venv/bin/python benchmarks/announce_latency.py [--announcements 50] [--rounds 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from peerlab_tui.core import netns
from peerlab_tui.core.bgp import Announcement, NeighborConfig, SessionState, Speaker, SpeakerConfig
from peerlab_tui.core.models import Lease

ASN = 4200000999
PREFIX = "2001:db8:500::/48"
BIRD_CONF = """router id 192.0.2.9;
protocol device {{ }}
protocol bgp rs1 {{
  local {p}::1 as 64500; neighbor {p}::2 as {asn}; rs client;
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  ipv6 {{ import all; export none; }};
}}
"""


async def bird_med(sock: str) -> int | bool | None:
    """The MED BIRD has for PREFIX (None: no MED; False: no route)."""
    proc = await asyncio.create_subprocess_exec("birdc", "-s", sock, "show", "route", "all", PREFIX,
                                                stdout=asyncio.subprocess.PIPE)
    raw, _ = await asyncio.wait_for(proc.communicate(), 10)
    out = raw.decode()
    if "unicast" not in out:
        return False
    for line in out.splitlines():
        if "BGP.med:" in line:
            return int(line.split(":")[1])
    return None


async def until(pred: Callable[[], Awaitable[bool]], limit: float = 30.0) -> float:
    """Seconds until ``pred`` holds (polling every 2 ms)."""
    start = time.perf_counter()
    while not await pred():
        if time.perf_counter() - start > limit:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.002)
    return time.perf_counter() - start


def fmt(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):8.1f} ms  p95 {p95:8.1f} ms  (n={len(ms)})"


async def bench(rounds: int) -> None:
    """Section 2: the speaker against one BIRD, no lab."""
    tag = secrets.token_hex(3)
    rs_ns, sp_ns = f"bnr{tag}", f"bns{tag}"
    work = Path(tempfile.mkdtemp(prefix="plbench"))
    bird: asyncio.subprocess.Process | None = None
    speaker: Speaker | None = None
    try:
        for ns in (rs_ns, sp_ns):
            netns.create_netns(ns)
        netns.create_veth(f"bva{tag}", f"bvb{tag}", netns_a=rs_ns, netns_b=sp_ns)
        p = f"fd{secrets.randbelow(256):02x}:{secrets.randbelow(65535) + 1:x}:1"  # canonical text
        netns.add_address(f"bva{tag}", f"{p}::1/64", netns=rs_ns)
        netns.add_address(f"bvb{tag}", f"{p}::2/64", netns=sp_ns)
        (work / "bird.conf").write_text(BIRD_CONF.format(p=p, asn=ASN))
        sock = str(work / "bird.ctl")
        bird = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", rs_ns, "bird", "-f", "-c", str(work / "bird.conf"), "-s", sock,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

        async def has_socket() -> bool:
            return await asyncio.to_thread(Path(sock).exists)

        async def med_is(value: int | bool | None) -> bool:
            med = await bird_med(sock)
            return med is value if value is False else (med is not False and med == value)

        async def established() -> bool:
            return sp.sessions()[0].state is SessionState.ESTABLISHED

        await until(has_socket)
        now = datetime.now(UTC)
        config = SpeakerConfig(asn=ASN, router_id="10.9.9.9", netns=sp_ns, neighbors=[
            NeighborConfig(name="rs1", address=f"{p}::1", asn=64500, local_address=f"{p}::2")])
        speaker = Speaker(config, work / "state", backoff_initial=0.2, leases=[
            Lease(prefix=PREFIX, start_time=now - timedelta(minutes=1), end_time=now + timedelta(hours=1))])
        sp = speaker
        t0 = time.perf_counter()
        await speaker.start()
        await until(established)
        up_after = time.perf_counter() - t0

        acks, visible, gone = [], [], []
        for i in range(rounds):
            t = time.perf_counter()
            await speaker.announce(Announcement(prefix=PREFIX, med=i + 1))
            acks.append(time.perf_counter() - t)
            visible.append(acks[-1] + await until(functools.partial(med_is, i + 1)))
            t = time.perf_counter()
            await speaker.withdraw(PREFIX)
            gone.append(time.perf_counter() - t + await until(lambda: med_is(False)))

        await speaker.announce(Announcement(prefix=PREFIX, med=77))
        await until(lambda: med_is(77))
        pid = speaker.pid
        assert pid is not None
        t = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        await until(lambda: med_is(False))
        await until(lambda: med_is(77))
        restored = time.perf_counter() - t

        print(f"speaker start -> established        {up_after * 1000:8.1f} ms")
        print(f"announce() acknowledged by ExaBGP    {fmt(acks)}")
        print(f"announce() -> visible in BIRD        {fmt(visible)}")
        print(f"withdraw() -> gone from BIRD         {fmt(gone)}")
        print(f"kill -9 exabgp -> route back in BIRD {restored * 1000:8.1f} ms (backoff 0.2 s)")
    finally:
        if speaker is not None:
            await speaker.stop()
        if bird is not None:
            bird.terminate()
            await asyncio.wait_for(bird.wait(), 10)
        for ns in (sp_ns, rs_ns):
            for pid in netns.pids_in_netns(ns):
                os.kill(pid, signal.SIGKILL)
            netns.delete_netns(ns)
        shutil.rmtree(work, ignore_errors=True)


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * 0.95) - 1))]


def row(label: str, values: list[float]) -> str:
    """One table row: median, p95 and max in ms."""
    ms = [v * 1000 for v in values]
    return (f"  {label:<44} median {statistics.median(ms):7.1f} ms   p95 {p95(ms):7.1f} ms   "
            f"max {max(ms):7.1f} ms")


def bench_lab(announcements: int) -> None:
    """Section 1: announce -> accepted at every route server in the looking glass, on the embedded lab."""
    from lab.bird import BirdControl, BirdError
    from lab.topology.builder import Lab
    from lab.topology.models import load_topology
    from peerlab_tui._cli.bgp import build_spec, start_daemon, stop_daemon
    from peerlab_tui._cli.common import run_async
    from peerlab_tui.core.bgp.daemon import ControlClient, write_spec
    from peerlab_tui.core.gateway import GatewayClient
    from peerlab_tui.core.tunnel import TunnelManager

    prefix = f"b{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="pl-bench-"))
    lab = Lab(load_topology(None, prefix=prefix), work / "lab")
    user_state = work / "user"
    netns_name: str | None = None
    daemon_up = False
    try:
        t = time.perf_counter()
        summary = lab.up()
        first_up = time.perf_counter() - t
        t = time.perf_counter()
        lab.up()
        second_up = time.perf_counter() - t
        print(f"lab up (embedded lab, prefix {prefix}): first {first_up:.2f} s, second (idempotent) "
              f"{second_up:.2f} s")
        url = summary["gateway"]
        user = lab.add_user("bench", with_netns=True)
        token, netns_name = user["token"], user["netns"]
        rs_names = [rs.name for rs in lab.topo.route_servers]

        async def setup() -> tuple[int, str]:
            async with GatewayClient(url, token) as gw:
                asn = await gw.ensure_asn()
                lease = (await gw.request_prefix(2)).prefix
                manager = TunnelManager(gw, user_state, netns_name)
                await manager.up()
                await manager.wait_reachable(timeout=30)
                write_spec(user_state, await build_spec(gw, user_state, netns=netns_name, tunnel=True,
                                                        gateway_url=url, hold_time=90, safety={}))
                return asn, lease

        asn, lease = run_async(setup())
        start_daemon(user_state, {"PEERLAB_GATEWAY_URL": url, "PEERLAB_TOKEN": token})
        daemon_up = True
        control = ControlClient.for_state_dir(user_state)
        deadline = time.monotonic() + 60
        while True:
            status = run_async(control.request("status"))
            if all(s["state"] == "established" for s in status["sessions"]):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("sessions not established")
            time.sleep(0.1)
        birds = {rs: BirdControl(lab.rs_socket(rs), timeout=10) for rs in rs_names}

        def bird_has(rs: str, med: int) -> bool:
            try:
                routes = birds[rs].show_route(prefix=lease, table="master6")
            except BirdError:
                return False
            return any(r.med == med and r.as_path == [asn] for r in routes)

        async def measure() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {"total": [], "ack": [], "bgp": [], "agent": [], "get": []}
            async with GatewayClient(url, token) as gw:
                for i in range(announcements):
                    med = 1000 + i
                    # A random pause: otherwise each announcement follows the agents' last post in lock step
                    # and always waits a full watch interval (users do not announce in phase with the agent).
                    await asyncio.sleep(random.uniform(0.0, 0.3))
                    t0 = time.perf_counter()
                    await control.request("announce", announcement={"prefix": lease, "med": med})
                    ack = time.perf_counter() - t0
                    in_bird: float | None = None
                    while True:
                        if in_bird is None and all(bird_has(rs, med) for rs in rs_names):
                            in_bird = time.perf_counter() - t0
                        g0 = time.perf_counter()
                        verdicts = (await gw.routes()).routes
                        out["get"].append(time.perf_counter() - g0)
                        ok = {v.rs for v in verdicts if v.prefix == lease and v.state == "accepted"
                              and v.med == med}
                        if ok >= set(rs_names):
                            total = time.perf_counter() - t0
                            break
                        if time.perf_counter() - t0 > 30:
                            raise TimeoutError(f"announcement {i} not accepted after 30 s")
                        await asyncio.sleep(0.005)
                    in_bird = in_bird if in_bird is not None else total
                    out["total"].append(total)
                    out["ack"].append(ack)
                    out["bgp"].append(max(0.0, in_bird - ack))
                    out["agent"].append(max(0.0, total - in_bird))
            return out

        res = run_async(measure())
        n = len(res["total"])
        print(f"announce -> accepted at {' and '.join(rs_names)} in `routes` (looking glass), n={n} "
              "(each a new MED):")
        print(row("TOTAL announce -> routes shows accepted", res["total"]))
        print(row("  speaker: control request + ExaBGP ack", res["ack"]))
        print(row("  BGP: ack -> both BIRDs hold the new route", res["bgp"]))
        print(row("  agent detection + report + gateway", res["agent"]))
        print(row("  (gateway GET /api/user/routes, per request)", res["get"]))
        goal = statistics.median(res["total"]) < 0.5 and p95(res["total"]) < 1.0
        print(f"  goal (< 500 ms median, < 1000 ms p95): {'MET' if goal else 'NOT MET'}")
        t0 = time.perf_counter()
        run_async(control.request("withdraw", prefix=lease))

        async def gone() -> float:
            async with GatewayClient(url, token) as gw:
                while any(v.prefix == lease for v in (await gw.routes()).routes):  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            return time.perf_counter() - t0

        print(f"  withdraw -> gone from `routes`                 {run_async(gone()) * 1000:7.1f} ms")
        for ctl in birds.values():
            ctl.close()
    finally:
        if daemon_up:
            with contextlib.suppress(Exception):
                stop_daemon(user_state)  # waits for the process to go (killed by PID if it does not)
        with contextlib.suppress(Exception):
            run_async(TunnelManager(None, user_state, netns_name).down(keep_registration=True))
        lab.down()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Parse arguments and run both sections."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--announcements", type=int, default=50, help="Announcements on the embedded lab.")
    parser.add_argument("--rounds", type=int, default=30, help="Rounds of the speaker -> BIRD section.")
    parser.add_argument("--skip-speaker", action="store_true", help="Only the embedded-lab section.")
    args = parser.parse_args()
    print("== 1. embedded lab: announce -> accepted at every route server (looking glass) ==")
    bench_lab(args.announcements)
    if not args.skip_speaker:
        print()
        print("== 2. speaker -> BIRD alone (two namespaces, no lab) ==")
        asyncio.run(bench(args.rounds))


if __name__ == "__main__":
    main()
