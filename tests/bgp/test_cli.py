"""The headless verbs: ``bgp up`` (gateway mocked over HTTP, BIRD real) starts the daemon in the background;
``bgp status``, ``announce`` (and ``--dry-run``), ``withdraw``, ``received``, ``routes`` and ``bgp down``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from peerlab_tui._cli.lease import ClientFactory
from peerlab_tui.cli import main
from peerlab_tui.core.bgp.daemon import control_path
from tests.bgp.conftest import USER_ASN, BgpLab, wait_until

pytestmark = pytest.mark.netns

PREFIX = "2001:db8:100::/48"


def gateway_transport(lab: BgpLab, verdicts: list[dict[str, Any]]) -> httpx.MockTransport:
    """A gateway answering the calls ``bgp up`` and ``routes`` make, pointing at the lab's BIRD."""
    now = datetime.now(UTC)
    info = {"user_hash": "u1", "asn": USER_ASN, "max_leases": 5, "active_leases": [
        {"prefix": PREFIX, "start_time": (now - timedelta(minutes=1)).isoformat(),
         "end_time": (now + timedelta(hours=1)).isoformat()}]}
    addresses = [f"{lab.prefix}::2/64", f"{lab.prefix}::12/64"]
    tunnel = {"addresses": addresses, "asn": USER_ASN, "route_servers": [
        {"name": "rs1", "public_key": "x", "endpoint": "[::1]:1", "overlay_address": f"{lab.prefix}::1",
         "bgp_neighbor": f"{lab.prefix}::1", "asn": 64500, "local_address": f"{lab.prefix}::2/64"},
        {"name": "rs2", "public_key": "x", "endpoint": "[::1]:2", "overlay_address": f"{lab.prefix}::11",
         "bgp_neighbor": f"{lab.prefix}::11", "asn": 64501, "local_address": f"{lab.prefix}::12/64"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer secret-token"
        path = (request.method, request.url.path)
        if path == ("GET", "/api/user/info"):
            return httpx.Response(200, json=info)
        if path == ("GET", "/api/user/tunnel"):
            return httpx.Response(200, json=tunnel)
        if path == ("GET", "/api/user/routes"):
            return httpx.Response(200, json={"routes": verdicts})
        return httpx.Response(404, json={"error": 404, "message": f"no {path}"})

    return httpx.MockTransport(handler)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short state directory (the control socket path must fit a unix socket)."""
    path = Path(tempfile.mkdtemp(prefix="plbgpcli"))
    yield path
    try:
        if control_path(path).exists():
            CliRunner().invoke(main, ["bgp", "down", "--state-dir", str(path)])
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(args: list[str], transport: httpx.MockTransport | None = None) -> Result:
    """Invoke the CLI in-process (gateway calls go to ``transport``)."""
    env = {"PEERLAB_GATEWAY_URL": "http://127.0.0.1:9", "PEERLAB_TOKEN": "secret-token"}
    return CliRunner().invoke(main, args, obj=ClientFactory(transport, retries=0) if transport else None,
                              env=env)


def as_json(result: Result) -> Any:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_headless_verbs_end_to_end(bgp_lab: BgpLab, state_dir: Path) -> None:
    """up -> status -> dry-run -> announce -> refusal -> received -> routes -> withdraw -> down."""
    verdicts = [{"rs": "rs1", "prefix": PREFIX, "as_path": [USER_ASN, USER_ASN], "communities": ["64500:1"],
                 "large_communities": [], "med": None, "state": "accepted"},
                {"rs": "rs2", "prefix": PREFIX, "as_path": [USER_ASN, USER_ASN], "state": "filtered",
                 "reason": "not in IRR"}]
    transport = gateway_transport(bgp_lab, verdicts)
    sd = ["--state-dir", str(state_dir)]

    up = run(["bgp", "up", "--no-tunnel", "--netns", bgp_lab.speaker_ns, *sd, "--json"], transport)
    assert up.exit_code == 0, up.output
    status = as_json(up)
    assert status["asn"] == USER_ASN and status["netns"] == bgp_lab.speaker_ns
    daemon_pid = status["daemon_pid"]
    assert daemon_pid != os.getpid()  # it runs in the background
    assert oct(control_path(state_dir).stat().st_mode & 0o777) == "0o600"
    assert "secret-token" not in (state_dir / "bgp" / "daemon.json").read_text()

    def sessions_up() -> bool:
        st = as_json(run(["bgp", "status", *sd, "--json"]))
        return all(s["state"] == "established" for s in st["sessions"])

    wait_until(sessions_up, 30, "sessions established")
    human = run(["bgp", "status", *sd])
    assert human.exit_code == 0 and "established" in human.stdout and "rs2" in human.stdout

    args = ["announce", PREFIX, "--rs", "rs1", "--prepend", "1", "--community", "64500:1", "--med", "5", *sd]
    dry = run([*args, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    preview = as_json(dry)
    assert preview["dry_run"] is True and preview["as_path"] == [USER_ASN, USER_ASN]
    assert PREFIX not in bgp_lab.routes("rs1")  # a dry run sends nothing

    sent = run([*args, "--json"])
    assert sent.exit_code == 0, sent.output
    assert as_json(sent)["commands"] == preview["commands"]
    wait_until(lambda: PREFIX in bgp_lab.routes("rs1"), 30, "BIRD to get the route")
    route = bgp_lab.routes("rs1")[PREFIX]
    assert route.as_path == [USER_ASN, USER_ASN] and route.med == 5 and route.communities == ["64500:1"]
    assert PREFIX not in bgp_lab.routes("rs2")

    refused = run(["announce", "2001:db8:999::/48", *sd, "--json"])
    assert refused.exit_code == 4
    error = as_json(refused)
    assert error["error"] == "SafetyError" and "lease" in error["message"] and PREFIX in error["message"]
    refused = run(["announce", PREFIX, "--prepend", "9", *sd])
    assert refused.exit_code == 4 and "prepend" in refused.stderr

    got = run(["received", "--rs", "rs1", *sd, "--json"])
    assert {r["prefix"] for r in as_json(got)["routes"]} == {"2001:db8:f00::/48", "2001:db8:f01::/48"}
    assert run(["received", "--rs", "nope", *sd]).exit_code == 6

    glass = run(["routes", *sd, "--json"], transport)
    assert glass.exit_code == 0, glass.output
    rows = {(r["rs"], r["prefix"]): r for r in as_json(glass)["routes"]}
    assert rows[("rs1", PREFIX)]["state"] == "accepted"
    assert rows[("rs1", PREFIX)]["sent_as_path"] == [USER_ASN, USER_ASN]
    assert rows[("rs2", PREFIX)]["state"] == "filtered" and rows[("rs2", PREFIX)]["reason"] == "not in IRR"
    assert "filtered" in run(["routes", *sd], transport).stdout

    out = run(["withdraw", PREFIX, *sd, "--json"])
    assert out.exit_code == 0 and len(as_json(out)["commands"]) == 1
    wait_until(lambda: PREFIX not in bgp_lab.routes("rs1"), 30, "BIRD to drop the route")

    down = run(["bgp", "down", *sd])
    assert down.exit_code == 0, down.output
    assert not control_path(state_dir).exists()
    wait_until(lambda: not _alive(daemon_pid), 30, "the daemon to exit")
    wait_until(lambda: "Established" not in bgp_lab.birdc("show", "protocols", "rs1"), 30, "session down")
    gone = run(["bgp", "status", *sd])
    assert gone.exit_code == 7 and "bgp up" in gone.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state in /proc says it is gone.
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return False


def test_verbs_without_a_daemon_fail_cleanly(state_dir: Path) -> None:
    """No daemon: every verb exits with UNREACHABLE (7) and says how to start it; bad input is USAGE (2)."""
    for args in (["bgp", "status"], ["announce", PREFIX], ["withdraw", PREFIX], ["received"]):
        result = run([*args, "--state-dir", str(state_dir), "--json"])
        assert result.exit_code == 7, (args, result.output)
        assert as_json(result)["error"] == "SpeakerNotRunningError"
    assert run(["announce", PREFIX, "--rs", ",", "--state-dir", str(state_dir)]).exit_code == 2
