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
    return sorted(
        m.name for m in pkgutil.walk_packages(peerlab_tui.core.__path__, prefix="peerlab_tui.core.")
    )


def _import_and_list(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(out.stdout))


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
