"""Gateway settings: precedence (CLI > env > file > defaults) and clear validation errors."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
import yaml

from lab.gateway.config import GatewayConfig, build_config
from peerlab_tui.core.errors import ConfigError
from tests.support.gateway import PEERLAB, _clean_env

KEY = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="


def test_defaults_are_safe(tmp_path: Path) -> None:
    """Loopback, one worker's worth of defaults, a documentation-space pool, private ASNs, no secrets."""
    cfg = build_config({}, {"PEERLAB_STATE_DIR": str(tmp_path)})
    assert cfg == GatewayConfig(db=cfg.db)
    assert cfg.listen == "127.0.0.1:8080" and cfg.lease_length == 48
    assert all(p.subnet_of(ipaddress.IPv6Network("2001:db8::/32")) for p in cfg.prefix_pools)
    assert 64512 <= cfg.asn_first <= cfg.asn_last <= 65534
    assert cfg.clock_file is None and cfg.route_servers == ()


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    """Each layer overrides the one below it, key by key."""
    f = tmp_path / "gw.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "listen": "127.0.0.1:9000",
                "prefix_pools": ["2001:db8:a::/48"],
                "lease_length": 56,
                "max_leases": 3,
                "min_hours": 2,
                "asn_range": "64600-64700",
                "route_servers": [
                    {
                        "name": "rs1",
                        "public_key": KEY,
                        "endpoint": "[::1]:51820",
                        "overlay_network": "fd70:70:1::/64",
                        "overlay_address": "fd70:70:1::1",
                        "asn": 64500,
                    }
                ],
            }
        )
    )
    env = {
        "PEERLAB_GW_MAX_LEASES": "4",
        "PEERLAB_GW_PREFIX_POOLS": "2001:db8:b::/48, 2001:db8:c::/48",
        "PEERLAB_GW_DB": "sqlite:////env.db",
    }
    cfg = build_config({"max_leases": 5, "prefix_pools": [], "db": None}, env, f)
    assert cfg.listen == "127.0.0.1:9000" and cfg.lease_length == 56 and cfg.min_hours == 2  # file
    assert cfg.asn_first == 64600 and cfg.asn_last == 64700
    assert [str(p) for p in cfg.prefix_pools] == ["2001:db8:b::/48", "2001:db8:c::/48"]  # env over file
    assert cfg.db == "sqlite:////env.db"
    assert cfg.max_leases == 5  # CLI over env
    assert cfg.route_servers[0].name == "rs1" and str(cfg.route_servers[0].overlay_address) == "fd70:70:1::1"
    env_file = build_config({}, {"PEERLAB_GW_CONFIG": str(f)})
    assert env_file.max_leases == 3


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"prefix_pools": ["2001:db8::1/48"]}, "host bits"),
        ({"prefix_pools": ["not-a-cidr"]}, "prefix_pools"),
        ({"prefix_pools": ["10.0.0.0/8"]}, "prefix_pools"),
        ({"prefix_pools": ["2001:db8::/48", "2001:db8::/56"]}, "overlap"),
        ({"prefix_pools": ["2001:db8::/48"], "lease_length": 40}, "do not fit"),
        ({"lease_length": 96}, "longer than"),
        ({"asn_range": "65000-65999"}, "private asn range"),
        ({"asn_range": "100-200"}, "private asn range"),
        ({"asn_range": "4200000000-4294967295"}, "private asn range"),
        ({"asn_range": "65010-65000"}, "starts after"),
        ({"asn_range": "abc"}, "first-last"),
        ({"min_hours": 5, "max_hours": 4}, "greater than max_hours"),
        ({"min_hours": 0}, "min_hours"),
        ({"max_hours": 100}, "max_lifetime_hours"),
        ({"max_leases": "many"}, "max_leases"),
        ({"quarantine_seconds": -1}, "quarantine_seconds"),
        ({"listen": "localhost"}, "host:port"),
        ({"listen": "127.0.0.1:99999"}, "host:port"),
        ({"db": "gateway.sqlite"}, "database url"),
        ({"route_servers": ["rs1,key"]}, "expected name"),
        ({"route_servers": [f"rs1,{KEY},h:1,fd70::/48,fd70::1,64500"]}, "/64"),
        ({"route_servers": [f"rs1,{KEY},h:1,fd70::/64,fd71::1,64500"]}, "outside"),
        ({"route_servers": ["rs1,notakey,h:1,fd70::/64,fd70::1,64500"]}, "public_key"),
    ],
)
def test_validation_errors_name_the_setting(values: dict[str, object], fragment: str) -> None:
    """Each bad setting is a ConfigError whose message says which and why."""
    with pytest.raises(ConfigError) as err:
        build_config(values, {})
    assert fragment.lower() in str(err.value).lower()


def test_config_file_errors(tmp_path: Path) -> None:
    """Unknown keys, non-mapping YAML and missing files are reported with the file name."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("prefix_pool: [2001:db8::/48]\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*prefix_pool"):
        build_config({}, {}, bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config({}, {}, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        build_config({}, {}, tmp_path / "missing.yaml")


def test_serve_rejects_bad_settings_before_starting(tmp_path: Path) -> None:
    """The command line reports a bad setting on stderr with exit code 2 and serves nothing."""
    out = subprocess.run(
        [
            PEERLAB,
            "gateway",
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--prefix-pool",
            "2001:db8::1/48",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    assert out.returncode == 2
    assert "prefix_pools" in out.stderr and "host bits" in out.stderr
    env = _clean_env() | {"PEERLAB_GW_MIN_HOURS": "9", "PEERLAB_GW_MAX_HOURS": "3"}
    out = subprocess.run(
        [PEERLAB, "gateway", "serve", "--db", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2 and "min_hours (9) is greater than max_hours (3)" in out.stderr
