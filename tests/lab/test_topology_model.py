"""The topology file, the names and addresses derived from it, and the lab's process guard (no root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.topology import procs
from lab.topology.models import DEFAULT_TOPOLOGY, Plan, load_topology
from peerlab_tui.core.errors import ConfigError, ExitCode
from peerlab_tui.core.netns import IFNAME_MAX

REPO = Path(__file__).resolve().parents[2]


def test_default_topology_has_two_route_servers_and_an_upstream() -> None:
    """The packaged default describes rs1/rs2 on the documentation ASN and an upstream with several /48s."""
    topo = load_topology()
    assert topo.prefix == "plab"
    assert [rs.name for rs in topo.route_servers] == ["rs1", "rs2"]
    assert topo.platform_asn == 64500
    assert len(topo.upstream.routes) >= 3
    assert any(topo.upstream.address in r.prefix for r in topo.upstream.routes)


def test_plan_names_fit_and_addresses_are_distinct() -> None:
    """Every interface name fits IFNAMSIZ, every address is unique and inside its network."""
    plan = Plan(load_topology(prefix="t1234567"))
    names = [plan.bridge, plan.host_link, plan.port("host"), plan.port("up"), plan.port("u9999"),
             *(plan.rs_wg_ifname(r.name) for r in plan.topo.route_servers)]
    assert all(len(n) <= IFNAME_MAX and n.startswith("t1234567-") for n in names)
    underlay = [plan.host_address, plan.upstream_address, plan.user_underlay_address(1),
                *(plan.rs_underlay_address(r.name) for r in plan.topo.route_servers)]
    assert len(set(underlay)) == len(underlay) and all(a in plan.underlay for a in underlay)
    assert plan.underlay.subnet_of(plan.site) and plan.site.network_address.packed[0] == 0xFD
    overlays = [plan.rs_overlay_network(r.name) for r in plan.topo.route_servers]
    assert len(set(overlays)) == 2 and not any(o.overlaps(plan.underlay) for o in overlays)
    for rs in plan.topo.route_servers:
        assert plan.rs_overlay_address(rs.name) in plan.rs_overlay_network(rs.name)


def test_two_prefixes_never_share_an_underlay() -> None:
    """The host holds one underlay address per lab: different prefixes get different networks."""
    assert Plan(load_topology(prefix="laba")).underlay != Plan(load_topology(prefix="labb")).underlay


def test_a_namespace_is_ours_only_with_the_exact_prefix() -> None:
    """`lab down` deletes `<prefix>-...` namespaces and never a look-alike."""
    plan = Plan(load_topology(prefix="plab"))
    assert plan.owns_netns("plab-rs1") and plan.owns_netns("plab-alice")
    for other in ("plab2-rs1", "plabrs1", "xplab-rs1", "plab"):
        assert not plan.owns_netns(other)


@pytest.mark.parametrize("prefix", ["Plab", "plab-x", "waytoolongprefix", "1lab", ""])
def test_bad_prefix_is_refused(prefix: str) -> None:
    """A prefix that could collide with other names or overflow interface names is a ConfigError."""
    with pytest.raises(ConfigError):
        load_topology(prefix=prefix)


def _write(tmp_path: Path, mutate: dict[str, object]) -> Path:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data.update(mutate)
    path = tmp_path / "topo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate", [
    {"unknown_key": 1},
    {"upstream": {"asn": 64510, "router_id": "192.0.2.10", "address": "2001:db8:9999::1",
                  "routes": [{"prefix": "2001:db8:f000::/48"}]}},
    {"route_servers": [{"name": "rs1", "router_id": "192.0.2.1", "wireguard_port": 1},
                       {"name": "rs1", "router_id": "192.0.2.2", "wireguard_port": 2}]},
    {"route_servers": [{"name": "ixp", "router_id": "192.0.2.1", "wireguard_port": 1}]},
    {"underlay": "2001:db8::/64"},
    {"gateway": {"listen": "0.0.0.0:8080", "prefix_pools": ["2001:db8:1000::/36"], "asn_range": [1, 2]}},
])
def test_bad_topology_is_refused(tmp_path: Path, mutate: dict[str, object]) -> None:
    """Unknown keys, an unrouted upstream address, duplicate or reserved names, a non-ULA underlay and a
    gateway off loopback are all refused with a ConfigError."""
    with pytest.raises(ConfigError):
        load_topology(_write(tmp_path, mutate))


def test_cli_reports_bad_input_with_exit_code_2(tmp_path: Path) -> None:
    """`lab up` with a bad prefix fails cleanly (JSON error, usage exit code) and creates nothing."""
    out = subprocess.run([sys.executable, "-m", "peerlab_tui", "lab", "up", "--prefix", "Bad-Prefix",
                          "--state-dir", str(tmp_path / "s"), "--json"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == ExitCode.USAGE
    assert json.loads(out.stdout)["error"] == "ConfigError"
    assert not (tmp_path / "s").exists()


def test_user_add_needs_a_running_lab(tmp_path: Path) -> None:
    """`lab user add` on a lab that is not up says so and exits non-zero."""
    out = subprocess.run([sys.executable, "-m", "peerlab_tui", "lab", "user", "add", "alice",
                          "--prefix", "tnone", "--state-dir", str(tmp_path / "s"), "--json"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode != 0 and "not up" in json.loads(out.stdout)["message"]


def _reap(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.02)


def test_terminate_only_signals_processes_with_the_lab_marker(tmp_path: Path) -> None:
    """A process without this lab's marker is never signalled, even when its PID is passed in."""
    stranger = subprocess.Popen(["sleep", "30"])
    ours = procs.spawn(["sleep", "30"], prefix="tguard1", log_path=tmp_path / "s.log")
    try:
        # Under heavy load /proc can lag the fresh process briefly (seen once in a full CI-style run).
        deadline = time.monotonic() + 5
        while not procs.matches(ours, ["sleep", "30"], "tguard1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs.matches(ours, ["sleep", "30"], "tguard1")
        assert not procs.matches(ours, ["sleep", "30"], "tguard2")  # another lab's marker
        assert not procs.matches(stranger.pid, ["sleep", "30"], "tguard1")
        assert ours in procs.marked_pids("tguard1") and stranger.pid not in procs.marked_pids("tguard1")
        killed = procs.terminate([stranger.pid, ours], "tguard1", timeout=5)
        _reap(ours)
        assert killed == [ours]
        assert not procs.is_running(ours)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=10)
        if procs.is_running(ours):
            os.kill(ours, 9)
            _reap(ours)



