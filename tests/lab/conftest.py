"""Fixtures of the lab tests: run ``peerlab-tui lab ...`` as a subprocess with a unique prefix."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.requirements import require_binary, require_root

REPO = Path(__file__).resolve().parents[2]


@dataclass
class LabRun:
    """One lab under test: its prefix and state directory, and a way to run its verbs."""

    prefix: str
    state_dir: Path

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> tuple[int, Any]:
        """Run ``peerlab-tui lab ARGS --prefix P --state-dir D --json``; return (exit code, parsed JSON)."""
        argv = [sys.executable, "-m", "peerlab_tui", "lab", *args, "--prefix", self.prefix,
                "--state-dir", str(self.state_dir), "--json"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        try:
            data = json.loads(out.stdout) if out.stdout.strip() else None
        except ValueError as exc:
            raise AssertionError(f"{' '.join(args)} printed no JSON:\n{out.stdout}\n{out.stderr}") from exc
        return out.returncode, data

    def state(self) -> dict[str, Any]:
        """The lab's state.json."""
        data: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        return data


def lab_requirements() -> None:
    """Root and the binaries the lab runs."""
    require_root()
    require_binary("ip", "bird", "wireguard-go")


def new_lab(tmp: Path) -> LabRun:
    """A lab with a fresh prefix (never collides with a real lab or another test)."""
    return LabRun(prefix=f"t{secrets.token_hex(3)}", state_dir=tmp / "state")


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Iterator[LabRun]:
    """A lab for one test, brought down at the end whatever happened."""
    lab_requirements()
    run = new_lab(tmp_path)
    try:
        yield run
    finally:
        run.run("down", check=False)


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    """One lab per module (built once: tests that do not destroy it share it), and its ``lab up`` answer."""
    lab_requirements()
    run = new_lab(tmp_path_factory.mktemp("lab"))
    try:
        _, summary = run.run("up")
        yield run, summary
    finally:
        run.run("down", check=False)
