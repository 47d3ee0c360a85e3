"""``gateway init`` / ``user add`` / ``token add`` on a real database; tokens stored hashed; migrations."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from lab.gateway.db import Base, Database, normalize_url
from tests.support.gateway import PEERLAB, _clean_env, start_gateway


class Result:
    """What a command printed and returned."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run(*args: str) -> Result:
    """``peerlab-tui ARGS`` in-process (the entry point itself is exercised by every gateway start)."""
    from click.testing import CliRunner

    from peerlab_tui.cli import main

    result = CliRunner().invoke(
        main, list(args), env={k: None for k in os.environ if k.startswith("PEERLAB_GW_")}
    )
    return Result(result.exit_code, result.stdout, result.stderr)


def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``peerlab-tui ARGS`` as a real process."""
    return subprocess.run([PEERLAB, *args], capture_output=True, text=True, timeout=120, env=_clean_env())


def test_init_twice_user_and_token_add(db_url: str, tmp_path: Path) -> None:
    """init prints the admin token once; again is an error unless --rotate-admin-token; secrets are hashed."""
    first = run_process("gateway", "init", "--db", db_url, "--json")  # the real entry point once
    assert first.returncode == 0, first.stderr
    admin = json.loads(first.stdout)["admin_token"]
    assert len(admin) > 40

    again = run("gateway", "init", "--db", db_url, "--json")
    assert again.returncode == 4
    assert admin not in again.stdout and "pla_" not in again.stdout
    assert "already initialised" in again.stderr and "--rotate-admin-token" in again.stderr

    user = run("gateway", "user", "add", "alice", "--db", db_url, "--json")
    assert user.returncode == 0, user.stderr
    alice = json.loads(user.stdout)
    assert set(alice) == {"name", "user_hash", "token"} and alice["name"] == "alice"
    dup = run("gateway", "user", "add", "alice", "--db", db_url, "--json")
    assert dup.returncode == 4 and "already exists" in dup.stderr
    bad = run("gateway", "user", "add", "no spaces", "--db", db_url)
    assert bad.returncode == 2 and "invalid" in bad.stderr

    tok = run(
        "gateway",
        "token",
        "add",
        "agent",
        "--scope",
        "mappings:read",
        "--scope",
        "routes:write",
        "--db",
        db_url,
        "--json",
    )
    assert tok.returncode == 0, tok.stderr
    svc = json.loads(tok.stdout)
    assert svc["name"] == "agent" and svc["scopes"] == ["mappings:read", "routes:write"]
    bad_scope = run("gateway", "token", "add", "x", "--scope", "admin", "--db", db_url)
    assert bad_scope.returncode == 2

    rotated = run("gateway", "init", "--db", db_url, "--json", "--rotate-admin-token")
    assert rotated.returncode == 0, rotated.stderr
    new_admin = json.loads(rotated.stdout)["admin_token"]
    assert new_admin != admin

    engine = create_engine(normalize_url(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT kind, token_hash FROM tokens ORDER BY kind")).all()
            dump = " ".join(str(v) for row in conn.execute(text("SELECT * FROM tokens")).all() for v in row)
    finally:
        engine.dispose()
    assert sorted(k for k, _ in rows) == ["admin", "service", "user"]  # the old admin token is gone
    hashes = {h for _, h in rows}
    for secret in (new_admin, alice["token"], svc["token"]):
        assert hashlib.sha256(secret.encode()).hexdigest() in hashes
        assert secret not in dump
    assert hashlib.sha256(admin.encode()).hexdigest() not in hashes
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        import sqlite3

        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rotated_admin_token_takes_effect(tmp_path: Path) -> None:
    """After rotation the old admin token is refused by a running gateway."""
    import httpx

    with start_gateway(tmp_path) as gw:
        out = run("gateway", "init", "--db", gw.db_url, "--json", "--rotate-admin-token")
        new = json.loads(out.stdout)["admin_token"]
        old = httpx.get(gw.url + "/admin/users", headers={"Authorization": f"Bearer {gw.admin_token}"})
        assert old.status_code == 401
        assert (
            httpx.get(gw.url + "/admin/users", headers={"Authorization": f"Bearer {new}"}).status_code == 200
        )


def test_serve_refuses_an_uninitialised_database(tmp_path: Path) -> None:
    """serve says to run init instead of creating tables behind the operator's back."""
    out = run_process(
        "gateway", "serve", "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--listen", "127.0.0.1:0"
    )
    assert out.returncode == 2 and "gateway init" in out.stderr


def test_migrations_match_the_models(db_url: str) -> None:
    """The shipped Alembic migration creates exactly the schema the code maps (no drift)."""
    assert run("gateway", "init", "--db", db_url, "--json").returncode == 0
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        db.dispose()
    assert diff == []
