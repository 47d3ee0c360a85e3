"""Layering rules of ARCHITECTURE.md, checked in fresh interpreters."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import peerlab_tui.core

REPO = Path(__file__).resolve().parent.parent


def _core_modules() -> list[str]:
    # __main__ modules are scripts (running them is not importing the library), so they are left out.
    return sorted(
        m.name
        for m in pkgutil.walk_packages(peerlab_tui.core.__path__, prefix="peerlab_tui.core.")
        if not m.name.endswith(".__main__")
    )


def _import_and_list(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("MODULES=")]
    # The core never prints: anything else on stdout is a defect too.
    assert len(lines) == 1 and len(out.stdout.splitlines()) == 1, out.stdout[:2000]
    return set(json.loads(lines[0].removeprefix("MODULES=")))


def test_core_never_imports_textual() -> None:
    """Importing every module of the core must not load textual (the core is UI-free)."""
    modules = _core_modules()
    assert "peerlab_tui.core.errors" in modules and "peerlab_tui.core.models" in modules
    loaded = _import_and_list(modules)
    assert not {m for m in loaded if m == "textual" or m.startswith("textual.")}


def test_core_never_imports_lab() -> None:
    """The user side's core must not depend on the platform side."""
    loaded = _import_and_list(_core_modules())
    assert not {m for m in loaded if m == "lab" or m.startswith("lab.")}


def test_sentinel_detects_textual() -> None:
    """The check above can fail: importing textual is seen in sys.modules."""
    loaded = _import_and_list(["textual.app"])
    assert "textual" in loaded
