"""The whole slice on the real embedded lab, the way a user drives it (README walkthrough), and the overlay's
key rotation and removal reaching both route servers (issues 3 and 4)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.bird import BirdControl
from peerlab_tui.core.tunnel.wggo import WireGuardGo
from tests.e2e.conftest import ROUTE_SERVERS, UPSTREAM_PREFIXES, Lab, wait_until
from tests.support.sessions import assert_no_reset

pytestmark = pytest.mark.netns


def rs_peer_keys(lab: Lab, rs: str) -> set[str]:
    """The public keys a route server's WireGuard device has as peers (what ``wg show`` lists)."""
    name = f"{lab.run.prefix}-{rs}"
    return {p.public_key for p in WireGuardGo(name, name).status().peers}


def test_whole_slice_in_a_user_namespace(lab: Lab, tmp_path: Path) -> None:
    """lease -> bgp up (brings the tunnel up) -> Established at rs1 and rs2 -> announce -> accepted at both
    in ``routes`` with the attributes sent -> ``received`` has the upstream's table -> withdraw -> gone from
    both BIRDs and from ``routes`` within 5 s; no BGP session of the lab was reset on the way."""
    before = lab.sessions_since()
    alice = lab.add_user("alice", tmp_path)
    asn, prefix = alice.lease()

    # No `tunnel up` first: the daemon `bgp up` starts brings the WireGuard tunnel up itself (real
    # wireguard-go, hosted by the same user-side process as the speaker) and records that it did.
    up = alice.cli("bgp", "up", "--netns", alice.netns)
    assert up["netns"] == alice.netns and up["asn"] == asn
    assert up["tunnel"]["created_by_bgp"] is True and len(up["tunnel"]["interfaces"]) == 2
    peers = alice.cli("tunnel", "status")["peers"]
    assert [p["rs"] for p in peers] == list(ROUTE_SERVERS)
    assert all(p["netns"] == alice.netns and p["handshake_age_s"] is not None and p["rtt_ms"] is not None
               for p in peers), peers
    status = wait_until(alice.established, what="sessions Established at rs1 and rs2")
    assert {s["rs"]: s["received_routes"] >= 0 for s in status["sessions"]} == {"rs1": True, "rs2": True}
    protocols = {rs: wait_until(lambda rs=rs: lab.user_protocol(rs, asn), what=f"alice's session on {rs}")
                 for rs in ROUTE_SERVERS}
    assert all("Established" in p.info for p in protocols.values())
    since = lab.sessions_since()

    # Announce with every attribute option: the route servers see them as sent and accept the lease.
    sent = alice.cli("announce", prefix, "--prepend", "1", "--community", "64500:7",
                     "--large-community", f"{asn}:1:2", "--med", "42")
    assert sent["as_path"] == [asn, asn] and len(sent["commands"]) == 2

    def accepted_everywhere() -> dict[str, dict[str, object]] | None:
        rows = alice.verdicts(prefix)
        return rows if all(rows.get(rs, {}).get("state") == "accepted" for rs in ROUTE_SERVERS) else None

    rows = wait_until(accepted_everywhere, what=f"{prefix} accepted at rs1 and rs2 in routes")
    for rs in ROUTE_SERVERS:
        row = rows[rs]
        assert (row["as_path"], row["communities"], row["large_communities"], row["med"], row["reason"]) == (
            [asn, asn], ["64500:7"], [f"{asn}:1:2"], 42, None), row
        assert row["sent_as_path"] == [asn, asn]
        assert prefix in lab.accepted(rs, protocols[rs].name)

    # What the route servers pass on from the upstream.
    received = alice.cli("received")["routes"]
    for rs in ROUTE_SERVERS:
        assert {r["prefix"] for r in received if r["rs"] == rs} >= UPSTREAM_PREFIXES
    f300 = next(r for r in received if r["rs"] == "rs1" and r["prefix"] == "2001:db8:f300::/48")
    assert f300["as_path"][-4:] == [64510, 64496, 64497, 64498]
    only_rs2 = alice.cli("received", "--rs", "rs2")["routes"]
    assert only_rs2 and {r["rs"] for r in only_rs2} == {"rs2"}

    # Withdraw: gone from both route servers' BIRD and from the looking glass within 5 s.
    alice.cli("withdraw", prefix)
    withdrawn = time.monotonic()
    for rs in ROUTE_SERVERS:
        wait_until(lambda rs=rs: prefix not in lab.accepted(rs, protocols[rs].name), timeout=5,
                   what=f"{prefix} gone from {rs}'s BIRD", interval=0.05)
    remaining = max(0.5, 5 - (time.monotonic() - withdrawn))
    wait_until(lambda: not alice.verdicts(prefix), timeout=remaining, what=f"{prefix} gone from routes",
               interval=0.05)

    assert_no_reset(since, lab.sessions_since())
    assert_no_reset(before, since)
    # bgp up brought the tunnel up, so bgp down takes it down: interfaces, wireguard-go and registration.
    down = alice.cli("bgp", "down")
    assert sorted(down["tunnel_removed"]) == sorted(up["tunnel"]["interfaces"])
    assert alice.cli("tunnel", "status")["peers"] == []
    for ifname in up["tunnel"]["interfaces"]:
        assert not Path(f"/var/run/wireguard/{ifname}.sock").exists()
    for rs in ROUTE_SERVERS:
        wait_until(lambda rs=rs: lab.user_protocol(rs, asn) is None, what=f"alice's protocol gone from {rs}")


