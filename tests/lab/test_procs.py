"""Daemons the lab starts: their environment carries the lab marker and what they need, no secrets."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from lab.topology import procs


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def test_spawned_daemon_gets_its_token_and_no_other_secret(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The rs-agent's service token is handed explicitly; the caller's user token, admin settings and
    anything else in the environment of ``lab up`` stay out of the long-lived daemon."""
    monkeypatch.setenv("PEERLAB_TOKEN", "plu_users-own-token")
    monkeypatch.setenv("PEERLAB_GW_ADMIN_TOKEN", "pla_admin")
    monkeypatch.setenv("SOME_CLOUD_SECRET", "s3cr3t")
    pid = procs.spawn(["sleep", "60"], prefix="tenvtest", log_path=tmp_path / "sleep.log",
                      env={"PEERLAB_SERVICE_TOKEN": "pls_service"})
    try:
        env = _environ(pid)
        assert env["PEERLAB_SERVICE_TOKEN"] == "pls_service"
        assert env[procs.MARKER] == "tenvtest" and procs.has_marker(pid, "tenvtest")
        assert env["PATH"]
        leaked = {"PEERLAB_TOKEN", "PEERLAB_GW_ADMIN_TOKEN", "SOME_CLOUD_SECRET"} & set(env)
        assert not leaked
        assert set(env) <= {*procs.INHERITED_ENV, procs.MARKER, "PEERLAB_SERVICE_TOKEN"}
    finally:
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
