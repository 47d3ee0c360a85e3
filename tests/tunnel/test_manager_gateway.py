"""The user's TunnelManager and the ``tunnel`` verbs against the REAL gateway and real wireguard-go.

Topology per test: a user namespace joined by one veth underlay to each of two route-server namespaces.
Each route server runs a wireguard-go device with the key the gateway's config names; the test plays the
route-server agent: it reads ``/service/tunnels`` and applies it with ``sync_peers``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from peerlab_tui.core import netns as nsmod
from peerlab_tui.core.errors import ExitCode
from peerlab_tui.core.gateway import GatewayClient
from peerlab_tui.core.models import TunnelPeerList
from peerlab_tui.core.tunnel import (
    NamespaceNotFoundError,
    PeerDiff,
    TunnelManager,
    WireGuardGo,
    generate_private_key,
    measure_rtt,
    public_key,
    rs_peer_config,
    sync_peers,
)
from peerlab_tui.core.tunnel.wggo import is_wireguard_go_for
from tests.support.gateway import PEERLAB, GatewayHandle, start_gateway
from tests.support.netns import NetnsFactory
from tests.tunnel.conftest import WgFactory

pytestmark = pytest.mark.netns

RS = [  # name, underlay address of the RS, WireGuard port, overlay network, overlay address, ASN
    ("rs1", "fd99:1::1", 51820, "fd00:a1::/64", "fd00:a1::1", 65501),
    ("rs2", "fd99:2::1", 51821, "fd00:a2::/64", "fd00:a2::1", 65502),
]


@dataclass
class Platform:
    """The module's gateway and the route servers' keys (their devices are made per test)."""

    gw: GatewayHandle
    rs_keys: list[str]
    service_token: str


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    keys = [generate_private_key() for _ in RS]
    config = {"route_servers": [
        {"name": name, "public_key": public_key(key), "endpoint": f"[{under}]:{port}", "overlay_network": net,
         "overlay_address": addr, "asn": asn}
        for (name, under, port, net, addr, asn), key in zip(RS, keys, strict=True)
    ]}
    with start_gateway(tmp_path_factory.mktemp("gw"), config=config) as gw:
        yield Platform(gw, keys, gw.create_service_token("rs-test", ["tunnels:read"]))


@dataclass
class Lab:
    """One test's namespaces and route-server devices."""

    user_ns: str
    rs_devices: list[WireGuardGo]
    platform: Platform

    def sync(self) -> list[PeerDiff]:
        """Do what the rs-agent does: make each RS's peers equal to the gateway's registered keys."""
        resp = httpx.get(self.platform.gw.url + "/service/tunnels", timeout=30,
                         headers={"Authorization": f"Bearer {self.platform.service_token}"})
        resp.raise_for_status()
        peers = TunnelPeerList.model_validate(resp.json()).peers
        return [sync_peers(dev, [rs_peer_config(p, overlay_network=net) for p in peers])
                for dev, (_, _, _, net, _, _) in zip(self.rs_devices, RS, strict=True)]


@pytest.fixture
def lab(platform: Platform, netns_factory: NetnsFactory, wg_factory: WgFactory) -> Lab:
    user_ns = netns_factory.create("usr")
    devices = []
    for i, ((_, under, port, _net, addr, _), key) in enumerate(zip(RS, platform.rs_keys, strict=True)):
        rs_ns = netns_factory.create(f"rs{i}")
        va, vb = netns_factory.unique("va"), netns_factory.unique("vb")
        nsmod.create_veth(va, vb, netns_a=rs_ns, netns_b=user_ns)
        nsmod.add_address(va, f"{under}/64", netns=rs_ns)
        nsmod.add_address(vb, f"{under[:-1]}2/64", netns=user_ns)
        dev = wg_factory.create(rs_ns, f"rs{i}")
        dev.configure(key, port, [])
        nsmod.add_address(dev.ifname, f"{addr}/64", netns=rs_ns)
        devices.append(dev)
    return Lab(user_ns, devices, platform)


