"""``peerlab-tui lab up/status/down/user add`` against real BIRD, wireguard-go and the gateway."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lab.bird import BirdControl, BirdError
from lab.topology import procs
from lab.topology.builder import host_links
from lab.topology.models import DEFAULT_TOPOLOGY
from peerlab_tui.core import netns
from peerlab_tui.core.errors import ExitCode
from tests.lab.conftest import LabRun

pytestmark = pytest.mark.netns

NOTHING: dict[str, list[Any]] = {"netns": [], "links": [], "processes": [], "wireguard_sockets": []}
UPSTREAM_PREFIXES = {"2001:db8:f000::/48", "2001:db8:f100::/48", "2001:db8:f200::/48", "2001:db8:f300::/48"}


def wait_until(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def rs_prefixes(run: LabRun, rs: str) -> set[str]:
    """Prefixes in a route server's BIRD table, read over its control socket."""
    try:
        with BirdControl(run.state_dir / "rs" / rs / "bird.ctl", timeout=5) as ctl:
            return {r.prefix for r in ctl.show_route()}
    except BirdError:
        return set()


def leftovers(prefix: str) -> dict[str, list[Any]]:
    """Everything on the machine that carries the lab's prefix."""
    return {
        "netns": [n for n in netns.list_netns() if n.startswith(f"{prefix}-")],
        "links": [n for n in host_links() if n.startswith(f"{prefix}-")],
        "processes": procs.marked_pids(prefix),
        "wireguard_sockets": sorted(str(p) for p in Path("/var/run/wireguard").glob(f"{prefix}-*"))
        if Path("/var/run/wireguard").is_dir() else [],
    }


def assert_healthy_except_missing(status: dict[str, Any], code: int) -> None:
    """Every part is up, except the parts ``lab up`` reported as not installed; the exit code says so."""
    missing = {p["part"] for p in status["parts"] if p["detail"].startswith("not installed")}
    down = [p for p in status["parts"] if not p["ok"] and p["part"] not in missing]
    assert not down, down
    assert code == (1 if missing else 0)
    assert status["ok"] == (not missing)


def check_running_lab(run: LabRun, summary: dict[str, Any]) -> None:
    """What a user relies on after ``lab up``: routes, gateway, WireGuard, healthy status."""
    assert summary["state_dir"] == str(run.state_dir)
    assert [(r["name"], r["netns"], r["asn"]) for r in summary["route_servers"]] == [
        ("rs1", f"{run.prefix}-rs1", 64500), ("rs2", f"{run.prefix}-rs2", 64500)]
    admin = Path(summary["admin_token_file"])
    assert admin.stat().st_mode & 0o077 == 0 and admin.read_text().strip()
    for rs in ("rs1", "rs2"):
        wait_until(lambda rs=rs: rs_prefixes(run, rs) >= UPSTREAM_PREFIXES, what=f"upstream routes on {rs}")
        assert netns.link_exists(f"{run.prefix}-{rs}", netns=f"{run.prefix}-{rs}")  # WireGuard interface
    if "gateway" not in summary["missing"]:
        assert httpx.get(f"{summary['gateway']}/healthz", timeout=5).status_code == 200
    # Sessions may still be coming up right after `lab up`: status settles within seconds.
    code, status = wait_until(lambda: settled_status(run), what="a healthy status")
    assert_healthy_except_missing(status, code)


def settled_status(run: LabRun) -> tuple[int, dict[str, Any]] | None:
    """``lab status`` once every installed part is up (None before)."""
    code, status = run.run("status", check=False)
    down = [p for p in status["parts"] if not p["ok"] and not p["detail"].startswith("not installed")]
    return None if down else (code, status)


def test_up_status_down_cycle_twice(fresh_lab: LabRun) -> None:
    """A lab comes up, works, and goes away without a trace, twice in a row with the same prefix."""
    for _ in range(2):
        _, summary = fresh_lab.run("up")
        check_running_lab(fresh_lab, summary)
        _, result = fresh_lab.run("down")
        expected = {f"{fresh_lab.prefix}-{s}" for s in ("ixp", "upstream", "rs1", "rs2")}
        assert set(result["netns_removed"]) >= expected
        assert leftovers(fresh_lab.prefix) == NOTHING
        assert not fresh_lab.state_dir.exists()
        code, status = fresh_lab.run("status", check=False)
        assert code == 1 and not status["ok"]