def test_key_rotation_and_tunnel_down_reach_both_route_servers(lab: Lab, tmp_path: Path) -> None:
    """``tunnel up --rotate-key``: both route servers list the new key and not the old one, traffic flows
    again and BGP stays up; ``tunnel down``: the peer leaves both devices and the user's session leaves both
    BIRD configurations. Other sessions are never reset."""
    bob = lab.add_user("bob", tmp_path)
    asn, prefix = bob.lease()
    first = bob.cli("tunnel", "up", "--netns", bob.netns)
    assert first["reachable"] == {"rs1": True, "rs2": True}
    old_key = first["public_key"]
    for rs in ROUTE_SERVERS:
        assert old_key in rs_peer_keys(lab, rs)
    code, refused = bob.cli("bgp", "up", "--netns", f"{bob.netns}-x", check=False)
    assert code == 2 and bob.netns in refused["message"]  # the tunnel lives elsewhere: refused up front
    up = bob.cli("bgp", "up")  # no --netns: the tunnel's namespace
    assert up["netns"] == bob.netns and up["tunnel"]["created_by_bgp"] is False
    wait_until(bob.established, what="bob's sessions")
    protocols = {rs: wait_until(lambda rs=rs: lab.user_protocol(rs, asn), what=f"bob's session on {rs}")
                 for rs in ROUTE_SERVERS}
    bob.cli("announce", prefix)
    wait_until(lambda: all(prefix in lab.accepted(rs, protocols[rs].name) for rs in ROUTE_SERVERS),
               what="bob's lease accepted")
    since = lab.sessions_since()

    rotated = bob.cli("tunnel", "up", "--netns", bob.netns, "--rotate-key")
    new_key = rotated["public_key"]
    assert rotated["rotated"] and new_key != old_key
    assert rotated["reachable"] == {"rs1": True, "rs2": True}  # traffic works again over both tunnels
    for rs in ROUTE_SERVERS:
        keys = wait_until(lambda rs=rs: (lambda k: k if new_key in k and old_key not in k else None)(
            rs_peer_keys(lab, rs)), what=f"the new key (only) on {rs}")
        assert new_key in keys and old_key not in keys
    peers = bob.cli("tunnel", "status")["peers"]
    assert all(p["rtt_ms"] is not None for p in peers), peers
    # The TCP sessions ride out the rotation: nothing was reset, the route is still accepted.
    assert bob.established() is not None
    assert all(prefix in lab.accepted(rs, protocols[rs].name) for rs in ROUTE_SERVERS)
    assert_no_reset(since, lab.sessions_since(), "a BGP session was reset by the key rotation")

    stopped = bob.cli("bgp", "down")
    assert stopped["tunnel_kept"] is True and stopped["tunnel_removed"] == []  # bob brought it up himself
    assert all(p["rtt_ms"] is not None for p in bob.cli("tunnel", "status")["peers"])
    down = bob.cli("tunnel", "down")
    assert down["deregistered"] and len(down["removed"]) == 2
    for rs in ROUTE_SERVERS:
        wait_until(lambda rs=rs: new_key not in rs_peer_keys(lab, rs), what=f"bob's key removed from {rs}")
        config = lab.run.state_dir / "rs" / rs / "bird.conf"
        name = protocols[rs].name
        wait_until(lambda config=config, name=name: f"protocol bgp {name}" not in config.read_text(),
                   what=f"bob's session removed from {rs}'s BIRD config")
        wait_until(lambda rs=rs: lab.user_protocol(rs, asn) is None, what=f"bob's protocol gone from {rs}")
    others = {k: v for k, v in since.items() if not k[1].startswith(f"u{asn}_")}
    assert_no_reset(others, lab.sessions_since())
    with BirdControl(lab.run.state_dir / "rs" / "rs1" / "bird.ctl") as ctl:
        assert any(p.name == "t_upstream" and "Established" in p.info for p in ctl.show_protocols())
