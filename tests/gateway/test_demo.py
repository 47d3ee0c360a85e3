"""``peerlab-tui demo --gateway-only``: the light demo (no root) works and leaves nothing behind. The full
demo (the whole slice on the embedded lab) is tested in tests/e2e/test_demo.py."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path

from tests.support.gateway import PEERLAB, _clean_env


def test_demo_json_and_cleanup() -> None:
    """The demo user gets a private ASN and a /48 from the documentation pool; the temp dir is removed."""
    out = subprocess.run(
        [PEERLAB, "demo", "--gateway-only", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=_clean_env() | {"PEERLAB_GW_MAX_LEASES": "0"},
    )  # must be ignored by the demo
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert 64512 <= result["asn"] <= 65534
    net = ipaddress.IPv6Network(result["lease"]["prefix"])
    assert net.prefixlen == 48 and net.subnet_of(ipaddress.IPv6Network("2001:db8::/32"))
    assert result["lease"]["end_time"] > result["lease"]["start_time"]


def test_demo_prints_each_step(tmp_path: Path) -> None:
    """Human output walks through the steps and reports the stop."""
    out = subprocess.run([PEERLAB, "demo", "--gateway-only"], capture_output=True, text=True, timeout=180,
                         env=_clean_env())
    assert out.returncode == 0, out.stderr
    workdir = re.search(r"database in (\S+)", out.stdout)
    assert workdir and not Path(workdir.group(1)).exists()
    for text in (
        "gateway listening on http://127.0.0.1:",
        "assigned ASN",
        "leased 2001:db8:",
        "gateway stopped",
    ):
        assert text in out.stdout
    port = re.search(r"127\.0\.0\.1:(\d+)", out.stdout)
    assert port
    import httpx

    try:
        httpx.get(f"http://127.0.0.1:{port.group(1)}/healthz", timeout=2)
        still_up = True
    except httpx.HTTPError:
        still_up = False
    assert not still_up
