"""``peerlab-tui demo`` (the README's main command): the whole slice on its own throwaway lab, and a failing
step still removes everything and names the step."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import lab.demo
from lab.topology import procs
from peerlab_tui.core import netns
from tests.e2e.conftest import ROUTE_SERVERS, UPSTREAM_PREFIXES, alive
from tests.lab.conftest import REPO, lab_requirements
from tests.support.requirements import require_binary, require_root

pytestmark = pytest.mark.netns


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PEERLAB_")}
    return subprocess.run([sys.executable, "-m", "peerlab_tui", "demo", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env={**clean, **(env or {})})


def _nothing_left(prefix: str, state_dir: str, result: dict[str, Any] | None = None) -> None:
    assert [n for n in netns.list_netns() if n.startswith(f"{prefix}-")] == []
    assert procs.marked_pids(prefix) == []
    wg = Path("/var/run/wireguard")
    assert not wg.is_dir() or not list(wg.glob(f"{prefix}-*"))
    assert not Path(state_dir).exists()
    if result is not None:
        # The user side too: its tunnel interfaces (wireguard-go) and its BGP daemon are gone.
        for ifname in result["tunnel"].values():
            assert not (wg / f"{ifname}.sock").exists(), ifname
            assert not _wireguard_go_for(ifname), ifname
        assert not alive(result["daemon_pid"])
        assert result["cleanup_problems"] == []


def _wireguard_go_for(ifname: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"wireguard-go") for a in argv[:2]) and ifname.encode() in argv:
                found.append(int(entry.name))
    return [pid for pid in found if alive(pid)]


def test_demo_json_runs_the_whole_slice_and_cleans_up() -> None:
    lab_requirements()
    require_binary("ping")
    out = _demo("--json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and not result["kept"]
    assert [s["name"] for s in result["steps"]][:3] == ["lab up", "lab user add demo --netns",
                                                        "asn + lease request"]
    assert all(s["ok"] for s in result["steps"])
    assert result["sessions"] == {rs: "established" for rs in ROUTE_SERVERS}
    lease = result["lease"]["prefix"]
    assert {(r["rs"], r["prefix"], r["state"]) for r in result["routes"]} == {
        (rs, lease, "accepted") for rs in ROUTE_SERVERS}
    for rs in ROUTE_SERVERS:
        assert {r["prefix"] for r in result["received"] if r["rs"] == rs} >= UPSTREAM_PREFIXES
    assert result["ping"]["rtt_ms"] is not None
    assert ipaddress.IPv6Address(result["ping"]["from"]) in ipaddress.IPv6Network(lease)
    assert result["netns"] == f"{result['prefix']}-demo"
    _nothing_left(result["prefix"], result["state_dir"], result)


def test_a_failing_step_is_named_and_everything_is_removed(tmp_path: Path) -> None:
    """BIRD that cannot start: the demo fails at 'lab up', says so, exits non-zero, and leaves nothing."""
    lab_requirements()
    fake = tmp_path / "bin"
    fake.mkdir()
    bird = fake / "bird"
    bird.write_text("#!/bin/sh\necho 'bird: broken on purpose' >&2\nexit 1\n")
    bird.chmod(bird.stat().st_mode | stat.S_IXUSR)
    out = _demo("--json", env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert out.returncode != 0
    result = json.loads(out.stdout)
    assert not result["ok"] and result["failed_step"] == "lab up"
    assert "demo failed at step 'lab up'" in out.stderr and "bird" in out.stderr
    assert result["steps"][-1]["name"].startswith("clean up") and result["steps"][-1]["ok"]
    _nothing_left(result["prefix"], result["state_dir"])


def test_clean_up_problems_fail_the_demo_and_say_what_was_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice that worked but whose clean-up left something behind exits 1 and names what was left."""
    require_root()  # the full demo refuses to start without root

    def cleanup(self: lab.demo.SliceDemo) -> list[str]:
        shutil.rmtree(self.workdir, ignore_errors=True)
        return ["the BGP daemon (pid 4242) still runs"]

    monkeypatch.setattr(lab.demo.SliceDemo, "run", lambda self: self.summary)
    monkeypatch.setattr(lab.demo.SliceDemo, "cleanup", cleanup)
    out = CliRunner().invoke(lab.demo.demo, ["--json"])
    assert out.exit_code == 1, out.output
    result = json.loads(out.stdout.strip().splitlines()[0])
    assert result["ok"] is False and result["cleanup_problems"] == ["the BGP daemon (pid 4242) still runs"]
    assert "pid 4242" in out.stderr
    human = CliRunner().invoke(lab.demo.demo, [])
    assert human.exit_code == 1 and "left behind: the BGP daemon (pid 4242) still runs" in human.stderr
