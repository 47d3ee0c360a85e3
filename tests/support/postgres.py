"""A throwaway PostgreSQL 15 cluster for tests and benchmarks (never the packaged one).

``initdb`` and ``pg_ctl`` run as the ``postgres`` user on a private data directory, listening on 127.0.0.1 at
a free port with its socket inside the data directory. Needs root (to become postgres). The pytest fixture
``postgres_cluster`` is session-scoped; ``cluster.create_database()`` gives each test a fresh database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.requirements import require_binary, require_root

PG_BIN = Path(os.environ.get("PEERLAB_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """A private cluster: ``start()``, ``create_database()``, ``stop()`` (also a context manager)."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="peerlab-pg-", dir=base_dir))
        self.data = self.root / "data"
        self.port = 0
        self.started = False

    def _as_postgres(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> PostgresCluster:
        """initdb and start on a free port (retried on a port clash)."""
        self.root.chmod(0o755)
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, "postgres", "postgres")
        out = self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stdout}{out.stderr}")
        last = ""
        for _ in range(5):
            self.port = _free_port()
            opts = (
                f"-k {self.data} -h 127.0.0.1 -p {self.port} -c max_connections=300 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off"
            )
            out = self._as_postgres(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "-l",
                str(self.data / "server.log"),
                "start",
            )
            if out.returncode == 0:
                self.started = True
                return self
            last = out.stdout + out.stderr
        raise RuntimeError(f"pg_ctl start failed: {last}")

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database on this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database and return its URL."""
        import psycopg

        name = name or f"t_{secrets.token_hex(6)}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database (ending its connections)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop immediately and delete the data directory."""
        if self.started:
            self._as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60
            )
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def require_postgres() -> None:
    """Skip locally / fail in CI unless a throwaway cluster can be started (root, binaries)."""
    require_root()
    require_binary("runuser", str(PG_BIN / "initdb"), str(PG_BIN / "pg_ctl"))


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway cluster for the whole session."""
    require_postgres()
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


__all__ = ["PostgresCluster", "postgres_cluster", "require_postgres"]
