"""``lab up`` / ``lab down`` wall times, as a user runs them (needs root, bird, wireguard-go). Prints figures.

    .venv/bin/python benchmarks/lab_up.py [--rounds 2] [--profile]

Each round: a first ``lab up`` (cold: namespaces, keys, gateway database, every daemon), a second ``lab up``
(idempotent: checks only), then ``lab down``. ``--profile`` also builds one lab in-process with a timestamp
per step (the critical path), from the builder's log.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(prefix: str, state: Path, *args: str) -> float:
    """Run ``peerlab-tui lab ARGS`` and return its wall time (it must succeed)."""
    argv = [sys.executable, "-m", "peerlab_tui", "lab", *args, "--prefix", prefix, "--state-dir", str(state),
            "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"lab {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return elapsed


def profile(prefix: str, state: Path) -> None:
    """One in-process ``lab up`` with the builder's step log (relative timestamps), then down."""
    from lab.topology.builder import Lab
    from lab.topology.models import load_topology

    start = time.perf_counter()

    class Relative(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"  {record.created - start_wall:6.3f} s  {record.name}: {record.getMessage()}"

    start_wall = time.time()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(Relative())
    logging.getLogger("lab").addHandler(handler)
    logging.getLogger("lab").setLevel(logging.INFO)
    logging.getLogger("peerlab_tui.core.tunnel").addHandler(handler)
    logging.getLogger("peerlab_tui.core.tunnel").setLevel(logging.INFO)
    lab = Lab(load_topology(prefix=prefix), state)
    try:
        lab.up()
        print(f"  in-process lab up: {time.perf_counter() - start:.2f} s")
    finally:
        lab.down()
        logging.getLogger("lab").removeHandler(handler)
        logging.getLogger("peerlab_tui.core.tunnel").removeHandler(handler)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also print a per-step profile of one up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peerlab-bench-") as tmp:
        if args.profile:
            print("profile of one lab up (in-process):")
            profile(f"b{secrets.token_hex(3)}", Path(tmp) / "profile")
        print(f"{'round':>5} {'first up':>9} {'second up':>10} {'down':>7}   "
              "(seconds, the CLI as a user runs it)")
        for i in range(1, args.rounds + 1):
            prefix, state = f"b{secrets.token_hex(3)}", Path(tmp) / f"r{i}"
            try:
                first = run(prefix, state, "up")
                second = run(prefix, state, "up")
            finally:
                down = run(prefix, state, "down")
            print(f"{i:>5} {first:>9.2f} {second:>10.2f} {down:>7.2f}")


if __name__ == "__main__":
    main()
