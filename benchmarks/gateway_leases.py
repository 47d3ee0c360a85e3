"""Lease throughput and latency of the gateway, over real HTTP, on SQLite and PostgreSQL.

For 50 and 200 concurrent clients: users are created first (admin API); then every client requests its
ASN and loops lease -> release for a number of rounds. Prints leases per second (full lease + release
cycles per wall-clock second) and p50/p99 latency of the lease and release requests. The clients run in
this process (asyncio + httpx) on the same machine as the gateway, so they share its CPU.

    .venv/bin/python benchmarks/gateway_leases.py [--rounds 5] [--clients 50 200] [--no-postgres]

PostgreSQL runs in a throwaway cluster started here (needs root); without root it is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.gateway import GatewayHandle, start_gateway
from tests.support.postgres import PostgresCluster

SERVE_ARGS = ["--prefix-pool", "2001:db8::/32", "--lease-length", "48", "--max-leases", "1"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def run_load(gw: GatewayHandle, clients: int, rounds: int) -> dict[str, float]:
    """Create users, then run the clients; return the figures."""
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=gw.url, timeout=300, limits=limits) as client:
        admin = {"Authorization": f"Bearer {gw.admin_token}"}
        tokens = []
        for start in range(0, clients, 50):  # created first, in batches
            batch = await asyncio.gather(
                *[
                    client.post("/admin/users", json={"name": f"bench{i:04d}"}, headers=admin)
                    for i in range(start, min(clients, start + 50))
                ]
            )
            tokens += [r.json()["token"] for r in batch]
        lease_lat: list[float] = []
        release_lat: list[float] = []
        errors = 0

        async def one(token: str) -> None:
            nonlocal errors
            h = {"Authorization": f"Bearer {token}"}
            if (await client.post("/api/user/asn", headers=h)).status_code != 200:
                errors += 1
                return
            for _ in range(rounds):
                t0 = time.perf_counter()
                r = await client.post("/api/user/prefix", json={"duration_hours": 1}, headers=h)
                lease_lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                    continue
                prefix = r.json()["prefix"].replace("/", "%2F")
                t0 = time.perf_counter()
                d = await client.delete(f"/api/user/prefix/{prefix}", headers=h)
                release_lat.append(time.perf_counter() - t0)
                errors += d.status_code != 204

        t0 = time.perf_counter()
        await asyncio.gather(*[one(t) for t in tokens])
        wall = time.perf_counter() - t0
    return {
        "leases_per_s": len(release_lat) / wall,
        "lease_p50_ms": percentile(lease_lat, 50) * 1000,
        "lease_p99_ms": percentile(lease_lat, 99) * 1000,
        "release_p50_ms": percentile(release_lat, 50) * 1000,
        "release_p99_ms": percentile(release_lat, 99) * 1000,
        "cycles": len(release_lat),
        "errors": errors,
    }


def main() -> None:
    """Run every configuration and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="lease+release cycles per client (default 5)")
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    backends = ["sqlite"]
    cluster: PostgresCluster | None = None
    if not args.no_postgres:
        if os.geteuid() == 0:
            cluster = PostgresCluster().start()
            backends.append("postgres")
        else:
            print("PostgreSQL skipped: needs root to start a throwaway cluster", file=sys.stderr)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="peerlab-bench-") as tmp:
            for backend in backends:
                for clients in args.clients:
                    db_url = cluster.create_database() if backend == "postgres" and cluster else None
                    with start_gateway(Path(tmp), db_url=db_url, extra_args=SERVE_ARGS) as gw:
                        figures = asyncio.run(run_load(gw, clients, args.rounds))
                    rows.append((backend, clients, figures))
                    print(f"done: {backend} x{clients}", file=sys.stderr)
    finally:
        if cluster is not None:
            cluster.stop()

    header = (
        f"{'backend':<9} {'clients':>7} {'cycles':>6} {'leases/s':>9} {'lease p50':>10} {'lease p99':>10} "
        f"{'release p50':>12} {'release p99':>12} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for backend, clients, f in rows:
        print(
            f"{backend:<9} {clients:>7} {int(f['cycles']):>6} {f['leases_per_s']:>9.1f} "
            f"{f['lease_p50_ms']:>8.1f}ms {f['lease_p99_ms']:>8.1f}ms {f['release_p50_ms']:>10.1f}ms "
            f"{f['release_p99_ms']:>10.1f}ms {int(f['errors']):>6}"
        )
    print(f"({os.cpu_count()} CPUs; clients and gateway share them; rounds per client: {args.rounds})")


if __name__ == "__main__":
    main()
