"""The lab's gateway process: initialise the database when needed, then ``gateway serve``, in ONE process.

``lab up`` starts this at once (before the network is built), so the gateway's imports (FastAPI,
SQLAlchemy, Alembic: most of a second or two) and its database initialisation overlap with the network,
WireGuard and BIRD start-up instead of following them: the gateway was the critical path of ``lab up``.

    python -m lab.topology.gateway_launcher --admin-token-file PATH -- serve --listen ... --db URL ...

With no admin token at PATH (a new lab, or a crash between database and token) the schema is created or
migrated and a new admin token is written to PATH (0600; an existing database gets its token rotated).
Nothing secret is on the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Initialise if needed, then run the gateway CLI with the remaining arguments."""
    parser = argparse.ArgumentParser(prog="lab.topology.gateway_launcher")
    parser.add_argument("--admin-token-file", type=Path, required=True)
    parser.add_argument("--db", required=True, help="the gateway's database URL (sqlite:///PATH)")
    parser.add_argument("gateway_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    gateway_args = [a for a in args.gateway_args if a != "--"] if args.gateway_args[:1] == ["--"] \
        else args.gateway_args
    from lab.gateway.cli import gateway
    from lab.topology.builder import init_gateway_database
    from lab.topology.models import write_private

    if not args.admin_token_file.exists():
        db_path = Path(args.db.removeprefix("sqlite:///")) if args.db.startswith("sqlite:///") else None
        rotate = db_path is not None and db_path.exists()
        token = init_gateway_database(args.db, rotate=rotate)
        write_private(args.admin_token_file, token + "\n")
        print("gateway database initialised; admin token written", file=sys.stderr, flush=True)
    gateway.main(args=gateway_args, prog_name="peerlab-tui gateway")


if __name__ == "__main__":
    main()