def _rs_plan(topo_data: dict[str, Any], tmp_path: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(plan, user session, rs.yaml settings) of rs1 for one user leasing 2001:db8:1000::/48."""
    from lab.rsagent.render import build_plan
    from lab.rsagent.settings import RouteServerSettings
    from lab.topology.builder import Lab
    from lab.topology.models import Topology
    from peerlab_tui.core.models import Mapping, TunnelPeer

    topo = Topology.model_validate(topo_data)
    lab = Lab(topo, tmp_path / "state")
    lab._prepare_dir()
    lab._ensure_bgp_secret()
    values = lab.rs_settings(topo.route_servers[0])
    settings = RouteServerSettings.model_validate(values)
    overlay = lab.plan.rs_overlay_network("rs1")
    tunnel = TunnelPeer(user_hash="h", public_key="A" * 43 + "=",
                        addresses=[f"{overlay.network_address + 0x100}/64"])
    plan = build_plan(settings, [Mapping(user_hash="h", user_id="u", asn=4200000001,
                                         prefixes=["2001:db8:1000::/48"])], [tunnel])
    assert len(plan.sessions) == 1
    return plan, plan.sessions[0], values


def test_policy_block_reaches_the_route_servers(tmp_path: Path) -> None:
    """``policy:`` of the topology is what each route server enforces: with max_more_specific_length 56 a
    /56 inside the lease is accepted (a /64 still is not); by default only the exact lease."""
    from lab.rsagent.policy import RouteFacts, evaluate
    from lab.rsagent.render import render_plan

    raw = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    assert raw["policy"]["max_more_specific_length"] is None  # documented default: exact prefix only
    asn = 4200000001
    exact = RouteFacts.of("2001:db8:1000::/48", [asn])
    sub56 = RouteFacts.of("2001:db8:1000:ff00::/56", [asn])
    sub64 = RouteFacts.of("2001:db8:1000:ff00::/64", [asn])

    plan, sess, _ = _rs_plan(raw, tmp_path / "a")
    assert evaluate(exact, plan.policy, sess.policy).accepted
    assert evaluate(sub56, plan.policy, sess.policy).rule == "too_specific"

    raw["policy"] = {"max_more_specific_length": 56, "max_prefix": 7, "max_as_path_length": 4,
                     "max_communities": 3, "max_large_communities": 2}
    plan, sess, values = _rs_plan(raw, tmp_path / "b")
    assert {k: values[k] for k in raw["policy"]} == raw["policy"]  # written into rs.yaml as given
    assert evaluate(sub56, plan.policy, sess.policy).accepted
    assert evaluate(sub64, plan.policy, sess.policy).rule == "too_specific"
    assert evaluate(RouteFacts.of("2001:db8:1000::/48", [asn] * 5), plan.policy, sess.policy).rule \
        == "as_path_length"
    assert "import limit 7 action block;" in render_plan(plan)


def test_policy_more_specific_length_must_not_be_shorter_than_the_leases() -> None:
    raw = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    raw["policy"] = {"max_more_specific_length": 40}
    from lab.topology.models import Topology

    with pytest.raises(ValueError, match="max_more_specific_length"):
        Topology.model_validate(raw)
