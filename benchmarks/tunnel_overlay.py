"""Figures of the WireGuard overlay library (needs root, wireguard-go, ping). Prints, asserts nothing.

    .venv/bin/python benchmarks/tunnel_overlay.py [--peers 1000]

- key generation (pure-Python X25519)
- wireguard-go start until its UAPI socket answers
- route-server peer sync through UAPI: initial add of N peers, a no-op sync, 10 % of keys rotated
- a user<->RS pair over a veth underlay: first ping after configuration (handshake), RTT over the tunnel
  versus the bare underlay
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import time

from peerlab_tui.core import netns as nsmod
from peerlab_tui.core.models import TunnelPeer
from peerlab_tui.core.tunnel import (
    PeerConfig,
    WireGuardGo,
    generate_private_key,
    measure_rtt,
    public_key,
    rs_peer_config,
    sync_peers,
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    """Run the measurements and print them."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--peers", type=int, default=1000)
    args = ap.parse_args()
    tag = secrets.token_hex(3)
    namespaces = [f"bwr{tag}", f"bwu{tag}"]
    devices: list[WireGuardGo] = []
    try:
        t = time.perf_counter()
        for _ in range(200):
            public_key(generate_private_key())
        print(f"keygen + public key: {_ms((time.perf_counter() - t) / 200)} per key (pure Python X25519)")

        for ns in namespaces:
            nsmod.create_netns(ns)
        rs_ns, user_ns = namespaces
        nsmod.create_veth(f"bva{tag}", f"bvb{tag}", netns_a=rs_ns, netns_b=user_ns)
        nsmod.add_address(f"bva{tag}", "fd99::1/64", netns=rs_ns)
        nsmod.add_address(f"bvb{tag}", "fd99::2/64", netns=user_ns)

        starts = []
        for i in range(3):
            t = time.perf_counter()
            dev = WireGuardGo.create(f"bwt{tag}{i}", rs_ns)
            starts.append(time.perf_counter() - t)
            devices.append(dev)
        print(f"wireguard-go start until UAPI answers: median {_ms(statistics.median(starts))}")
        for dev in devices:
            dev.delete()
        devices.clear()

        rs = WireGuardGo.create(f"bwr{tag}", rs_ns)
        devices.append(rs)
        rs_key = generate_private_key()
        rs.configure(rs_key, 51820, [])
        n = args.peers
        users = [public_key(generate_private_key()) for _ in range(n)]
        desired = [rs_peer_config(TunnelPeer(user_hash=f"u{i}", public_key=k,
                                             addresses=[f"fd00:1::{i + 0x100:x}/64"]))
                   for i, k in enumerate(users)]
        t = time.perf_counter()
        diff = sync_peers(rs, desired)
        print(f"sync {n} new peers: {_ms(time.perf_counter() - t)} (+{len(diff.add)})")
        t = time.perf_counter()
        diff = sync_peers(rs, desired)
        print(f"no-op sync of {n} peers: {_ms(time.perf_counter() - t)} (empty={diff.empty})")
        rotated = list(desired)
        for i in range(0, n, 10):
            rotated[i] = PeerConfig(public_key(generate_private_key()), allowed_ips=desired[i].allowed_ips)
        t = time.perf_counter()
        diff = sync_peers(rs, rotated)
        print(f"sync with {len(diff.add)} of {n} keys rotated: {_ms(time.perf_counter() - t)}")
        sync_peers(rs, [])

        user = WireGuardGo.create(f"bwu{tag}", user_ns)
        devices.append(user)
        user_key = generate_private_key()
        sync_peers(rs, [PeerConfig(public_key(user_key), allowed_ips=("fd00:1::100/128",))])
        nsmod.add_address(rs.ifname, "fd00:1::1/64", netns=rs_ns)
        nsmod.add_address(user.ifname, "fd00:1::100/64", netns=user_ns)
        t = time.perf_counter()
        user.configure(user_key, None, [PeerConfig(public_key(rs_key), endpoint="[fd99::1]:51820",
                                                   allowed_ips=("::/0",))])
        first = None
        while first is None and time.perf_counter() - t < 30:
            first = measure_rtt("fd00:1::1", netns=user_ns, count=1)
        print(f"configure to first reply over the tunnel (handshake): {_ms(time.perf_counter() - t)}")
        over = [measure_rtt("fd00:1::1", netns=user_ns, count=10) for _ in range(3)]
        under = [measure_rtt("fd99::1", netns=user_ns, count=10) for _ in range(3)]
        print(f"RTT over the tunnel: {statistics.median([x for x in over if x is not None]):.3f} ms; "
              f"bare veth: {statistics.median([x for x in under if x is not None]):.3f} ms")
    finally:
        for dev in devices:
            with contextlib.suppress(Exception):
                dev.delete()
        for ns in namespaces:
            nsmod.delete_netns(ns)


if __name__ == "__main__":
    main()
