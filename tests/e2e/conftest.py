"""The end-to-end slice on the REAL embedded lab: ``peerlab-tui lab up`` (real gateway, BIRD route servers,
wireguard-go, rs-agents) with the test's own prefix, users in their own namespaces driving the real verbs
(``lease``, ``tunnel``, ``bgp``, ``announce``, ``routes`` ...) as subprocesses, the way a user would.

One lab per module: the tests add users and never destroy it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab.bird import BirdControl, BirdError, ProtocolStatus
from lab.topology.procs import is_running as alive
from tests.lab.conftest import REPO, LabRun, lab_requirements, new_lab
from tests.support.requirements import require_binary

T = TypeVar("T")
WAIT = 60.0  # generous: other suites load this 2-core machine
UPSTREAM_PREFIXES = {"2001:db8:f000::/48", "2001:db8:f100::/48", "2001:db8:f200::/48", "2001:db8:f300::/48"}
ROUTE_SERVERS = ("rs1", "rs2")


def wait_until(check: Callable[[], T | None], timeout: float = WAIT, what: str = "condition",
               interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Lab:
    """The module's running lab."""

    run: LabRun
    summary: dict[str, Any]
    users: list[User] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)  # processes a user's clean-up had to kill by PID

    @property
    def gateway(self) -> str:
        """The gateway URL."""
        return str(self.summary["gateway"])

    def bird(self, rs: str) -> BirdControl:
        """A control connection to a route server's BIRD (close it)."""
        return BirdControl(self.run.state_dir / "rs" / rs / "bird.ctl", timeout=10)

    def protocols(self, rs: str) -> list[ProtocolStatus]:
        """``show protocols`` of a route server."""
        with self.bird(rs) as ctl:
            return ctl.show_protocols()

    def sessions_since(self) -> dict[tuple[str, str], str]:
        """(rs, protocol) -> since of every BGP session of both route servers (changes on any reset)."""
        return {(rs, p.name): p.since for rs in ROUTE_SERVERS for p in self.protocols(rs) if p.proto == "BGP"}

    def user_protocol(self, rs: str, asn: int) -> ProtocolStatus | None:
        """The BGP protocol of the user with ``asn`` on a route server (None when it has none)."""
        return next((p for p in self.protocols(rs) if p.name.startswith(f"u{asn}_")), None)

    def accepted(self, rs: str, protocol: str) -> set[str]:
        """Prefixes a route server's BIRD accepted from one session."""
        try:
            with self.bird(rs) as ctl:
                return {r.prefix for r in ctl.show_route(protocol=protocol)}
        except BirdError:
            return set()

    def add_user(self, name: str, tmp: Path) -> User:
        """``lab user add NAME --netns``, with a state directory of its own."""
        _, user = self.run.run("user", "add", name, "--netns")
        handle = User(name=name, token=user["token"], netns=user["netns"], gateway=self.gateway,
                      state_dir=tmp / f"user-{name}")
        self.users.append(handle)
        return handle

    def stop_users(self) -> list[str]:
        """Stop every user's BGP daemon and tunnel (a failed test must not leave wireguard-go behind): ``bgp
        down``, then every daemon/ExaBGP PID the user's answers showed is killed if it still runs. Returns
        what had to be killed (a test that leaves nothing behind returns [])."""
        killed: list[str] = []
        while self.users:
            user = self.users.pop()
            recorded = _recorded_pid(user.state_dir)
            if recorded is not None:
                user.pids.add(recorded)
            try:
                if (user.state_dir / "bgp" / "control.sock").exists():
                    user.cli("bgp", "down", check=False)
                if (user.state_dir / "tunnel" / "state.json").exists():
                    user.cli("tunnel", "down", "--keep-registration", check=False)
            finally:
                killed += [f"{user.name}: pid {pid}" for pid in kill_pids(user.pids)]
        self.leaked += killed
        return killed


@dataclass
class User:
    """A lab user driving the real ``peerlab-tui`` verbs from its own state dir, its side in ``netns``."""

    name: str
    token: str
    netns: str
    gateway: str
    state_dir: Path
    pids: set[int] = field(default_factory=set)  # daemon and ExaBGP PIDs seen in this user's answers

    @property
    def env(self) -> dict[str, str]:
        """What the README tells the user to export."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("PEERLAB_")}
        return {**base, "PEERLAB_GATEWAY_URL": self.gateway, "PEERLAB_TOKEN": self.token,
                "PEERLAB_STATE_DIR": str(self.state_dir)}

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> Any:
        """``peerlab-tui ARGS --json`` as this user; the parsed JSON (exit code checked unless ``check``)."""
        argv = [sys.executable, "-m", "peerlab_tui", *args, "--json"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=REPO)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        data = json.loads(out.stdout) if out.stdout.strip() else None
        if isinstance(data, dict) and "daemon_pid" in data:
            self.pids.update(p for p in (data.get("daemon_pid"), data.get("pid")) if isinstance(p, int))
        return data if check else (out.returncode, data)

    def lease(self) -> tuple[int, str]:
        """A lease (and the ASN it needs): (asn, prefix)."""
        answer = self.cli("lease", "request", "--hours", "2")
        return int(answer["asn"]), str(answer["lease"]["prefix"])

    def established(self) -> dict[str, Any] | None:
        """``bgp status`` once the sessions with both route servers are Established (None before)."""
        status = self.cli("bgp", "status")
        states = {s["rs"]: s["state"] for s in status["sessions"]}
        return status if all(states.get(rs) == "established" for rs in ROUTE_SERVERS) else None

    def verdicts(self, prefix: str) -> dict[str, dict[str, Any]]:
        """``routes``: rs -> the row of ``prefix``."""
        return {r["rs"]: r for r in self.cli("routes")["routes"] if r["prefix"] == prefix}


@pytest.fixture(scope="module")
def module_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the module, brought down at the end whatever happened."""
    lab_requirements()
    require_binary("ping")
    run = new_lab(tmp_path_factory.mktemp("e2e"))
    try:
        _, summary = run.run("up")
        assert summary["missing"] == []
        handle = Lab(run, summary)
        for rs in ROUTE_SERVERS:
            wait_until(lambda rs=rs: any(p.name == "t_upstream" and "Established" in p.info
                                         for p in handle.protocols(rs)), what=f"the upstream session of {rs}")
        yield handle
        handle.stop_users()
    finally:
        _, down = run.run("down", check=False)
    # Everything a user started must be gone before the lab goes: the lab never signals it, it reports it.
    assert down is not None and down["not_ours_left_running"] == {}, down


@pytest.fixture
def lab(module_lab: Lab) -> Iterator[Lab]:
    """The module's lab; the users a test adds have their daemons and tunnels stopped after it, and the test
    fails if any of their processes survived ``bgp down`` (they are killed by PID)."""
    try:
        yield module_lab
    finally:
        killed = module_lab.stop_users()
    assert not killed, f"processes survived bgp down and were killed by PID: {killed}"


def _recorded_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / "bgp" / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def kill_pids(pids: set[int]) -> list[int]:
    """SIGTERM, then SIGKILL, every PID still alive (only PIDs our own answers named); return those."""
    running = [pid for pid in pids if alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in running) and time.monotonic() < deadline:
            time.sleep(0.1)
    return running
