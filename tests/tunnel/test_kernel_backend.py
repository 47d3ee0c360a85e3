"""The kernel backend against pyroute2's real API (this machine has no WireGuard module).

The sockets are autospecced from ``pyroute2.IPRoute`` and ``pyroute2.WireGuard``, so a call with a wrong
signature fails; ``WireGuard.info`` answers with genuine ``wgmsg`` messages encoded and decoded by pyroute2.
"""

from __future__ import annotations

import inspect
import socket
from typing import Any

import pyroute2
import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.wireguard import WG_CMD_GET_DEVICE, AsyncWireGuard, wgmsg

from peerlab_tui.core.tunnel import KernelWireGuard, PeerConfig, generate_private_key, public_key, sync_peers
from peerlab_tui.core.tunnel.backend import BACKENDS, select_backend
from peerlab_tui.core.tunnel.errors import BackendUnavailableError, TunnelError
from peerlab_tui.core.tunnel.kernel import status_from_messages


def _allowed(cidr: str) -> dict[str, Any]:
    addr, mask = cidr.split("/")
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return {"attrs": [["WGALLOWEDIP_A_FAMILY", fam], ["WGALLOWEDIP_A_IPADDR", socket.inet_pton(fam, addr)],
                      ["WGALLOWEDIP_A_CIDR_MASK", int(mask)]]}


def device_message(private: str, port: int, peers: list[dict[str, Any]]) -> wgmsg:
    """A GET_DEVICE reply as the kernel sends it, round-tripped through pyroute2's codec."""
    msg = wgmsg()
    msg["cmd"] = WG_CMD_GET_DEVICE
    msg["version"] = 1
    msg["attrs"].append(["WGDEVICE_A_IFNAME", "wgk0"])
    msg["attrs"].append(["WGDEVICE_A_LISTEN_PORT", port])
    msg["attrs"].append(["WGDEVICE_A_PRIVATE_KEY", private])
    msg["attrs"].append(["WGDEVICE_A_PUBLIC_KEY", public_key(private)])
    nested = []
    for p in peers:
        attrs: list[list[Any]] = [["WGPEER_A_PUBLIC_KEY", p["key"]]]
        if "endpoint" in p:
            attrs.append(["WGPEER_A_ENDPOINT", {"addr": p["endpoint"][0], "port": p["endpoint"][1]}])
        attrs += [["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": p.get("hs", 0), "tv_nsec": 0}],
                  ["WGPEER_A_RX_BYTES", p.get("rx", 0)], ["WGPEER_A_TX_BYTES", p.get("tx", 0)],
                  ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", p.get("keepalive", 0)],
                  ["WGPEER_A_ALLOWEDIPS", [_allowed(a) for a in p["allowed"]]]]
        nested.append({"attrs": attrs})
    msg["attrs"].append(["WGDEVICE_A_PEERS", nested])
    msg.encode()
    decoded = wgmsg(msg.data)
    decoded.decode()
    return decoded


class Call:
    """One recorded call."""

    def __init__(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs


class FakeSocket:
    """Records calls after checking them against the real pyroute2 method's signature.

    The sync ``IPRoute`` forwards its methods to ``AsyncIPRoute`` (through ``__getattr__``), so that is the
    class whose signatures count; ``WireGuard`` defines ``set``/``info`` itself.
    """

    def __init__(self, api: type) -> None:
        self._api = api
        self.calls: list[Call] = []
        # name -> successive answers (the last one repeats); an exception is raised instead.
        self.answers: dict[str, list[Any]] = {}

    def __enter__(self) -> FakeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._api, name)  # AttributeError: not pyroute2's API
        sig = inspect.signature(real)

        def call(*args: Any, **kwargs: Any) -> Any:
            sig.bind(None, *args, **kwargs)  # TypeError when the real method would not take these
            self.calls.append(Call(name, args, kwargs))
            queue = self.answers.get(name) or [None]
            result = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(result, BaseException):
                raise result
            return result

        return call

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]


