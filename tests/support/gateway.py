"""Run a real gateway (``peerlab-tui gateway serve``) for tests: subprocess, real HTTP, real database.

    from tests.support.gateway import start_gateway

    with start_gateway(tmp_path) as gw:            # SQLite in tmp_path, free port
        alice = gw.create_user("alice")          # {"name", "user_hash", "token"}
        svc = gw.create_service_token("rs1", ["mappings:read"])
        httpx.get(gw.url + "/api/user/info", headers={"Authorization": f"Bearer {alice['token']}"})

``start_gateway`` returns a handle that is also a context manager; call ``.stop()`` if not using ``with``.
The ``gateway`` fixture gives a function-scoped handle on SQLite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import yaml

VENV_BIN = Path(sys.executable).parent
PEERLAB = str(VENV_BIN / "peerlab-tui")
STARTUP_TIMEOUT = 60.0


def _clean_env() -> dict[str, str]:
    # Settings leaking from the developer's shell would make tests depend on it.
    return {k: v for k, v in os.environ.items() if not k.startswith("PEERLAB_GW_")}


class GatewayHandle:
    """A running gateway: ``url``, ``admin_token``, ``db_url``, ``process``, ``stop()`` and admin helpers."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        db_url: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
        workdir: Path,
    ) -> None:
        self.url = url
        self.admin_token = admin_token
        self.db_url = db_url
        self.process = process
        self.log_path = log_path
        self.workdir = workdir

    # --- admin helpers -----------------------------------------------------------------------------------

    def admin_headers(self) -> dict[str, str]:
        """Authorization header of the admin token."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def _admin_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = httpx.post(self.url + path, json=body, headers=self.admin_headers(), timeout=30)
        if resp.status_code != 201:
            raise RuntimeError(f"POST {path} failed: {resp.status_code} {resp.text}")
        data: dict[str, Any] = resp.json()
        return data

    def create_user(self, name: str, max_leases: int | None = None) -> dict[str, Any]:
        """Create a user through the admin API: ``{"name", "user_hash", "token"}``."""
        body: dict[str, Any] = {"name": name}
        if max_leases is not None:
            body["max_leases"] = max_leases
        return self._admin_post("/admin/users", body)

    def create_service_token(self, name: str, scopes: Sequence[str]) -> str:
        """Create a service token with the given scopes through the admin API; return the token."""
        return str(self._admin_post("/admin/service-tokens", {"name": name, "scopes": list(scopes)})["token"])

    def user_headers(self, token: str) -> dict[str, str]:
        """Authorization header for a token."""
        return {"Authorization": f"Bearer {token}"}

    def log(self) -> str:
        """What the gateway wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- life cycle --------------------------------------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the gateway (SIGTERM, then SIGKILL after ``timeout``). Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def __enter__(self) -> GatewayHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def init_db(db_url: str, *, subprocess_: bool = False) -> str:
    """Run ``peerlab-tui gateway init --db URL --json`` and return the admin token.

    By default the click command runs in this process (same code, without paying for a fresh interpreter);
    ``subprocess_=True`` runs the installed entry point instead.
    """
    if subprocess_:
        out = subprocess.run(
            [PEERLAB, "gateway", "init", "--db", db_url, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=_clean_env(),
        )
        code, stdout, stderr = out.returncode, out.stdout, out.stderr
    else:
        from click.testing import CliRunner

        from peerlab_tui.cli import main

        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PEERLAB_GW_")}
        result = CliRunner().invoke(main, ["gateway", "init", "--db", db_url, "--json"], env=unset)
        code, stdout, stderr = result.exit_code, result.stdout, result.stderr
    if code != 0:
        raise RuntimeError(f"gateway init failed ({code}): {stdout}{stderr}")
    return str(json.loads(stdout)["admin_token"])


def start_gateway(
    tmp_path: Path,
    *,
    db_url: str | None = None,
    extra_args: Sequence[str] = (),
    config: dict[str, Any] | None = None,
) -> GatewayHandle:
    """Initialise a database and run ``peerlab-tui gateway serve`` on 127.0.0.1 (free port).

    ``db_url`` defaults to a fresh SQLite file in ``tmp_path``. ``config`` is written as the YAML config file
    (``--config``); ``extra_args`` are appended to the serve command line (they win over ``config``).
    Waits for ``/healthz`` (timeout 60 s) and raises with the gateway's log if it does not come up.
    """
    workdir = Path(tmp_path) / f"gateway-{os.getpid()}-{time.monotonic_ns()}"
    workdir.mkdir(parents=True)
    db_url = db_url or f"sqlite:///{workdir / 'gateway.sqlite'}"
    env = _clean_env()
    admin_token = init_db(db_url)
    port_file = workdir / "port"
    log_path = workdir / "gateway.log"
    cmd = [
        PEERLAB,
        "gateway",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db_url,
        "--port-file",
        str(port_file),
    ]
    if config is not None:
        cfg_path = workdir / "gateway.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        cmd += ["--config", str(cfg_path)]
    cmd += list(extra_args)
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    handle = GatewayHandle("", admin_token, db_url, process, log_path, workdir)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited with {process.returncode}:\n{handle.log()}")
            if port_file.exists() and port_file.read_text().strip():
                handle.url = f"http://127.0.0.1:{int(port_file.read_text())}"
                try:
                    if httpx.get(handle.url + "/healthz", timeout=5).status_code == 200:
                        return handle
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not become healthy within {STARTUP_TIMEOUT} s:\n{handle.log()}")
    except BaseException:
        handle.stop()
        raise


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHandle]:
    """A gateway on SQLite in ``tmp_path`` with default settings, stopped after the test."""
    with start_gateway(tmp_path) as handle:
        yield handle


__all__ = ["GatewayHandle", "gateway", "init_db", "start_gateway"]
