"""Requirements of integration tests: binaries, root, network namespaces.

Locally a missing requirement skips the test with the reason. In CI (``CI`` set) or with
``PEERLAB_REQUIRE_ALL=1`` it fails instead, so a broken install can never turn into a green run of skips.
"""

from __future__ import annotations

import os
import shutil

import pytest


def strict() -> bool:
    """True when missing requirements must fail rather than skip."""
    return bool(os.environ.get("CI")) or os.environ.get("PEERLAB_REQUIRE_ALL") == "1"


def _missing(reason: str) -> None:
    if strict():
        pytest.fail(f"required for this test and missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(*names: str) -> dict[str, str]:
    """Return the paths of the named binaries, or skip/fail the test when one is missing."""
    paths: dict[str, str] = {}
    for name in names:
        path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if path is None:
            _missing(f"binary {name!r} not found")
            raise AssertionError("unreachable")
        paths[name] = path
    return paths


def require_root() -> None:
    """Skip/fail unless running as root (network namespaces, WireGuard, PostgreSQL cluster)."""
    if os.geteuid() != 0:
        _missing("needs root")
