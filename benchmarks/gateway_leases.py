"""Lease throughput and latency of the gateway, over real HTTP, on SQLite and PostgreSQL.

For 50 and 200 concurrent clients: users are created first (admin API); then every client opens its own
keep-alive connection and requests its ASN (not timed), and all clients loop lease -> release for a number
of rounds at once. Prints leases per second (full lease + release cycles per wall-clock second), p50/p99
latency of the lease and release requests, and the share of a CPU the gateway process and this client
process used during the timed phase.

The clients speak minimal HTTP/1.1 over asyncio streams (a few tens of microseconds per request) rather than
httpx (about a millisecond of CPU per request): on a small machine a heavyweight client would measure itself.
The gateway runs in its own process (``peerlab-tui gateway serve``), the clients in this one.

    .venv/bin/python benchmarks/gateway_leases.py [--rounds 5] [--clients 50 200] [--no-postgres]
        [--json-out FILE] [--compare FILE]

``--json-out`` saves the figures; ``--compare`` prints each figure's ratio to a saved run (e.g. one made on
an older checkout on the same machine just before). PostgreSQL runs in a throwaway cluster started here
(needs root); without root it is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.gateway import GatewayHandle, start_gateway
from tests.support.postgres import PostgresCluster

SERVE_ARGS = ["--prefix-pool", "2001:db8::/32", "--lease-length", "48", "--max-leases", "1"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Connection:
    """One keep-alive HTTP/1.1 connection with a bearer token (just enough HTTP for the gateway)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read the whole answer: (status, body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\n{self.auth}Content-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data += await self.reader.readexactly(size + 2)
                if size == 0:
                    break
            payload = data[:-2]
        else:
            payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        """Close the connection (reopened by the next request)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def create_users(gw: GatewayHandle, count: int) -> list[str]:
    """``count`` users through the admin API (not timed); their tokens."""
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    tokens: list[str] = []
    async with httpx.AsyncClient(base_url=gw.url, timeout=300, limits=limits) as client:
        admin = {"Authorization": f"Bearer {gw.admin_token}"}
        for start in range(0, count, 50):
            batch = await asyncio.gather(
                *[
                    client.post("/admin/users", json={"name": f"bench{i:04d}"}, headers=admin)
                    for i in range(start, min(count, start + 50))
                ]
            )
            tokens += [r.json()["token"] for r in batch]
    return tokens


async def run_load(gw: GatewayHandle, clients: int, rounds: int) -> dict[str, float]:
    """Create users, then run the clients; return the figures."""
    tokens = await create_users(gw, clients)
    url = urlsplit(gw.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    lease_lat: list[float] = []
    release_lat: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    duration = json.dumps({"duration_hours": 1}).encode()

    conns = [Connection(host, port, token) for token in tokens]
    # Every client connects and gets its ASN first (not timed): the figures are the lease cycle alone.
    asn_statuses = await asyncio.gather(*[conn.request("POST", "/api/user/asn") for conn in conns])
    errors += sum(status != 200 for status, _ in asn_statuses)
    for status, _ in asn_statuses:
        statuses[status] = statuses.get(status, 0) + 1

    async def one(conn: Connection) -> None:
        nonlocal errors
        try:
            for _ in range(rounds):
                t0 = time.perf_counter()
                status, body = await conn.request("POST", "/api/user/prefix", duration)
                lease_lat.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors += 1
                    continue
                prefix = json.loads(body)["prefix"].replace("/", "%2F")
                t0 = time.perf_counter()
                status, _ = await conn.request("DELETE", f"/api/user/prefix/{prefix}")
                release_lat.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                errors += status != 204
        finally:
            await conn.close()

    server_cpu0, client_cpu0 = process_cpu(gw.process.pid), time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*[one(conn) for conn in conns])
    wall = time.perf_counter() - t0
    server_cpu = process_cpu(gw.process.pid) - server_cpu0
    client_cpu = time.process_time() - client_cpu0
    return {
        "leases_per_s": len(release_lat) / wall,
        "lease_p50_ms": percentile(lease_lat, 50) * 1000,
        "lease_p99_ms": percentile(lease_lat, 99) * 1000,
        "release_p50_ms": percentile(release_lat, 50) * 1000,
        "release_p99_ms": percentile(release_lat, 99) * 1000,
        "cycles": len(release_lat),
        "errors": errors,
        "server_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "wall_s": wall,
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
    }


def main() -> None:
    """Run every configuration and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="lease+release cycles per client (default 5)")
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json-out", type=Path, help="save the figures to this JSON file")
    parser.add_argument("--compare", type=Path, help="print ratios to the figures saved in this JSON file")
    args = parser.parse_args()

    backends = ["sqlite"]
    cluster: PostgresCluster | None = None
    if not args.no_postgres:
        if os.geteuid() == 0:
            cluster = PostgresCluster().start()
            backends.append("postgres")
        else:
            print("PostgreSQL skipped: needs root to start a throwaway cluster", file=sys.stderr)
    rows: list[tuple[str, int, dict[str, float]]] = []
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
        f"{'release p50':>12} {'release p99':>12} {'errors':>6} {'5xx':>4} {'gw cpu':>7} {'client cpu':>10}"
    )
    print(header)
    print("-" * len(header))
    for backend, clients, f in rows:
        print(
            f"{backend:<9} {clients:>7} {int(f['cycles']):>6} {f['leases_per_s']:>9.1f} "
            f"{f['lease_p50_ms']:>8.1f}ms {f['lease_p99_ms']:>8.1f}ms {f['release_p50_ms']:>10.1f}ms "
            f"{f['release_p99_ms']:>10.1f}ms {int(f['errors']):>6} {int(f['server_5xx']):>4} "
            f"{100 * f['server_cpu_s'] / f['wall_s']:>6.0f}% {100 * f['client_cpu_s'] / f['wall_s']:>9.0f}%"
        )
    print(
        f"({os.cpu_count()} CPUs shared by gateway, clients and PostgreSQL; rounds/client: {args.rounds}; "
        "cpu = share of one CPU during the load)"
    )
    saved = [{"backend": b, "clients": c, **f} for b, c, f in rows]
    if args.json_out:
        args.json_out.write_text(json.dumps(saved, indent=2) + "\n")
    if args.compare:
        compare(saved, json.loads(args.compare.read_text()))


def compare(now: list[dict[str, Any]], before: list[dict[str, Any]]) -> None:
    """Print throughput and p99 ratios of this run to a saved one (>1 = better now)."""
    old = {(r["backend"], r["clients"]): r for r in before}
    print("\ncompared with the saved run: throughput now/before, p99 before/now (> 1 means better now)")
    for r in now:
        o = old.get((r["backend"], r["clients"]))
        if o is None:
            continue
        print(
            f"{r['backend']:<9} {r['clients']:>7}  leases/s x{r['leases_per_s'] / o['leases_per_s']:.1f}  "
            f"lease p99 x{o['lease_p99_ms'] / r['lease_p99_ms']:.1f}  "
            f"release p99 x{o['release_p99_ms'] / r['release_p99_ms']:.1f}"
        )


if __name__ == "__main__":
    main()