class Fakes:
    """Fake pyroute2 sockets plus the factories KernelWireGuard takes."""

    def __init__(self) -> None:
        self.ipr = FakeSocket(pyroute2.AsyncIPRoute)
        self.wg = FakeSocket(pyroute2.WireGuard)
        self.netns_seen: list[str | None] = []

    def iproute(self, netns: str | None) -> Any:
        self.netns_seen.append(netns)
        return self.ipr

    def wireguard(self, netns: str | None) -> Any:
        self.netns_seen.append(netns)
        return self.wg

    def device(self, ifname: str = "wgk0", netns: str | None = "nsA") -> KernelWireGuard:
        return KernelWireGuard(ifname, netns, iproute_factory=self.iproute, wireguard_factory=self.wireguard)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    monkeypatch.setattr("peerlab_tui.core.tunnel.kernel.check_netns", lambda netns: None)
    return Fakes()


def test_create_adds_link_once_and_brings_it_up(fakes: Fakes) -> None:
    fakes.ipr.answers["link_lookup"] = [[], [7]]
    KernelWireGuard.create("wgk0", "nsA", iproute_factory=fakes.iproute, wireguard_factory=fakes.wireguard)
    assert fakes.netns_seen == ["nsA"]
    calls = fakes.ipr.named("link")
    assert calls[0].args == ("add",) and calls[0].kwargs == {"ifname": "wgk0", "kind": "wireguard"}
    assert calls[1].args == ("set",) and calls[1].kwargs == {"index": 7, "state": "up"}

    fakes.ipr.calls.clear()
    fakes.ipr.answers["link_lookup"] = [[7]]  # already there: only brought up
    KernelWireGuard.create("wgk0", "nsA", iproute_factory=fakes.iproute, wireguard_factory=fakes.wireguard)
    assert [c.args[0] for c in fakes.ipr.named("link")] == ["set"]


def test_configure_replace_removes_unlisted_peers(fakes: Fakes) -> None:
    priv = generate_private_key()
    stale, keep = public_key(generate_private_key()), public_key(generate_private_key())
    fakes.wg.answers["info"] = [(device_message(priv, 51820, [
        {"key": stale, "allowed": ["fd00::9/128"]}, {"key": keep, "allowed": ["fd00::2/128"]}]),)]
    dev = fakes.device()
    dev.configure(priv, 51820, [PeerConfig(keep, endpoint="[2001:db8::1]:51820", allowed_ips=("::/0",),
                                           persistent_keepalive=25)])
    calls = fakes.wg.named("set")
    assert calls[0].args == ("wgk0",) and calls[0].kwargs == {"private_key": priv, "listen_port": 51820}
    assert calls[1].kwargs == {"peer": {"public_key": stale, "remove": True}}
    assert calls[2].kwargs == {"peer": {
        "public_key": keep, "persistent_keepalive": 25, "replace_allowed_ips": True, "allowed_ips": ["::/0"],
        "endpoint_addr": "2001:db8::1", "endpoint_port": 51820}}
    # pyroute2's own encoder accepts what we built (it raises on a malformed peer or key).
    for call in calls:
        msg = wgmsg()
        msg["attrs"].append(["WGDEVICE_A_IFNAME", "wgk0"])
        if "peer" in call.kwargs:
            AsyncWireGuard._wg_set_peer(AsyncWireGuard.__new__(AsyncWireGuard), msg, call.kwargs["peer"])
        else:
            msg["attrs"].append(["WGDEVICE_A_PRIVATE_KEY", call.kwargs["private_key"]])
        msg.encode()


