"""The lease verbs end to end: ``peerlab-tui`` subprocesses against a real gateway (HTTP, SQLite)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from peerlab_tui.core.errors import ExitCode
from tests.support.gateway import GatewayHandle, start_gateway

PEERLAB = str(Path(sys.executable).parent / "peerlab-tui")


@pytest.fixture
def gw(shared_gateway: GatewayHandle) -> GatewayHandle:
    """The shared gateway (default limits: 1 active lease per user)."""
    return shared_gateway


def cli(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``peerlab-tui ARGS`` with the connection in the environment only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERLAB_")}
    env.update(PEERLAB_GATEWAY_URL=url, PEERLAB_TOKEN=token)
    return subprocess.run([PEERLAB, *args], env=env, capture_output=True, text=True, timeout=60)


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_asn_is_sticky(gw: GatewayHandle) -> None:
    user = gw.create_user("asn-user")
    first = ok_json(cli(gw.url, user["token"], "asn", "--json"))
    second = ok_json(cli(gw.url, user["token"], "asn", "--json"))
    assert first["asn"] == second["asn"]
    human = cli(gw.url, user["token"], "asn")
    assert human.stdout.startswith(f"ASN {first['asn']} ")


def test_lease_life_cycle(gw: GatewayHandle) -> None:
    token = gw.create_user("cycle-user")["token"]
    requested = cli(gw.url, token, "lease", "request", "--hours", "2", "--json")
    assert "no ASN yet" in requested.stderr
    granted = ok_json(requested)
    prefix = granted["lease"]["prefix"]
    assert isinstance(granted["asn"], int)

    listed = ok_json(cli(gw.url, token, "lease", "list", "--json"))
    assert [(row["prefix"], row["state"]) for row in listed["leases"]] == [(prefix, "active")]
    table = cli(gw.url, token, "lease", "list")
    assert table.returncode == 0
    assert prefix in table.stdout and "2h 00m" in table.stdout

    renewed = ok_json(cli(gw.url, token, "lease", "renew", prefix, "--hours", "1", "--json"))
    old_end = datetime.fromisoformat(granted["lease"]["end_time"])
    assert datetime.fromisoformat(renewed["end_time"]) - old_end == timedelta(hours=1)

    assert ok_json(cli(gw.url, token, "lease", "release", prefix, "--json")) == {"released": prefix}
    assert ok_json(cli(gw.url, token, "lease", "list", "--json")) == {"leases": []}
    history = ok_json(cli(gw.url, token, "lease", "list", "--history", "--json"))
    assert [(row["prefix"], row["state"]) for row in history["leases"]] == [(prefix, "released")]


def test_lease_limit_is_exit_4(gw: GatewayHandle) -> None:
    token = gw.create_user("limit-user")["token"]
    ok_json(cli(gw.url, token, "lease", "request", "--hours", "1", "--json"))
    refused = cli(gw.url, token, "lease", "request", "--hours", "1")
    assert refused.returncode == ExitCode.REFUSED
    assert refused.stderr.startswith("error: gateway refused the lease: ")
    assert len(ok_json(cli(gw.url, token, "lease", "list", "--json"))["leases"]) == 1


def test_wrong_token_is_exit_3(gw: GatewayHandle) -> None:
    proc = cli(gw.url, "not-a-real-token", "lease", "list", "--json")
    assert proc.returncode == ExitCode.AUTH
    assert json.loads(proc.stdout)["error"] == "AuthenticationError"


def test_unreachable_gateway_is_exit_7() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = cli(f"http://127.0.0.1:{port}", "tok", "lease", "list")
    assert proc.returncode == ExitCode.UNREACHABLE
    assert "cannot reach the gateway" in proc.stderr


def test_malformed_prefix_is_exit_2(gw: GatewayHandle) -> None:
    token = gw.create_user("typo-user")["token"]
    proc = cli(gw.url, token, "lease", "release", "2001:db8::1/48")
    assert proc.returncode == ExitCode.USAGE
    assert "not an IPv6 prefix in CIDR form" in proc.stderr


def test_someone_elses_prefix_is_exit_6(gw: GatewayHandle) -> None:
    owner = gw.create_user("owner-user")["token"]
    other = gw.create_user("other-user")["token"]
    prefix = ok_json(cli(gw.url, owner, "lease", "request", "--hours", "1", "--json"))["lease"]["prefix"]
    for args in (["lease", "release", prefix], ["lease", "renew", prefix, "--hours", "1"]):
        proc = cli(gw.url, other, *args)
        assert proc.returncode == ExitCode.NOT_FOUND, proc.stderr
    still = ok_json(cli(gw.url, owner, "lease", "list", "--json"))
    assert [row["prefix"] for row in still["leases"]] == [prefix]


def test_pool_exhausted_is_exit_5(tmp_path: Path) -> None:
    config = {"prefix_pools": ["2001:db8:100::/47"], "lease_length": 48}  # room for two leases
    with start_gateway(tmp_path, config=config) as small:
        tokens = [small.create_user(f"pool-{i}")["token"] for i in range(3)]
        for token in tokens[:2]:
            ok_json(cli(small.url, token, "lease", "request", "--hours", "1", "--json"))
        proc = cli(small.url, tokens[2], "lease", "request", "--hours", "1", "--json")
    assert proc.returncode == ExitCode.EXHAUSTED
    assert json.loads(proc.stdout)["error"] == "PoolExhaustedError"
