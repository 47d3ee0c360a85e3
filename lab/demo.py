"""``peerlab-tui demo``: the embedded default, end to end on one machine.

Starts a gateway on 127.0.0.1 (any free port) with a fresh SQLite database in a temporary directory,
creates a demo user through the admin API, requests an ASN and a prefix lease as that user, prints each
step, then stops the gateway and removes the directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import httpx

from peerlab_tui._cli.common import emit_json, handle_errors, json_option
from peerlab_tui.core.errors import ExternalProgramError, GatewayError

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0


def _init_database(db_url: str) -> str:
    """Create the schema and the admin token (what ``gateway init`` does)."""
    from lab.gateway.config import build_config
    from lab.gateway.db import Database, migrate
    from lab.gateway.service import GatewayService

    db = Database(db_url)
    try:
        migrate(db)
        return GatewayService(db, build_config({"db": db_url}, {})).create_admin_token(rotate=False)
    finally:
        db.dispose()


def _start(workdir: Path, db_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "port"
    log = (workdir / "gateway.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "peerlab_tui",
        "gateway",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db_url,
        "--port-file",
        str(port_file),
    ]
    # The demo is self-contained: the operator's PEERLAB_GW_* settings must not leak into it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERLAB_GW_")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = (workdir / "gateway.log").read_text(errors="replace")
            raise ExternalProgramError(f"the gateway exited with {proc.returncode}: {output.strip()}")
        if port_file.exists() and port_file.read_text().strip():
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    _stop(proc)
    raise ExternalProgramError(f"the gateway did not become healthy within {STARTUP_TIMEOUT:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _call(client: httpx.Client, method: str, path: str, token: str, **kw: Any) -> Any:
    resp = client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
    if resp.status_code >= 400:
        raise GatewayError(
            f"{method} {path} failed: {resp.status_code} {resp.text}", status_code=resp.status_code
        )
    return resp.json()


@click.command()
@click.option("--hours", type=click.IntRange(1, 24), default=2, show_default=True, help="Lease duration.")
@json_option
@handle_errors
def demo(hours: int, as_json: bool) -> None:
    """Run a throwaway gateway, get a demo user an ASN and a prefix lease, and clean up."""

    def step(text: str) -> None:
        if not as_json:
            click.echo(text)

    with tempfile.TemporaryDirectory(prefix="peerlab-demo-") as tmp:
        workdir = Path(tmp)
        db_url = f"sqlite:///{workdir / 'gateway.sqlite'}"
        step(f"1. initialising a gateway database in {workdir}")
        admin = _init_database(db_url)
        proc, url = _start(workdir, db_url)
        try:
            step(f"2. gateway listening on {url}")
            with httpx.Client(base_url=url, timeout=30) as client:
                user = _call(client, "POST", "/admin/users", admin, json={"name": "demo"})
                step(f"3. created user {user['name']} (user_hash {user['user_hash']})")
                asn = _call(client, "POST", "/api/user/asn", user["token"])
                step(f"4. assigned ASN {asn['asn']}")
                lease = _call(
                    client, "POST", "/api/user/prefix", user["token"], json={"duration_hours": hours}
                )
                step(f"5. leased {lease['prefix']} until {lease['end_time']}")
        finally:
            _stop(proc)
        step("6. gateway stopped, temporary files removed")
    if as_json:
        emit_json(
            {
                "gateway": url,
                "user": user["name"],
                "user_hash": user["user_hash"],
                "asn": asn["asn"],
                "lease": {k: lease[k] for k in ("prefix", "start_time", "end_time")},
            }
        )