def test_status_parses_kernel_messages(fakes: Fakes) -> None:
    priv = generate_private_key()
    peer = public_key(generate_private_key())
    fakes.wg.answers["info"] = [(device_message(priv, 4000, [
        {"key": peer, "endpoint": ("2001:db8::7", 51820), "hs": 1_700_000_000, "rx": 123, "tx": 456,
         "keepalive": 25, "allowed": ["fd00::2/128", "2001:db8:100::/48"]}]),)]
    st = fakes.device().status()
    assert [c.args for c in fakes.wg.named("info")] == [("wgk0",)]
    assert st.public_key == public_key(priv) and st.listen_port == 4000
    (p,) = st.peers
    assert p.public_key == peer and p.endpoint == "[2001:db8::7]:51820"
    assert p.last_handshake == 1_700_000_000 and p.rx_bytes == 123 and p.tx_bytes == 456
    assert p.persistent_keepalive == 25 and p.allowed_ips == ("fd00::2/128", "2001:db8:100::/48")


def test_status_merges_a_peer_split_across_messages() -> None:
    priv = generate_private_key()
    peer = public_key(generate_private_key())
    m1 = device_message(priv, 1, [{"key": peer, "allowed": ["fd00::1/128"], "rx": 5}])
    m2 = device_message(priv, 1, [{"key": peer, "allowed": ["fd00::2/128"], "rx": 5}])
    (p,) = status_from_messages("wgk0", [m1, m2]).peers
    assert p.allowed_ips == ("fd00::1/128", "fd00::2/128") and p.last_handshake is None


def test_sync_peers_through_the_kernel_backend(fakes: Fakes) -> None:
    priv = generate_private_key()
    old, new = public_key(generate_private_key()), public_key(generate_private_key())
    fakes.wg.answers["info"] = [(device_message(priv, 1, [{"key": old, "allowed": ["fd00::2/128"]}]),)]
    diff = sync_peers(fakes.device(), [PeerConfig(new, allowed_ips=("fd00::2/128",))])
    assert diff.remove == (old,) and [p.public_key for p in diff.add] == [new]
    peers = [c.kwargs["peer"] for c in fakes.wg.named("set")]
    assert peers[0] == {"public_key": old, "remove": True}
    assert peers[1]["public_key"] == new and peers[1]["allowed_ips"] == ["fd00::2/128"]
    assert "endpoint_addr" not in peers[1]


def test_delete_and_netlink_errors(fakes: Fakes) -> None:
    fakes.ipr.answers["link_lookup"] = [[9]]
    fakes.device().delete()
    assert [(c.args, c.kwargs) for c in fakes.ipr.named("link")] == [(("del",), {"index": 9})]
    fakes.ipr.calls.clear()
    fakes.ipr.answers["link_lookup"] = [[]]
    fakes.device().delete()  # already gone: nothing to do
    assert fakes.ipr.named("link") == []

    fakes.wg.answers["info"] = [NetlinkError(2, "No such file or directory")]
    with pytest.raises(TunnelError, match="wgk0"):
        fakes.device().status()


def test_fake_rejects_calls_pyroute2_would_reject(fakes: Fakes) -> None:
    with pytest.raises(TypeError):
        fakes.wg.set("wgk0", peers=[])  # the real keyword is `peer`
    with pytest.raises(AttributeError):
        fakes.ipr.link_add  # noqa: B018 - not an IPRoute method


def test_select_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEERLAB_WG_BACKEND", "kernel")
    assert select_backend() is KernelWireGuard
    assert select_backend("wireguard-go") is BACKENDS["wireguard-go"]
    with pytest.raises(BackendUnavailableError, match="unknown WireGuard backend"):
        select_backend("bogus")
    monkeypatch.setenv("PEERLAB_WG_BACKEND", "auto")
    monkeypatch.setattr("peerlab_tui.core.tunnel.backend.kernel_wireguard_available", lambda: False)
    monkeypatch.setenv("PEERLAB_WIREGUARD_GO", "/nonexistent/wireguard-go")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BackendUnavailableError, match="wireguard-go is not installed"):
        select_backend()
