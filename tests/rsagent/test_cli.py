"""``peerlab-tui rs-agent``: bad input gets a clear error and the documented exit code."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lab.rsagent.cli import rs_agent
from lab.rsagent.settings import write_settings
from tests.rsagent.conftest import make_settings

BASE = ["--gateway", "http://127.0.0.1:9", "--token", "x" * 20, "--bird-socket", "/nonexistent.ctl"]


def test_missing_settings_file(tmp_path: Path) -> None:
    """No rs.yaml: exit code 2 naming the file."""
    out = CliRunner().invoke(rs_agent, ["--rs", "rs1", *BASE, "--config-dir", str(tmp_path), "--once"])
    assert out.exit_code == 2
    assert "rs.yaml does not exist" in out.output


def test_invalid_settings_are_explained(tmp_path: Path) -> None:
    """A malformed rs.yaml names the bad setting; --json gives a machine-readable error."""
    (tmp_path / "rs.yaml").write_text("name: rs1\nasn: 64500\nrouter_id: not-an-ip\noverlay: []\n")
    out = CliRunner().invoke(rs_agent, ["--rs", "rs1", *BASE, "--config-dir", str(tmp_path), "--once",
                                        "--json"])
    assert out.exit_code == 2
    err = json.loads(out.stdout.splitlines()[0])
    assert err["error"] == "ConfigError" and "router_id" in err["message"]


def test_name_mismatch(tmp_path: Path) -> None:
    """--rs must match the name in rs.yaml (one agent per route server)."""
    write_settings(tmp_path, make_settings())
    out = CliRunner().invoke(rs_agent, ["--rs", "rs9", *BASE, "--config-dir", str(tmp_path), "--once"])
    assert out.exit_code == 2 and "does not match" in out.output


def test_settings_round_trip(tmp_path: Path) -> None:
    """write_settings / load_settings keep every field."""
    from lab.rsagent.settings import load_settings

    settings = make_settings(max_more_specific_length=56, wireguard_interface="wgrs1")
    write_settings(tmp_path, settings)
    assert load_settings(tmp_path) == settings