def test_up_builds_every_part(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """Upstream routes reach both route servers, the gateway answers, WireGuard listens, status is healthy."""
    from peerlab_tui.core.tunnel.wggo import WireGuardGo

    run, summary = shared_lab
    assert summary["missing"] == []  # gateway, rs-agent and WireGuard are all installed
    check_running_lab(run, summary)
    state = run.state()
    assert set(state["processes"]) == {"gateway", "bird-upstream", "bird-rs1", "bird-rs2", "wg-rs1", "wg-rs2",
                                       "agent-rs1", "agent-rs2"}
    for rs, port in (("rs1", 51821), ("rs2", 51822)):
        assert WireGuardGo(f"{run.prefix}-{rs}", f"{run.prefix}-{rs}").status().listen_port == port
    assert (run.state_dir / "service.token").stat().st_mode & 0o077 == 0
    # The gateway hands out the route servers' real keys and underlay endpoints.
    config = yaml.safe_load((run.state_dir / "gateway.yaml").read_text())
    for entry in config["route_servers"]:
        name = f"{run.prefix}-{entry['name']}"
        status = WireGuardGo(name, name).status()
        assert entry["public_key"] == status.public_key
        assert entry["endpoint"] == f"[{_underlay_address(name)}]:{status.listen_port}"


def test_upstream_sessions_have_md5_and_gtsm(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """Users share the underlay with the route server <-> upstream sessions: those are Established with a
    TCP MD5 password made by lab up (kept 0600, as is every config holding it) and TTL security."""
    run, summary = shared_lab
    check_running_lab(run, summary)  # includes "bgp upstream-rsN" Established
    secret_file = run.state_dir / "keys" / "upstream-bgp.secret"
    secret = secret_file.read_text().strip()
    assert len(secret) >= 24 and secret_file.stat().st_mode & 0o077 == 0
    configs = [run.state_dir / "upstream" / "bird.conf",
               *(run.state_dir / "rs" / rs / name
                 for rs in ("rs1", "rs2") for name in ("bird.conf", "rs.yaml"))]
    for path in configs:
        text = path.read_text()
        assert secret in text, path
        assert path.stat().st_mode & 0o077 == 0, path
    for path in configs[:1] + [run.state_dir / "rs" / rs / "bird.conf" for rs in ("rs1", "rs2")]:
        assert "ttl security on;" in path.read_text(), path
    for rs in ("rs1", "rs2"):
        assert f'interface "{run.prefix}-{rs}";' in (run.state_dir / "rs" / rs / "bird.conf").read_text()


def test_second_up_changes_nothing(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """Running ``lab up`` on a running lab prints the same answer and leaves every daemon as it was."""
    run, summary = shared_lab
    before = {k: v["pid"] for k, v in run.state()["processes"].items()}
    _, again = run.run("up")
    assert again == summary
    assert {k: v["pid"] for k, v in run.state()["processes"].items()} == before
    assert all(procs.is_running(pid) for pid in before.values())


def test_up_with_another_topology_is_refused(shared_lab: tuple[LabRun, dict[str, Any]],
                                             tmp_path: Path) -> None:
    """A running lab is never half-changed: another topology is refused (exit 2) and nothing moves."""
    run, _ = shared_lab
    topo = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    topo["agent_interval"] = 7.0
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(topo))
    before = run.state()["processes"]
    code, err = run.run("up", "--topology", str(path), check=False)
    assert code == ExitCode.USAGE and "lab down" in err["message"]
    assert run.state()["processes"] == before


def test_user_add_with_netns(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """A user namespace sits on the underlay (reaches a route server) and the user's token works."""
    run, summary = shared_lab
    if "gateway" in summary["missing"]:
        pytest.fail("the gateway is not installed: lab user add cannot work")
    _, user = run.run("user", "add", "alice", "--netns")
    assert user["name"] == "alice" and user["netns"] == f"{run.prefix}-alice"
    assert netns.netns_exists(user["netns"])
    token_file = Path(user["token_file"])
    assert token_file.read_text().strip() == user["token"] and token_file.stat().st_mode & 0o077 == 0
    rs1_addr = _underlay_address(f"{run.prefix}-rs1")
    ping = subprocess.run([*netns.netns_prefix(user["netns"]), "ping", "-6", "-c", "1", "-W", "3", rs1_addr],
                          capture_output=True, text=True, timeout=15)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # The route server forwards towards the upstream along the routes BIRD put in its kernel table.
    netns.run(["ip", "-6", "route", "replace", "2001:db8:f000::/36", "via", rs1_addr], netns=user["netns"])
    ping = subprocess.run([*netns.netns_prefix(user["netns"]), "ping", "-6", "-c", "1", "-W", "3",
                           "2001:db8:f000::1"], capture_output=True, text=True, timeout=15)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    info = httpx.get(f"{summary['gateway']}/api/user/info", headers=bearer(user["token"]), timeout=10)
    assert info.status_code == 200 and info.json()["user_hash"]
    bad = httpx.get(f"{summary['gateway']}/api/user/info", headers={"Authorization": "Bearer plu_wrong"},
                    timeout=10)
    assert bad.status_code == 401
    # The same name twice is refused, and nothing is lost.
    code, err = run.run("user", "add", "alice", "--netns", check=False)
    assert code != 0 and "alice" in err["message"]
    assert token_file.read_text().strip() == user["token"]


def test_user_reaches_route_servers_over_wireguard(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """The route servers' keys and endpoints the gateway hands out work: a user's tunnel from their
    namespace reaches each route server's overlay address (the agent added the user's key)."""
    from peerlab_tui.core.tunnel import PeerConfig, keys
    from peerlab_tui.core.tunnel.wggo import WireGuardGo

    run, summary = shared_lab
    _, user = run.run("user", "add", "erin", "--netns")
    gw, auth = summary["gateway"], bearer(user["token"])
    assert httpx.post(f"{gw}/api/user/asn", headers=auth, timeout=10).status_code in (200, 201)
    private = keys.generate_private_key()
    answer = httpx.post(f"{gw}/api/user/tunnel", headers=auth, json={"public_key": keys.public_key(private)},
                        timeout=10)
    assert answer.status_code in (200, 201), answer.text
    servers = answer.json()["route_servers"]
    assert {s["name"] for s in servers} == {"rs1", "rs2"}
    dev = WireGuardGo.create(f"{run.prefix}-uw", user["netns"], log_path=run.state_dir.parent / "uw.log")
    try:
        dev.configure(private, None, [
            PeerConfig(public_key=s["public_key"], endpoint=s["endpoint"],
                       allowed_ips=(str(ipaddress.ip_interface(s["local_address"]).network),))
            for s in servers])
        for s in servers:
            netns.add_address(dev.ifname, s["local_address"], netns=user["netns"])
        for s in servers:
            wait_until(lambda s=s: pings(user["netns"], s["overlay_address"]),
                       what=f"a ping through the tunnel to {s['name']}")
    finally:
        dev.delete()


def test_user_add_on_the_host(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """Without --netns the user's side is the host, which has an underlay address of its own."""
    run, summary = shared_lab
    _, user = run.run("user", "add", "bob")
    assert user["netns"] is None
    ping = subprocess.run(["ping", "-6", "-c", "1", "-W", "3", _underlay_address(f"{run.prefix}-rs2")],
                          capture_output=True, text=True, timeout=15)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    info = httpx.get(f"{summary['gateway']}/api/user/info", headers=bearer(user["token"]), timeout=10)
    assert info.status_code == 200


def test_crash_recovery(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """A killed daemon shows as down in status (exit 1) and the next ``lab up`` restarts only it."""
    from peerlab_tui.core.tunnel import keys
    from peerlab_tui.core.tunnel.wggo import WireGuardGo

    run, summary = shared_lab
    # A user with a registered key: the route servers' WireGuard devices carry it as a peer.
    _, user = run.run("user", "add", "frank")
    user_key = keys.public_key(keys.generate_private_key())
    httpx.post(f"{summary['gateway']}/api/user/asn", headers=bearer(user["token"]), timeout=10)
    answer = httpx.post(f"{summary['gateway']}/api/user/tunnel", headers=bearer(user["token"]),
                        json={"public_key": user_key}, timeout=10)
    assert answer.status_code in (200, 201), answer.text
    rs2_wg = WireGuardGo(f"{run.prefix}-rs2", f"{run.prefix}-rs2")
    wait_until(lambda: rs2_wg.status().peer(user_key), what="the agent to add the user's key on rs2")
    before = {k: v["pid"] for k, v in run.state()["processes"].items()}
    victims = ["bird-rs1", "wg-rs2"]
    for key in victims:
        os.kill(before[key], signal.SIGKILL)
        wait_until(lambda key=key: not procs.is_running(before[key]), what=f"{key} to die")
    code, status = run.run("status", check=False)
    assert code == 1 and not status["ok"]
    for key in victims:
        assert f"process {key}" in status["down"]
    assert "bgp upstream-rs1" in status["down"] or "bird rs1 socket" in status["down"]
    _, summary = run.run("up")
    after = {k: v["pid"] for k, v in run.state()["processes"].items()}
    restarted = victims  # the agents stay: they reconcile against the new device's actual (empty) peers
    for key, pid in before.items():
        if key in restarted:
            assert after[key] != pid and procs.is_running(after[key]), key
        else:
            assert after[key] == pid, key
    check_running_lab(run, summary)
    wait_until(lambda: rs2_wg.status().peer(user_key), what="the user's key back on the new rs2 device")


def test_change_while_bird_is_down_is_reported_and_applied_after_repair(
        shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """A key registered while rs1's BIRD is dead still reaches rs1's WireGuard; ``lab status`` names the
    agent's failure (not "lab is up"); after ``lab up`` restarts BIRD the agent applies the pending change
    by itself and the status is healthy again."""
    from peerlab_tui.core.tunnel import keys
    from peerlab_tui.core.tunnel.wggo import WireGuardGo

    run, summary = shared_lab
    bird_pid = run.state()["processes"]["bird-rs1"]["pid"]
    os.kill(bird_pid, signal.SIGKILL)
    wait_until(lambda: not procs.is_running(bird_pid), what="rs1's BIRD to die")
    _, user = run.run("user", "add", "gina")
    user_key = keys.public_key(keys.generate_private_key())
    httpx.post(f"{summary['gateway']}/api/user/asn", headers=bearer(user["token"]), timeout=10)
    answer = httpx.post(f"{summary['gateway']}/api/user/tunnel", headers=bearer(user["token"]),
                        json={"public_key": user_key}, timeout=10)
    assert answer.status_code in (200, 201), answer.text
    for rs in ("rs1", "rs2"):
        wg = WireGuardGo(f"{run.prefix}-{rs}", f"{run.prefix}-{rs}")
        wait_until(lambda wg=wg: wg.status().peer(user_key), what=f"the user's key on {rs}")

    def agent_down() -> dict[str, Any] | None:
        _, status = run.run("status", check=False)
        return next((p for p in status["parts"] if p["part"] == "agent rs1" and not p["ok"]), None)

    part = wait_until(agent_down, what="lab status to report rs1's agent failure")
    assert "BIRD" in part["detail"]
    run.run("up")
    check_running_lab(run, summary)  # includes "agent rs1" healthy: the pending change was applied
    status = json.loads((run.state_dir / "rs" / "rs1" / "status.json").read_text())
    assert status["last_error"] is None and not status["pending_apply"]


def test_deleted_namespace_is_rebuilt(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """A route server's namespace deleted under the lab is made again, with fresh daemons inside it."""
    run, _ = shared_lab
    before = {k: v["pid"] for k, v in run.state()["processes"].items()}
    # `ip netns del` only removes the name: the daemons keep running in a namespace the lab cannot reach.
    netns.run(["ip", "netns", "del", f"{run.prefix}-rs2"])
    code, status = run.run("status", check=False)
    assert code == 1 and f"netns {run.prefix}-rs2" in status["down"]
    _, summary = run.run("up")
    after = {k: v["pid"] for k, v in run.state()["processes"].items()}
    assert after["bird-rs2"] != before["bird-rs2"]
    assert after["bird-rs1"] == before["bird-rs1"] and after["bird-upstream"] == before["bird-upstream"]
    for key in ("bird-rs2", "wg-rs2"):
        if key in before:  # the stranded daemon was stopped, not left behind
            assert not procs.is_running(before[key])
    check_running_lab(run, summary)


def test_down_without_state_removes_only_the_lab(shared_lab: tuple[LabRun, dict[str, Any]]) -> None:
    """With state.json lost, down still finds the lab by its prefix and markers, and touches nothing else."""
    run, _ = shared_lab
    # Look-alikes that are not the lab's: a namespace sharing the prefix's letters and a process in it.
    other = f"{run.prefix}0-rs1"
    netns.create_netns(other)
    sleeper = subprocess.Popen([*netns.netns_prefix(other), "sleep", "300"])
    # A process a user started in their lab namespace: the namespace goes, the process is not ours to kill.
    _, user = run.run("user", "add", "dave", "--netns")
    user_ns = user["netns"]
    users_own = subprocess.Popen([*netns.netns_prefix(user_ns), "sleep", "300"])
    wait_until(lambda: users_own.pid in netns.pids_in_netns(user_ns), what="the user's process")
    # The user's tunnel (what `tunnel up --netns` starts): its wireguard-go goes with the lab's namespace.
    # A wireguard-go of the same user OUTSIDE the lab's namespaces is not the lab's business.
    from peerlab_tui.core.tunnel.wggo import WireGuardGo, is_wireguard_go_for

    user_wg = WireGuardGo.create(f"{run.prefix}uw", user_ns, log_path=run.state_dir.parent / "uw.log")
    outside_ns = f"{run.prefix}x"
    netns.create_netns(outside_ns)
    outside_wg = WireGuardGo.create(f"{run.prefix}xw", outside_ns, log_path=run.state_dir.parent / "xw.log")
    assert user_wg.pid is not None and outside_wg.pid is not None
    try:
        (run.state_dir / "state.json").unlink()
        _, result = run.run("down")
        assert result["killed"]
        assert result["wireguard_stopped"] == [
            {"netns": user_ns, "ifname": user_wg.ifname, "pid": user_wg.pid, "stopped": True}]
        assert not is_wireguard_go_for(user_wg.pid, user_wg.ifname)
        assert not Path(f"/var/run/wireguard/{user_wg.ifname}.sock").exists()
        assert is_wireguard_go_for(outside_wg.pid, outside_wg.ifname) and outside_wg.exists()
        assert leftovers(run.prefix) == NOTHING
        assert netns.netns_exists(other)
        assert sleeper.poll() is None
        assert users_own.poll() is None
        assert result["not_ours_left_running"] == {user_ns: [users_own.pid]}
    finally:
        with contextlib.suppress(Exception):
            outside_wg.delete()
        netns.delete_netns(outside_ns)
        for dev in (user_wg,):
            if dev.process is not None:
                with contextlib.suppress(Exception):
                    dev.process.kill()
                    dev.process.wait(timeout=10)
        for proc in (sleeper, users_own):
            proc.kill()
            proc.wait(timeout=10)
        netns.delete_netns(other)


def pings(ns_name: str, address: str) -> bool:
    """True when one ping from the namespace to the address is answered."""
    argv = [*netns.netns_prefix(ns_name), "ping", "-6", "-c", "1", "-W", "1", address]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


def _underlay_address(ns_name: str) -> str:
    ifname = ns_name.split("-")[0] + "-ul"
    out = netns.run(["ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "global"], netns=ns_name)
    return out.stdout.split()[3].split("/")[0]
