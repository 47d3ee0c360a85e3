"""The headless verbs: ``bgp up`` (gateway mocked over HTTP, BIRD real) starts the daemon in the background;
``bgp status``, ``announce`` (and ``--dry-run``), ``withdraw``, ``received``, ``routes`` and ``bgp down``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
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
from peerlab_tui.core.bgp.daemon import control_path, daemon_pid
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
    """A short state directory (the control socket path must fit a unix socket). Every daemon started in it
    is stopped at the end: by ``bgp down``, else killed by its recorded PID (and the test then fails)."""
    path = Path(tempfile.mkdtemp(prefix="plbgpcli"))
    pids: set[int] = set()
    PIDS[path] = pids
    leaked: list[int] = []
    try:
        yield path
    finally:
        try:
            recorded = daemon_pid(path)
            if recorded is not None:
                pids.add(recorded)
            if control_path(path).exists():
                CliRunner().invoke(main, ["bgp", "down", "--state-dir", str(path)])
            leaked = kill_pids(pids)
        finally:
            PIDS.pop(path, None)
            shutil.rmtree(path, ignore_errors=True)
    assert not leaked, f"daemon processes survived bgp down and had to be killed: {leaked}"


PIDS: dict[Path, set[int]] = {}  # state dir -> daemon and ExaBGP PIDs seen in its answers


def kill_pids(pids: set[int]) -> list[int]:
    """SIGTERM, then SIGKILL, every PID still alive; return those that were."""
    alive = [pid for pid in pids if _alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not any(_alive(p) for p in alive), 10, "processes to exit")
    return alive


def run(args: list[str], transport: httpx.MockTransport | None = None) -> Result:
    """Invoke the CLI in-process (gateway calls go to ``transport``)."""
    env = {"PEERLAB_GATEWAY_URL": "http://127.0.0.1:9", "PEERLAB_TOKEN": "secret-token"}
    return CliRunner().invoke(main, args, obj=ClientFactory(transport, retries=0) if transport else None,
                              env=env)


def as_json(result: Result) -> Any:
    assert result.stdout.strip(), result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    _remember_pids(data)
    return data


def _remember_pids(data: Any) -> None:
    # Every daemon/ExaBGP PID a test sees is recorded, so its fixture can kill it by PID if it survives.
    if isinstance(data, dict) and "daemon_pid" in data:
        for pids in PIDS.values():
            pids.update(p for p in (data.get("daemon_pid"), data.get("pid")) if isinstance(p, int))


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


def fake_tunnel_state(state_dir: Path, netns: str, lab: BgpLab) -> Path:
    """Record a tunnel as ``tunnel up --netns NETNS`` would (the lab's veth stands in for WireGuard)."""
    directory = state_dir / "tunnel"
    directory.mkdir(parents=True)
    links = [("rs1", f"{lab.prefix}::1", f"{lab.prefix}::2/64"),
             ("rs2", f"{lab.prefix}::11", f"{lab.prefix}::12/64")]
    records = [{"ifname": f"plwtest{i}", "netns": netns, "backend": "wireguard-go", "pid": None,
                "rs_name": rs, "rs_public_key": "x", "endpoint": f"[::1]:{i + 1}", "overlay_address": address,
                "bgp_neighbor": address, "local_address": local, "routes": []}
               for i, (rs, address, local) in enumerate(links)]
    path = directory / "state.json"
    path.write_text(json.dumps({"version": 1, "public_key": "x", "interfaces": records}))
    return path


def test_options_exit_codes_rules_schedule_and_persistent_history(bgp_lab: BgpLab, state_dir: Path) -> None:
    """bgp up defaults --netns to the tunnel's and refuses another; a running daemon with other options is
    refused (or restarted with --restart); exit codes 2/4/6 with the rule in the JSON error; the schedule in
    status; the rate-limit history survives bgp down/up; a tunnel the user brought up stays up."""
    transport = gateway_transport(bgp_lab, [])
    sd = ["--state-dir", str(state_dir)]
    tunnel_state = fake_tunnel_state(state_dir, bgp_lab.speaker_ns, bgp_lab)

    wrong = run(["bgp", "up", "--no-tunnel", "--netns", bgp_lab.rs_ns, *sd, "--json"], transport)
    assert wrong.exit_code == 2, wrong.output
    assert bgp_lab.speaker_ns in as_json(wrong)["message"] and not control_path(state_dir).exists()

    up = run(["bgp", "up", "--no-tunnel", "--min-change-interval", "600", *sd, "--json"], transport)
    assert up.exit_code == 0, up.output
    status = as_json(up)
    assert status["netns"] == bgp_lab.speaker_ns  # the tunnel's namespace, without --netns
    assert status["options"]["min_change_interval"] == 600
    first_pid = status["daemon_pid"]

    def sessions_up() -> bool:
        st = as_json(run(["bgp", "status", *sd, "--json"]))
        return all(s["state"] == "established" for s in st["sessions"])

    wait_until(sessions_up, 60, "sessions established in the tunnel's namespace")

    other = run(["bgp", "up", "--no-tunnel", "--min-change-interval", "5", *sd, "--json"], transport)
    assert other.exit_code == 2, other.output
    message = as_json(other)["message"]
    assert "min_change_interval: running 600.0, asked 5.0" in message and "--restart" in message
    same = run(["bgp", "up", "--no-tunnel", "--min-change-interval", "600", *sd, "--json"], transport)
    assert same.exit_code == 0 and as_json(same)["daemon_pid"] == first_pid

    malformed = run(["announce", "2001:db8:100::1/48", *sd, "--json"])
    assert malformed.exit_code == 2 and as_json(malformed)["rule"] == "malformed"
    for args in (["announce", PREFIX, "--rs", "rs9"], ["withdraw", PREFIX, "--rs", "rs9"],
                 ["received", "--rs", "rs9"]):
        unknown = run([*args, *sd, "--json"])
        assert unknown.exit_code == 6, (args, unknown.output)
        assert as_json(unknown)["rule"] == "route-server" and "rs9" in as_json(unknown)["message"]
    nothing = run(["withdraw", PREFIX, *sd, "--json"])
    assert nothing.exit_code == 6 and "not announced" in as_json(nothing)["message"]

    sent = run(["announce", PREFIX, "--rs", "rs1", *sd, "--json"])
    assert sent.exit_code == 0, sent.output  # not locked by the refused withdrawal above
    limited = run(["announce", PREFIX, "--rs", "rs1", "--med", "1", *sd, "--json"])
    assert limited.exit_code == 4 and as_json(limited)["rule"] == "rate-limit"

    status = as_json(run(["bgp", "status", *sd, "--json"]))
    end = datetime.fromisoformat(status["leases"][0]["end_time"])
    [row] = status["announced"]
    assert datetime.fromisoformat(row["withdraw_at"]) == end - timedelta(seconds=60)
    assert row["warned"] is False
    table = run(["bgp", "status", *sd]).stdout
    assert "WITHDRAW AT (UTC)" in table and "WARNED" in table

    down = run(["bgp", "down", *sd, "--json"])
    assert down.exit_code == 0, down.output
    assert as_json(down)["tunnel_kept"] is True and as_json(down)["tunnel_removed"] == []
    assert tunnel_state.exists()  # the user's tunnel is not bgp's to take down
    again = run(["bgp", "up", "--no-tunnel", "--min-change-interval", "600", *sd, "--json"], transport)
    assert again.exit_code == 0, again.output
    second_pid = as_json(again)["daemon_pid"]
    assert second_pid != first_pid
    wait_until(sessions_up, 60, "sessions established again")
    relimited = run(["announce", PREFIX, "--rs", "rs1", *sd, "--json"])
    assert relimited.exit_code == 4 and as_json(relimited)["rule"] == "rate-limit"  # history.json kept it
    assert oct((state_dir / "bgp" / "history.json").stat().st_mode & 0o777) == "0o600"

    restarted = run(["bgp", "up", "--no-tunnel", "--min-change-interval", "0", "--restart", *sd, "--json"],
                    transport)
    assert restarted.exit_code == 0, restarted.output
    assert as_json(restarted)["daemon_pid"] not in (first_pid, second_pid)
    assert as_json(restarted)["options"]["min_change_interval"] == 0
    wait_until(lambda: not _alive(second_pid), 30, "the old daemon to exit")


def test_bgp_up_without_a_token_names_the_variable(state_dir: Path) -> None:
    """A missing setting is bad input (exit 2) and says what to set; nothing starts."""
    env = {"PEERLAB_GATEWAY_URL": "http://127.0.0.1:9", "PEERLAB_TOKEN": ""}
    result = CliRunner().invoke(main, ["bgp", "up", "--state-dir", str(state_dir), "--json"], env=env)
    assert result.exit_code == 2, result.output
    assert "PEERLAB_TOKEN" in as_json(result)["message"]
    assert not control_path(state_dir).exists() and daemon_pid(state_dir) is None
