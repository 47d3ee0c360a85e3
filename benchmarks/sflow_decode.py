"""sFlow decode throughput (issue 5): vectorised path vs per-record decoder vs a naive baseline vs peers.

Replicates the 1000-datagram ``overflowd__sflow.pcap`` (../shared) to 100,000 datagrams, then measures in one
run: the vectorised numpy path (batches of 1000 in-memory datagrams), the per-record decoder, a naive
per-datagram Python decoder that hands each sampled header to dpkt, pysflow (if installed), pmacct's
``sfacctd -I`` (pcap input), ``tshark -r`` with the sflow dissector, and the whole
``peerlab-tui sflow decode FILE --count --json`` process (and its start-up floor). Slow decoders run on a
10,000-datagram prefix and their rate is reported per second like the others.

Robust figures on a shared machine: the run is pinned to one core (``--cpu``; child processes inherit it),
every row — the naive baseline included — is the best of ``--repeat`` runs after an untimed warm-up, times
are CPU seconds of the decoding process (``process_time`` in-process, ``RUSAGE_CHILDREN`` for commands), so
time spent waiting for a core another process holds does not count; wall time is printed for reference, and
the load average at start and end shows how busy the machine was. Ratios are computed within the same run.

    .venv/bin/python benchmarks/sflow_decode.py [--datagrams 100000] [--subset 10000] [--repeat 5] [--cpu N]
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dpkt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from peerlab_tui.core.sflow import decode_datagram  # noqa: E402
from peerlab_tui.core.sflow.fast import decode_batch, tune_allocator  # noqa: E402
from peerlab_tui.core.sflow.sources import read_file  # noqa: E402

SHARED = Path(os.environ.get("PEERLAB_SHARED", REPO.parent / "shared"))
SOURCE = SHARED / "data" / "sflow" / "overflowd__sflow.pcap"
FLOWS_PER_1000 = 5855  # flow samples in the 1000 source datagrams (SOURCES.md)


# --------------------------------------------------------------------------------------------- naive baseline


def naive_decode(d: bytes) -> list[dict[str, Any]]:
    """A straightforward per-datagram decoder: struct for the XDR, dpkt for each sampled header."""
    out: list[dict[str, Any]] = []
    version, atype = struct.unpack_from(">II", d, 0)
    if version != 5:
        return out
    off = 8 + (4 if atype == 1 else 16)
    agent = d[8:off]
    _sub, _seq, _up, nsamples = struct.unpack_from(">IIII", d, off)
    off += 16
    for _ in range(nsamples):
        tag, length = struct.unpack_from(">II", d, off)
        body = off + 8
        end = body + length
        if tag in (1, 3):
            if tag == 1:
                sseq, sid, rate, pool, drops, inp, outp, nrec = struct.unpack_from(">8I", d, body)
                p = body + 32
            else:
                sseq, _st, sid, rate, pool, drops, _if, inp, _of, outp, nrec = struct.unpack_from(
                    ">11I", d, body
                )
                p = body + 44
            s: dict[str, Any] = {
                "agent": agent,
                "seq": sseq,
                "source_id": sid,
                "rate": rate,
                "pool": pool,
                "drops": drops,
                "input": inp,
                "output": outp,
            }
            for _r in range(nrec):
                rtag, rlen = struct.unpack_from(">II", d, p)
                rb = p + 8
                if rtag == 1:
                    proto, flen, _stripped, hlen = struct.unpack_from(">4I", d, rb)
                    s["frame_length"] = flen
                    if proto == 1:
                        try:
                            eth = dpkt.ethernet.Ethernet(d[rb + 16 : rb + 16 + hlen])
                        except (dpkt.UnpackError, struct.error):
                            eth = None
                        if eth is not None:
                            s["src_mac"], s["dst_mac"] = eth.src, eth.dst
                            ip = eth.data
                            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                                s["src_ip"], s["dst_ip"] = ip.src, ip.dst
                                s["proto"] = ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt
                                l4 = ip.data
                                if isinstance(l4, dpkt.tcp.TCP | dpkt.udp.UDP):
                                    s["sport"], s["dport"] = l4.sport, l4.dport
                                if isinstance(l4, dpkt.tcp.TCP):
                                    s["tcp_flags"] = l4.flags
                elif rtag == 1001:
                    s["src_vlan"], s["src_pri"], s["dst_vlan"], s["dst_pri"] = struct.unpack_from(
                        ">4I", d, rb
                    )
                p = rb + rlen
            out.append(s)
        elif tag in (2, 4):
            p = body + (12 if tag == 2 else 16)
            (nrec,) = struct.unpack_from(">I", d, p - 4)
            c: dict[str, Any] = {"seq": struct.unpack_from(">I", d, body)[0]}
            for _r in range(nrec):
                rtag, rlen = struct.unpack_from(">II", d, p)
                if rtag == 1:
                    c["generic"] = struct.unpack_from(">IIQIIQIIIIIIQIIIIII", d, p + 8)
                elif rtag == 2:
                    c["ethernet"] = struct.unpack_from(">13I", d, p + 8)
                p += 8 + rlen
            out.append(c)
        off = end
    return out


# --------------------------------------------------------------------------------------------- measuring


def interleaved_best(fns: list[tuple[Callable[[], object], int]], repeat: int) -> list[tuple[float, float]]:
    """Best (CPU s, wall s) of each function over ``repeat`` rounds that run every function in turn.

    Interleaving makes every decoder, the naive baseline included, see the same machine load, so the ratios
    between them hold even when the load changes during the run. Each function runs once untimed first, and
    ``runs`` times per round (more for cheap ones: a steadier best).
    """
    for fn, _ in fns:
        fn()
    best = [(float("inf"), float("inf"))] * len(fns)
    for _ in range(repeat):
        for i, (fn, runs) in enumerate(fns):
            for _ in range(runs):
                c0, w0 = time.process_time(), time.perf_counter()
                fn()
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                best[i] = (min(best[i][0], cpu), min(best[i][1], wall))
    return best


def child_best(argv: list[str], repeat: int) -> tuple[float, float]:
    """Best (CPU seconds, wall seconds) over ``repeat`` runs of a command, after one untimed warm-up run."""
    run_child(argv)
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        cpu, wall = run_child(argv)
        best_cpu = min(best_cpu, cpu)
        best_wall = min(best_wall, wall)
    return best_cpu, best_wall


def run_child(
    argv: list[str],
    *,
    stdout: Any = subprocess.DEVNULL,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> tuple[float, float]:
    """(CPU seconds of the child and its children, wall seconds) of one run of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    subprocess.run(argv, stdout=stdout, stderr=subprocess.DEVNULL, timeout=timeout, check=True, env=env)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def replicate(src: Path, dst: Path, times: int) -> None:
    """A classic pcap with the records of ``src`` repeated ``times`` times."""
    data = src.read_bytes()
    with dst.open("wb") as fh:
        fh.write(data[:24])
        for _ in range(times):
            fh.write(data[24:])


