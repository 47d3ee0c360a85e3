"""A database that cannot be used is a clear one-line error with a documented exit code, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PEERLAB = str(Path(sys.executable).parent / "peerlab-tui")


@pytest.mark.parametrize(
    ("url", "code", "needle"),
    [
        ("postgresql://nobody@127.0.0.1:1/db", 7, "cannot use the database"),
        ("sqlite:////proc/no-such-dir/x.db", 2, "cannot open the database"),
        ("sqlite://", 2, "in-memory database"),
        ("mysql://a/b", 2, "unsupported database"),
    ],
)
def test_bad_database_urls(url: str, code: int, needle: str, tmp_path: Path) -> None:
    """`gateway init --json`: the error on stdout as JSON and on stderr as one line; no traceback."""
    out = subprocess.run([PEERLAB, "gateway", "init", "--db", url, "--json"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == code, out.stderr
    assert needle in json.loads(out.stdout)["message"]
    assert "Traceback" not in out.stderr and out.stderr.startswith("error: ")
