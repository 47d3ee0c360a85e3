"""Suite-wide pytest configuration. Area-specific fixtures live in each test folder's own conftest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"

# Fixtures shared across areas (each area keeps its own in its folder's conftest.py).
pytest_plugins = ["tests.support.netns"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (CI has it); tests that need it skip when it is absent."""
    path = Path(os.environ.get("PEERLAB_SHARED", SHARED))
    if not path.is_dir():
        pytest.skip("../shared is not present")
    return path
