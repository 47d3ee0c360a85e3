"""Announce latency of the embedded speaker against a real BIRD route server (needs root, bird, birdc).

Builds two namespaces joined by a veth, BIRD in one, the Speaker (ExaBGP) in the other, and prints:
start to established, the ack latency of ``announce()``, announce/withdraw until BIRD shows the change, and
the time from killing ExaBGP to BIRD having the announcement back. Run: ``.venv/bin/python
benchmarks/announce_latency.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
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
    tag = secrets.token_hex(3)
    rs_ns, sp_ns = f"bnr{tag}", f"bns{tag}"
    work = Path(tempfile.mkdtemp(prefix="plbench"))
    bird: asyncio.subprocess.Process | None = None
    speaker: Speaker | None = None
    try:
        for ns in (rs_ns, sp_ns):
            netns.create_netns(ns)
        netns.create_veth(f"bva{tag}", f"bvb{tag}", netns_a=rs_ns, netns_b=sp_ns)
        p = f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:1"
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


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(bench(args.rounds))


if __name__ == "__main__":
    main()