def _user(platform: Platform, name: str) -> str:
    return str(platform.gw.create_user(f"{name}-{os.urandom(3).hex()}")["token"])


def _wait_rtt(address: str, netns: str, timeout: float = 40.0) -> float:
    """Ping until the tunnel carries traffic (a fresh key handshakes on WireGuard's retry timer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rtt = measure_rtt(address, netns=netns, count=2)
        if rtt is not None:
            return rtt
    raise AssertionError(f"{address} unreachable over the tunnel within {timeout} s")


async def test_up_status_rotate_down(lab: Lab, tmp_path: Path) -> None:
    token = _user(lab.platform, "alice")
    state = tmp_path / "state"
    async with GatewayClient(lab.platform.gw.url, token) as client:
        manager = TunnelManager(client, state, netns=lab.user_ns)
        first = await manager.up()
        assert stat.S_IMODE(manager.key_path.stat().st_mode) == 0o600
        assert first.public_key == manager.public_key()
        assert [i.rs_name for i in first.interfaces] == ["rs1", "rs2"]
        for rec, (_, _, _, _, rs_addr, _) in zip(first.interfaces, RS, strict=True):
            assert nsmod.link_exists(rec.ifname, netns=lab.user_ns)
            assert rec.overlay_address == rs_addr
            assert rec.pid is not None and is_wireguard_go_for(rec.pid, rec.ifname)
        addrs = nsmod.run(["ip", "-6", "addr", "show"], netns=lab.user_ns).stdout
        assert all(rec.local_address.split("/")[0] in addrs for rec in first.interfaces)

        # The RS side learns the user's key from the gateway.
        diffs = lab.sync()
        assert all([p.public_key for p in d.add] == [first.public_key] for d in diffs)
        for (_, _, _, _, rs_addr, _) in RS:
            _wait_rtt(rs_addr, lab.user_ns)

        reports = await manager.status()
        assert [r.rs for r in reports] == ["rs1", "rs2"]
        for r, (_, under, port, _, _, _) in zip(reports, RS, strict=True):
            assert r.up and r.endpoint == f"[{under}]:{port}"
            assert r.handshake_age_s is not None and r.handshake_age_s >= 0
            assert r.rx_bytes > 0 and r.tx_bytes > 0
            assert r.rtt_ms is not None and r.rtt_ms > 0

        # up again: same interfaces, same daemons, same key (idempotent).
        again = await manager.up()
        assert again.public_key == first.public_key and not again.rotated
        assert [i.pid for i in again.interfaces] == [i.pid for i in first.interfaces]
        assert all(d.empty for d in lab.sync())

        # Rotation: the RS side swaps the peer and the tunnel works again with the new key.
        rotated = await manager.up(rotate=True)
        assert rotated.rotated and rotated.public_key != first.public_key
        assert rotated.public_key == manager.public_key()
        assert stat.S_IMODE(manager.key_path.stat().st_mode) == 0o600
        for d in lab.sync():
            assert d.remove == (first.public_key,) and [p.public_key for p in d.add] == [rotated.public_key]
        for dev, (_, _, _, _, rs_addr, _) in zip(lab.rs_devices, RS, strict=True):
            _wait_rtt(rs_addr, lab.user_ns)
            peers = dev.status().peers
            assert [p.public_key for p in peers] == [rotated.public_key]
            assert peers[0].last_handshake is not None

        down = await manager.down()
        assert down.deregistered and list(down.removed) == [i.ifname for i in first.interfaces]
        for rec in first.interfaces:
            assert not nsmod.link_exists(rec.ifname, netns=lab.user_ns)
            assert rec.pid is not None and not is_wireguard_go_for(rec.pid, rec.ifname)
        assert not manager.state_path.exists() and manager.key_path.exists()
        # The gateway no longer lists the key, so the route servers drop the user.
        for d in lab.sync():
            assert d.remove == (rotated.public_key,)
        assert await manager.status() == []
        again_down = await manager.down()  # idempotent
        assert again_down.removed == () and again_down.deregistered


async def test_up_in_a_missing_namespace_registers_nothing(lab: Lab, tmp_path: Path) -> None:
    token = _user(lab.platform, "bob")
    async with GatewayClient(lab.platform.gw.url, token) as client:
        manager = TunnelManager(client, tmp_path, netns="tnoSuchNs" + os.urandom(3).hex())
        with pytest.raises(NamespaceNotFoundError, match="does not exist"):
            await manager.up()
    assert all(d.empty for d in lab.sync())  # no key reached the gateway


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PEERLAB, "tunnel", *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_up_outlives_the_command_then_status_and_down(lab: Lab, tmp_path: Path) -> None:
    token = _user(lab.platform, "carol")
    env = {**os.environ, "PEERLAB_GATEWAY_URL": lab.platform.gw.url, "PEERLAB_TOKEN": token,
           "PEERLAB_STATE_DIR": str(tmp_path / "state")}
    # As if `bgp up` had built the tunnel earlier: a `tunnel up` by the user takes the ownership over.
    owner = tmp_path / "state" / "bgp" / "tunnel-owner.json"
    owner.parent.mkdir(parents=True)
    owner.write_text("{}")
    up = _cli("up", "--netns", lab.user_ns, "--wait", "0", "--json", env=env)  # the test plays the agent
    assert not owner.exists(), "tunnel up must release bgp's ownership of the tunnel"
    assert up.returncode == 0, up.stderr
    data = json.loads(up.stdout)
    assert [i["rs_name"] for i in data["interfaces"]] == ["rs1", "rs2"]
    assert "private" not in up.stdout.lower()
    # The command has exited; its wireguard-go daemons keep the tunnels up.
    lab.sync()
    for i in data["interfaces"]:
        assert is_wireguard_go_for(i["pid"], i["ifname"])
        _wait_rtt(i["overlay_address"], lab.user_ns)

    status = _cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    peers = json.loads(status.stdout)["peers"]
    assert [p["rs"] for p in peers] == ["rs1", "rs2"]
    assert all(p["rtt_ms"] is not None and p["handshake_age_s"] is not None and p["rx_bytes"] > 0
               for p in peers)
    human = _cli("status", env=env)
    assert human.returncode == 0 and "rs1" in human.stdout and " ms" in human.stdout

    down = _cli("down", "--json", env=env)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout) == {"removed": [i["ifname"] for i in data["interfaces"]],
                                       "deregistered": True}
    for i in data["interfaces"]:
        assert not nsmod.link_exists(i["ifname"], netns=lab.user_ns)
    assert all(d.remove for d in lab.sync())


def test_cli_errors_are_clear(lab: Lab, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERLAB_")}
    env["PEERLAB_STATE_DIR"] = str(tmp_path)
    missing = _cli("up", "--json", env=env)
    assert missing.returncode == ExitCode.USAGE and "PEERLAB_GATEWAY_URL" in missing.stderr
    env.update(PEERLAB_GATEWAY_URL=lab.platform.gw.url, PEERLAB_TOKEN="wrong-token")
    refused = _cli("up", "--netns", lab.user_ns, env=env)
    assert refused.returncode == ExitCode.AUTH, refused.stderr
    assert refused.stderr.startswith("error: ")
    env["PEERLAB_TOKEN"] = _user(lab.platform, "dave")
    no_ns = _cli("up", "--netns", "tnoSuchNs" + os.urandom(3).hex(), env=env)
    assert no_ns.returncode == ExitCode.NOT_FOUND and "does not exist" in no_ns.stderr
    empty = _cli("status", env=env)
    assert empty.returncode == 0 and "no tunnel is up" in empty.stdout
