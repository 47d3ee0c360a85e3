"""Keys (X25519 of RFC 7748, the 0600 key file), the UAPI text codec and the peer diff, without daemons."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from peerlab_tui.core.models import TunnelPeer
from peerlab_tui.core.tunnel import (
    DeviceStatus,
    KeyFileError,
    PeerConfig,
    PeerStatus,
    diff_peers,
    generate_private_key,
    load_or_create_private_key,
    public_key,
    read_private_key,
    rs_peer_config,
)
from peerlab_tui.core.tunnel.device import resolve_endpoint, split_endpoint
from peerlab_tui.core.tunnel.keys import decode_key, key_to_hex, x25519
from peerlab_tui.core.tunnel.manager import parse_ping_avg
from peerlab_tui.core.tunnel.uapi import build_set, parse_get
from tests.support.requirements import require_binary


def test_x25519_rfc7748_vectors() -> None:
    # RFC 7748 section 5.2 (one iteration) and the section 6.1 Diffie-Hellman example.
    k = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert x25519(k, u).hex() == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    nine = (9).to_bytes(32, "little")
    alice_pub, bob_pub = x25519(alice, nine), x25519(bob, nine)
    assert alice_pub.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert x25519(alice, bob_pub).hex() == shared == x25519(bob, alice_pub).hex()


def test_public_key_matches_wg_pubkey() -> None:
    require_binary("wg")
    for _ in range(3):
        priv = generate_private_key()
        out = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True, timeout=10,
                             check=True)
        assert public_key(priv) == out.stdout.strip()


def test_key_file_is_0600_stable_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "state" / "private.key"
    key, created = load_or_create_private_key(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_private_key(path) == (key, False)
    rotated, created = load_or_create_private_key(path, rotate=True)
    assert created and rotated != key and read_private_key(path) == rotated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["private.key"]  # no temp file left behind

    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_private_key(path)
    os.chmod(path, 0o600)
    path.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="does not hold a WireGuard private key"):
        read_private_key(path)


def test_endpoints() -> None:
    assert split_endpoint("[2001:db8::1]:51820") == ("2001:db8::1", 51820)
    assert split_endpoint("192.0.2.1:51820") == ("192.0.2.1", 51820)
    assert resolve_endpoint("localhost:51820") in {"[::1]:51820", "127.0.0.1:51820"}
    assert resolve_endpoint("[2001:0db8::0001]:1") == "[2001:db8::1]:1"
    for bad in ("2001:db8::1:51820", "[2001:db8::1]", "host:0", "host:x", ":1"):
        with pytest.raises(ValueError):
            split_endpoint(bad)


def test_uapi_codec() -> None:
    priv = generate_private_key()
    peer = public_key(generate_private_key())
    text = build_set(private_key=priv, listen_port=51820, replace_peers=True, peers=[
        PeerConfig(peer, endpoint="[2001:db8::1]:51820", allowed_ips=("::/0",), persistent_keepalive=25)])
    lines = text.splitlines()
    assert lines[0] == "set=1" and text.endswith("\n\n")
    assert "replace_peers=true" in lines and "allowed_ip=::/0" in lines
    assert f"private_key={key_to_hex(priv)}" in lines and f"public_key={key_to_hex(peer)}" in lines

    reply = (f"private_key={key_to_hex(priv)}\nlisten_port=51820\npublic_key={key_to_hex(peer)}\n"
             "endpoint=[2001:db8::1]:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=500\n"
             "tx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\nallowed_ip=::/0\nprotocol_version=1\n")
    st = parse_get("wg0", reply)
    assert st.public_key == public_key(priv) and st.listen_port == 51820
    (p,) = st.peers
    assert p.public_key == peer and p.endpoint == "[2001:db8::1]:51820" and p.allowed_ips == ("::/0",)
    assert p.rx_bytes == 20 and p.tx_bytes == 10 and p.persistent_keepalive == 25
    assert p.last_handshake == pytest.approx(1_700_000_000.0000005)


def _status(key: str, allowed: tuple[str, ...], endpoint: str | None = None, keepalive: int | None = None
            ) -> PeerStatus:
    return PeerStatus(public_key=key, endpoint=endpoint, allowed_ips=allowed, last_handshake=None,
                      rx_bytes=0, tx_bytes=0, persistent_keepalive=keepalive)


def test_diff_peers() -> None:
    a, b, c, c2 = (public_key(generate_private_key()) for _ in range(4))
    current = [_status(a, ("fd00::a/128",), "[2001:db8::a]:1"), _status(b, ("fd00::b/128",)),
               _status(c, ("fd00::c/128",))]
    desired = [PeerConfig(a, allowed_ips=("fd00:0::a/128",)), PeerConfig(b, allowed_ips=("fd00::b/128",),
               persistent_keepalive=25), PeerConfig(c2, allowed_ips=("fd00::c/128",))]
    diff = diff_peers(current, desired)
    assert [p.public_key for p in diff.add] == [c2]
    assert [p.public_key for p in diff.update] == [b]  # keepalive changed; a's roaming endpoint is fine
    assert diff.remove == (c,)
    assert diff_peers(current, [PeerConfig(a, endpoint="[2001:db8::b]:1", allowed_ips=("fd00::a/128",))]
                      ).update  # a pinned endpoint that differs is corrected
    with pytest.raises(ValueError, match="twice"):
        diff_peers([], [PeerConfig(a), PeerConfig(a, allowed_ips=("::/0",))])
    with pytest.raises(ValueError, match="public key"):
        PeerConfig("bm90IGEga2V5")


def test_rs_peer_config_uses_host_routes_of_the_rs_overlay() -> None:
    key = public_key(generate_private_key())
    tp = TunnelPeer(user_hash="u1", public_key=key, addresses=["fd00:1::5/64", "fd00:2::5/64"])
    cfg = rs_peer_config(tp, overlay_network="fd00:1::/64", extra_allowed_ips=["2001:db8:100::/48"])
    assert cfg.public_key == key and cfg.endpoint is None
    assert cfg.allowed_ips == ("fd00:1::5/128", "2001:db8:100::/48")
    assert rs_peer_config(tp).allowed_ips == ("fd00:1::5/128", "fd00:2::5/128")


def test_parse_ping_avg() -> None:
    out = ("--- fd00::1 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\n"
           "rtt min/avg/max/mdev = 0.041/0.057/0.080/0.016 ms\n")
    assert parse_ping_avg(out) == 0.057
    assert parse_ping_avg("3 packets transmitted, 0 received, 100% packet loss, time 2040ms\n") is None


def _other_spelling(key: str) -> str:
    """The same 32 bytes in another base64 text (non-zero padding bits in the last character)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(key[-2]) | 1]
    other = key[:-2] + last + "="
    assert other != key and decode_key(other) == decode_key(key)
    return other


def test_keys_are_compared_as_bytes_not_text() -> None:
    """Another spelling of a configured key is the same peer: no add, no remove, no duplicate entry."""
    a = public_key(generate_private_key())
    alias = _other_spelling(a)
    assert PeerConfig(alias).public_key == a
    current = [_status(a, ("fd00::a/128",))]
    assert diff_peers(current, [PeerConfig(alias, allowed_ips=("fd00::a/128",))]).empty
    diff = diff_peers([_status(alias, ("fd00::a/128",))], [PeerConfig(a, allowed_ips=("fd00::b/128",))])
    assert not diff.add and not diff.remove and [p.public_key for p in diff.update] == [a]
    with pytest.raises(ValueError, match="twice"):
        diff_peers([], [PeerConfig(a), PeerConfig(alias, allowed_ips=("::/0",))])
    assert DeviceStatus("wg0", None, None, (_status(a, ()),)).peer(alias) is not None
