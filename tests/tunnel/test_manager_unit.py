"""TunnelManager decisions that need no daemon: what happens before anything is registered, state paths,
interface naming, and the status table."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerlab_tui._cli.tunnel import status_table
from peerlab_tui.core.gateway import ConflictError
from peerlab_tui.core.models import TunnelInfo
from peerlab_tui.core.tunnel import (
    BackendUnavailableError,
    TunnelError,
    TunnelManager,
    TunnelPeerReport,
    default_state_dir,
    generate_private_key,
    read_private_key,
    write_private_key,
)


class RecordingRegistry:
    """A gateway stand-in that records which tunnel calls were made."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[str] = []
        self.refuse = refuse

    async def ensure_asn(self) -> int:
        self.calls.append("ensure_asn")
        return 65000

    async def register_tunnel(self, public_key: str) -> TunnelInfo:
        self.calls.append("register_tunnel")
        if self.refuse:
            raise ConflictError("this public key is registered to another user", status_code=409)
        return TunnelInfo(addresses=[], asn=65000, route_servers=[])

    async def get_tunnel(self) -> TunnelInfo:
        raise AssertionError("not used")

    async def delete_tunnel(self) -> None:
        self.calls.append("delete_tunnel")


async def test_no_wireguard_means_nothing_is_registered(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEERLAB_WG_BACKEND", "wireguard-go")
    monkeypatch.setenv("PEERLAB_WIREGUARD_GO", "/nonexistent")
    monkeypatch.setenv("PATH", "/nonexistent")
    registry = RecordingRegistry()
    with pytest.raises(BackendUnavailableError, match="apt-get install wireguard-go"):
        await TunnelManager(registry, tmp_path).up()
    assert registry.calls == []


async def test_a_gateway_without_route_servers_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("PEERLAB_WG_BACKEND", "kernel")  # selecting needs nothing; no device is built
    registry = RecordingRegistry()
    with pytest.raises(TunnelError, match="no route servers"):
        await TunnelManager(registry, tmp_path).up()
    assert registry.calls == ["ensure_asn", "register_tunnel"]


async def test_a_refused_rotation_keeps_the_working_key(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEERLAB_WG_BACKEND", "kernel")
    manager = TunnelManager(RecordingRegistry(refuse=True), tmp_path)
    key = generate_private_key()
    write_private_key(manager.key_path, key)
    with pytest.raises(ConflictError, match="another user"):
        await manager.up(rotate=True)
    assert read_private_key(manager.key_path) == key
    fresh = TunnelManager(RecordingRegistry(refuse=True), tmp_path / "new")
    with pytest.raises(ConflictError):
        await fresh.up()
    assert not fresh.key_path.exists()  # a key the gateway never took is not kept


async def test_down_without_state_still_deregisters_and_can_keep_it(tmp_path: Path) -> None:
    registry = RecordingRegistry()
    result = await TunnelManager(registry, tmp_path).down()
    assert result.removed == () and result.deregistered and registry.calls == ["delete_tunnel"]
    kept = await TunnelManager(None, tmp_path).down(keep_registration=True)
    assert not kept.deregistered
    with pytest.raises(TunnelError, match="gateway connection"):
        await TunnelManager(None, tmp_path).down()


def test_interface_names_are_unique_per_state_dir_and_netns(tmp_path: Path) -> None:
    a = TunnelManager(None, tmp_path / "a", netns="n1")
    names = {a.ifname(0), a.ifname(1), TunnelManager(None, tmp_path / "b", netns="n1").ifname(0),
             TunnelManager(None, tmp_path / "a", netns="n2").ifname(0)}
    assert len(names) == 4 and all(len(n) <= 15 and n.startswith("plw") for n in names)
    assert a.ifname(0) == TunnelManager(None, tmp_path / "a", netns="n1").ifname(0)  # stable


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEERLAB_STATE_DIR", str(tmp_path / "x"))
    assert default_state_dir() == tmp_path / "x"
    monkeypatch.delenv("PEERLAB_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "peerlab"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "peerlab"


def test_status_table() -> None:
    common = {"netns": None, "up": True}
    reports = [
        TunnelPeerReport(rs="rs1", interface="plwabc0", endpoint="[fd99::1]:51820", overlay_address="fd00::1",
                         local_address="fd00::101/64", handshake_age_s=3.2, rx_bytes=2048, tx_bytes=100,
                         rtt_ms=0.123, **common),
        TunnelPeerReport(rs="rs2", interface="plwabc1", endpoint=None, overlay_address="fd00:2::1",
                         local_address="fd00:2::101/64", handshake_age_s=None, rx_bytes=0, tx_bytes=0,
                         rtt_ms=None, **common),
    ]
    lines = status_table(reports).splitlines()
    assert lines[0].split() == ["RS", "INTERFACE", "ENDPOINT", "HANDSHAKE", "RX", "TX", "RTT"]
    assert "3 s ago" in lines[1] and "2.0 KiB" in lines[1] and "0.12 ms" in lines[1]
    assert "never" in lines[2] and "no reply" in lines[2]
    assert "no tunnel is up" in status_table([])
