"""The wireguard-go backend against the real daemon: UAPI configure/read-back, peer sync checked with
wireguard-tools, and a handshake plus traffic between two namespaces over a veth underlay."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from peerlab_tui.core import netns as nsmod
from peerlab_tui.core.tunnel import (
    NamespaceNotFoundError,
    PeerConfig,
    WireGuardGo,
    find_wireguard_go_pid,
    generate_private_key,
    measure_rtt,
    public_key,
    sync_peers,
)
from peerlab_tui.core.tunnel.wggo import is_wireguard_go_for
from tests.support.netns import NetnsFactory
from tests.tunnel.conftest import WgFactory

pytestmark = pytest.mark.netns


def wg_dump(ifname: str) -> tuple[list[str], dict[str, list[str]]]:
    """``wg show IFNAME dump``: the interface line and the peer lines by public key."""
    out = subprocess.run(["wg", "show", ifname, "dump"], capture_output=True, text=True, timeout=10,
                         check=True)
    lines = [line.split("\t") for line in out.stdout.strip().splitlines()]
    return lines[0], {fields[0]: fields for fields in lines[1:]}


def keypair() -> tuple[str, str]:
    priv = generate_private_key()
    return priv, public_key(priv)


def test_configure_and_read_back(wg_factory: WgFactory, netns_factory: NetnsFactory) -> None:
    ns = netns_factory.create("cfg")
    dev = wg_factory.create(ns)
    assert nsmod.link_exists(dev.ifname, netns=ns)
    assert not nsmod.link_exists(dev.ifname)  # the TUN lives in the namespace only
    priv, pub = keypair()
    _, p1 = keypair()
    _, p2 = keypair()
    peers = [
        PeerConfig(p1, endpoint="[2001:db8::1]:51820", allowed_ips=("fd00:1::2/128",),
                   persistent_keepalive=25),
        PeerConfig(p2, allowed_ips=("fd00:1::3/128", "2001:db8:100::/48")),
    ]
    dev.configure(priv, 40123, peers)

    st = dev.status()
    assert st.public_key == pub and st.listen_port == 40123
    assert {p.public_key for p in st.peers} == {p1, p2}
    first = st.peer(p1)
    assert first is not None
    assert first.endpoint == "[2001:db8::1]:51820" and first.persistent_keepalive == 25
    assert first.allowed_ips == ("fd00:1::2/128",) and first.last_handshake is None
    second = st.peer(p2)
    assert second is not None and set(second.allowed_ips) == {"fd00:1::3/128", "2001:db8:100::/48"}

    # wireguard-tools reads the same UAPI socket and agrees.
    iface, by_key = wg_dump(dev.ifname)
    assert iface[1] == pub and iface[2] == "40123"
    assert by_key[p1][2] == "[2001:db8::1]:51820" and by_key[p1][7] == "25"

    # replace=True drops peers not listed.
    dev.configure(priv, None, peers[1:])
    assert set(wg_dump(dev.ifname)[1]) == {p2}
    assert dev.status().listen_port == 40123  # None kept the port


def test_sync_adds_rotates_removes_and_leaves_the_rest(wg_factory: WgFactory,
                                                       netns_factory: NetnsFactory) -> None:
    ns = netns_factory.create("syn")
    dev = wg_factory.create(ns)
    priv, _ = keypair()
    a, b, c, c2, d = (keypair()[1] for _ in range(5))
    dev.configure(priv, 0, [PeerConfig(a, endpoint="[2001:db8::a]:1000", allowed_ips=("fd00::a/128",)),
                            PeerConfig(b, allowed_ips=("fd00::b/128",)),
                            PeerConfig(c, allowed_ips=("fd00::c/128",))])
    desired = [
        PeerConfig(a, allowed_ips=("fd00::a/128",)),  # unchanged (endpoint left to roaming)
        PeerConfig(b, allowed_ips=("fd00::b/128", "2001:db8:b::/48")),  # lease added
        PeerConfig(c2, allowed_ips=("fd00::c/128",)),  # user c rotated its key
        PeerConfig(d, allowed_ips=("fd00::d/128",)),  # new user
    ]
    diff = sync_peers(dev, desired)
    assert {p.public_key for p in diff.add} == {c2, d}
    assert [p.public_key for p in diff.update] == [b]
    assert diff.remove == (c,)

    _, by_key = wg_dump(dev.ifname)
    assert set(by_key) == {a, b, c2, d}
    assert by_key[a][2] == "[2001:db8::a]:1000"  # the untouched peer kept its endpoint
    assert set(by_key[b][3].split(",")) == {"fd00::b/128", "2001:db8:b::/48"}
    assert by_key[c2][3] == "fd00::c/128"  # the rotated key took over the address

    assert sync_peers(dev, desired).empty  # converged: a second sync changes nothing
    assert sync_peers(dev, []).remove and dev.status().peers == ()
    dev.remove_peer(a)  # absent: no error


def test_create_is_idempotent_and_delete_stops_the_daemon(wg_factory: WgFactory,
                                                          netns_factory: NetnsFactory) -> None:
    ns = netns_factory.create("lif")
    dev = wg_factory.create(ns)
    pid = dev.pid
    assert pid is not None and is_wireguard_go_for(pid, dev.ifname)
    assert find_wireguard_go_pid(dev.ifname) == pid
    again = WireGuardGo.create(dev.ifname, ns)  # attaches, starts nothing new
    assert again.pid == pid and again.process is None

    other = netns_factory.create("oth")
    with pytest.raises(Exception, match="unique"):
        WireGuardGo.create(dev.ifname, other)

    # Delete through a handle that only knows the PID, as `tunnel down` in a new process does.
    WireGuardGo(dev.ifname, ns, pid=pid).delete()
    assert dev.process is not None
    dev.process.wait(timeout=10)
    assert not nsmod.link_exists(dev.ifname, netns=ns)
    assert not dev.exists()
    assert not os.path.exists(f"/var/run/wireguard/{dev.ifname}.sock")


def test_missing_namespace_is_a_clear_error(wg_factory: WgFactory) -> None:
    with pytest.raises(NamespaceNotFoundError, match="does not exist"):
        WireGuardGo.create(wg_factory.names.unique("x"), "tnoSuchNs" + os.urandom(3).hex())


def _wait_handshake(dev: WireGuardGo, peer: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = dev.status().peer(peer)
        if st is not None and st.last_handshake is not None:
            return
        time.sleep(0.2)
    raise AssertionError(f"no handshake with {peer} within {timeout} s")


def test_two_namespaces_handshake_and_traffic(wg_factory: WgFactory, netns_factory: NetnsFactory) -> None:
    rs_ns = netns_factory.create("rs")
    user_ns = netns_factory.create("usr")
    va, vb = netns_factory.unique("va"), netns_factory.unique("vb")
    nsmod.create_veth(va, vb, netns_a=rs_ns, netns_b=user_ns)
    nsmod.add_address(va, "fd99::1/64", netns=rs_ns)
    nsmod.add_address(vb, "fd99::2/64", netns=user_ns)

    rs = wg_factory.create(rs_ns, "rs")
    user = wg_factory.create(user_ns, "us")
    rs_priv, rs_pub = keypair()
    user_priv, user_pub = keypair()
    rs.configure(rs_priv, 51820, [])
    sync_peers(rs, [PeerConfig(user_pub, allowed_ips=("fd00:10::2/128",))])
    user.configure(user_priv, None, [PeerConfig(rs_pub, endpoint="[fd99::1]:51820", allowed_ips=("::/0",),
                                                persistent_keepalive=25)])
    nsmod.add_address(rs.ifname, "fd00:10::1/64", netns=rs_ns)
    nsmod.add_address(user.ifname, "fd00:10::2/64", netns=user_ns)

    rtt = measure_rtt("fd00:10::1", netns=user_ns)
    assert rtt is not None and rtt > 0
    _wait_handshake(user, rs_pub)
    _wait_handshake(rs, user_pub)
    seen_by_rs = rs.status().peer(user_pub)
    assert seen_by_rs is not None and seen_by_rs.endpoint is not None
    assert seen_by_rs.endpoint.startswith("[fd99::2]:")  # the RS learned the user's endpoint
    before = user.status().peer(rs_pub)
    assert before is not None and before.rx_bytes > 0 and before.tx_bytes > 0
    assert measure_rtt("fd00:10::1", netns=user_ns) is not None
    after = user.status().peer(rs_pub)
    assert after is not None and after.rx_bytes > before.rx_bytes and after.tx_bytes > before.tx_bytes

    # Remove the user on the RS side: the tunnel stops carrying traffic.
    sync_peers(rs, [])
    assert measure_rtt("fd00:10::1", netns=user_ns, count=2) is None


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        raw = fh.read()
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def test_daemon_does_not_inherit_secrets(wg_factory: WgFactory, netns_factory: NetnsFactory,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """wireguard-go outlives ``tunnel up``: its /proc/PID/environ must not carry the user's token (or any
    other variable of the caller), only PATH, the lab marker and WireGuard's own settings."""
    monkeypatch.setenv("PEERLAB_TOKEN", "plu_secret-token-value")
    monkeypatch.setenv("PEERLAB_GATEWAY_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    monkeypatch.setenv("PEERLAB_LAB", "tmarker")
    monkeypatch.setenv("WG_SUDO", "1")
    dev = wg_factory.create(netns_factory.create("env"))
    assert dev.pid is not None
    env = _environ(dev.pid)
    assert "PEERLAB_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "PEERLAB_GATEWAY_URL" not in env
    with open(f"/proc/{dev.pid}/environ", "rb") as fh:
        assert b"plu_secret-token-value" not in fh.read()
    assert env["PEERLAB_LAB"] == "tmarker" and env["WG_SUDO"] == "1" and env["PATH"]