def replicate_first(src: Path, dst: Path) -> None:
    """A classic pcap with only the first record of ``src``."""
    data = src.read_bytes()
    (caplen,) = struct.unpack_from("<I", data, 24 + 8)
    dst.write_bytes(data[: 24 + 16 + caplen])


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in avg) + " (1/5/15 min)"


def main() -> int:
    """Run every measurement and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datagrams", type=int, default=100_000)
    ap.add_argument("--subset", type=int, default=10_000, help="datagrams for the slow decoders")
    ap.add_argument("--repeat", type=int, default=5, help="best of N for every row (after a warm-up)")
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the highest allowed)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--skip", action="append", default=[], help="skip a row (sfacctd, tshark, pysflow, ...)")
    args = ap.parse_args()
    if not SOURCE.is_file():
        print(f"missing {SOURCE} (../shared)", file=sys.stderr)
        return 2
    tune_allocator()
    allowed = sorted(os.sched_getaffinity(0))
    cpu_id = args.cpu if args.cpu is not None else allowed[-1]
    os.sched_setaffinity(0, {cpu_id})  # children inherit the mask: every row runs on this one core
    load_start = os.getloadavg()
    copies = args.datagrams // 1000
    sub_copies = max(args.subset // 1000, 1)
    rows: list[tuple[str, int, int, float, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="sflow-bench-") as tmp:
        big = Path(tmp) / "big.pcap"
        small = Path(tmp) / "small.pcap"
        replicate(SOURCE, big, copies)
        replicate(SOURCE, small, sub_copies)
        cap = read_file(big)
        datagrams = [cap.batch.datagram(i) for i in range(len(cap.batch))]
        n_all, f_all = len(datagrams), copies * FLOWS_PER_1000
        subset = datagrams[: sub_copies * 1000]
        n_sub, f_sub = len(subset), sub_copies * FLOWS_PER_1000
        batches = [datagrams[i : i + args.batch] for i in range(0, n_all, args.batch)]

        def vectorised() -> None:
            total = 0
            for b in batches:
                total += len(decode_batch(b)[0])
            assert total == f_all, total

        raw_batches = list(cap.batches(args.batch))

        def vectorised_buffer() -> None:
            total = 0
            for b in raw_batches:
                total += len(decode_batch(b.buffer, b.offsets, b.lengths)[0])
            assert total == f_all, total

        def naive() -> None:
            flows = sum(sum(1 for s in naive_decode(d) if "rate" in s) for d in subset)
            assert flows == f_sub, flows

        def per_record() -> None:
            for d in subset:
                decode_datagram(d)

        # (name, datagrams, flow samples, function, runs per round, note)
        vec_name = f"vectorised numpy (batches of {args.batch})"
        inproc: list[tuple[str, int, int, Callable[[], object], int, str]] = [
            (vec_name, n_all, f_all, vectorised, 3, "list of bytes"),
            ("vectorised numpy, pcap buffer + offsets", n_all, f_all, vectorised_buffer, 3, "RawBatch"),
            ("per-record decoder (decode_datagram)", n_sub, f_sub, per_record, 1, "in-process"),
            ("naive Python + dpkt (baseline)", n_sub, f_sub, naive, 1, "in-process"),
        ]
        if "pysflow" not in args.skip:
            try:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    # The pysflow distribution installs the module "sflow" (untyped).
                    pysflow = importlib.import_module("sflow")

                def run_pysflow() -> None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        for d in subset:
                            pysflow.decode(d)

                inproc.append(("pysflow 0.1.2 (sflow.decode)", n_sub, f_sub, run_pysflow, 1, "in-process"))
            except Exception as exc:
                print(f"pysflow: not measured ({type(exc).__name__}: {exc})", file=sys.stderr)
        best = interleaved_best([(fn, runs) for _, _, _, fn, runs, _ in inproc], args.repeat)
        for (name, n, f, _, _, note), (cpu, wall) in zip(inproc, best, strict=True):
            rows.append((name, n, f, cpu, wall, note))
        naive_rate = f_sub / best[3][0]

        sfacctd = shutil.which("sfacctd")
        if sfacctd and "sfacctd" not in args.skip:
            conf = Path(tmp) / "sfacctd.conf"
            conf.write_text(
                "daemonize: false\n"
                f"pcap_savefile: {big}\n"
                "plugins: print\n"
                "aggregate: src_host, dst_host, src_port, dst_port, proto\n"
                "print_output: csv\n"
                f"print_output_file: {tmp}/sfacctd.csv\n"
                "print_refresh_time: 3600\n"
            )
            cpu, wall = child_best([sfacctd, "-f", str(conf)], args.repeat)
            rows.append(
                (
                    "pmacct sfacctd -I (pcap, print plugin)",
                    n_all,
                    f_all,
                    cpu,
                    wall,
                    "child CPU; wall includes its idle waits",
                )
            )
        else:
            print("sfacctd: not measured (missing or skipped)", file=sys.stderr)

        tshark = shutil.which("tshark")
        if tshark and "tshark" not in args.skip:
            cpu, wall = child_best(
                [
                    tshark,
                    "-r",
                    str(small),
                    "-n",
                    "-d",
                    "udp.port==6343,sflow",
                    "-T",
                    "fields",
                    "-e",
                    "sflow_245.sampletype",
                    "-e",
                    "sflow_245.header_protocol",
                ],
                args.repeat,
            )
            rows.append(("tshark -r -T fields (sflow dissector)", n_sub, f_sub, cpu, wall, "child process"))
        else:
            print("tshark: not measured (missing or skipped)", file=sys.stderr)

        cli = Path(sys.executable).parent / "peerlab-tui"
        if "cli" not in args.skip:
            # The whole process, and its fixed price (interpreter, click, numpy, our modules) measured on a
            # one-datagram file in the same rounds: what is left is reading and counting.
            one = Path(tmp) / "one.pcap"
            replicate_first(SOURCE, one)
            whole_cmd = [str(cli), "sflow", "decode", str(big), "--count", "--json"]
            one_cmd = [str(cli), "sflow", "decode", str(one), "--count", "--json"]
            # As an installed package runs: with a bytecode cache (this environment may set
            # PYTHONDONTWRITEBYTECODE, which would make every run compile our modules again). The warm-up
            # runs write the cache under the temporary directory.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            run_child(whole_cmd, env=env)
            run_child(one_cmd, env=env)
            whole = startup = (float("inf"), float("inf"))
            for _ in range(args.repeat):
                whole = min(whole, run_child(whole_cmd, env=env))
                startup = min(startup, run_child(one_cmd, env=env))
            rows.append(
                (
                    "peerlab-tui sflow decode --count --json",
                    n_all,
                    f_all,
                    *whole,
                    "whole process, incl. start-up",
                )
            )
            work = max(whole[0] - startup[0], 1e-9)
            rows.append(("  start-up alone (1-datagram file)", 0, 0, *startup, "fixed cost"))
            rows.append(("  whole process minus start-up", n_all, f_all, work, float("nan"), "read + count"))

    load_end = os.getloadavg()
    print(
        f"\nsFlow decode, {SOURCE.name} x{copies} = {n_all} datagrams / {f_all} flow samples "
        f"(slow rows: first {n_sub}); CPU s best of {args.repeat} rounds (vectorised: 3 runs a round) "
        f"after a warm-up; pinned to core {cpu_id} of {os.cpu_count()}\n"
        f"load average at start {_load(load_start)}, at end {_load(load_end)}\n"
    )
    head = (
        f"{'decoder':<42} {'datagrams':>9} {'CPU s':>8} {'wall s':>8} {'datagrams/s':>12} "
        f"{'flow samples/s':>15} {'x naive':>8}  note"
    )
    print(head)
    print("-" * len(head))
    for name, n, f, cpu, wall, note in rows:
        if not n:
            print(f"{name:<42} {'':>9} {cpu:>8.3f} {wall:>8.3f} {'':>12} {'':>15} {'':>8}  {note}")
            continue
        rate = f / cpu
        wall_s = f"{wall:>8.3f}" if wall == wall else f"{'':>8}"
        print(
            f"{name:<42} {n:>9} {cpu:>8.3f} {wall_s} {n / cpu:>12,.0f} {rate:>15,.0f} "
            f"{rate / naive_rate:>8.1f}  {note}"
        )
    print("\nx naive = flow samples per CPU second relative to the naive Python + dpkt decoder.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
