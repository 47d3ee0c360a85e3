"""The route servers' verdicts reach ``peerlab-tui routes``: announcements the client would refuse, sent
anyway through ExaBGP directly (the Speaker's unchecked command path, bypassing the safety rules), show as
filtered with the route server's reason and rule, at both route servers, without resetting any session."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from peerlab_tui.core.bgp import (
    Announcement,
    SafetyError,
    SafetySettings,
    SessionState,
    Speaker,
    SpeakerConfig,
)
from peerlab_tui.core.bgp.render import announce_command
from peerlab_tui.core.gateway import GatewayClient
from peerlab_tui.core.tunnel import TunnelManager
from tests.e2e.conftest import ROUTE_SERVERS, Lab, wait_until
from tests.support.sessions import assert_no_reset

pytestmark = pytest.mark.netns

UNLEASED = "2001:db8:1fff::/48"  # inside the lab's pool, leased to nobody


async def test_refused_announcements_show_as_filtered_with_reason_and_rule(lab: Lab, tmp_path: Path) -> None:
    mallory = lab.add_user("mallory", tmp_path)
    asn, prefix = await asyncio.to_thread(mallory.lease)
    since = await asyncio.to_thread(lab.sessions_since)
    six = [f"64500:{i}" for i in range(6)]
    async with GatewayClient(mallory.gateway, mallory.token) as gw:
        manager = TunnelManager(gw, mallory.state_dir, mallory.netns)
        tunnel = (await manager.up()).info
        assert all((await manager.wait_reachable(timeout=30)).values())
        leases = list((await gw.user_info()).active_leases)
        config = SpeakerConfig.from_tunnel(tunnel, asn=asn, netns=mallory.netns)
        speaker = Speaker(config, mallory.state_dir / "bgp", leases=leases, safety=SafetySettings())
        try:
            await speaker.start()
            await asyncio.to_thread(wait_until, lambda: all(
                s.state is SessionState.ESTABLISHED for s in speaker.sessions()), what="mallory's sessions")
            # The client refuses both (nothing is sent) ...
            for ann in (Announcement(prefix=prefix, communities=six), Announcement(prefix=UNLEASED)):
                with pytest.raises(SafetyError):
                    await speaker.announce(ann)
            assert not speaker.announced()
            # ... so the test sends them raw, to both route servers.
            for neighbor in config.neighbors:
                await speaker.send_unchecked(announce_command(neighbor, Announcement(prefix=prefix,
                                                                                     communities=six), asn))
                await speaker.send_unchecked(announce_command(neighbor, Announcement(prefix=UNLEASED), asn))

            def filtered() -> dict[tuple[str, str], dict[str, Any]] | None:
                rows = {(r["prefix"], r["rs"]): r for r in mallory.cli("routes")["routes"]}
                wanted = [(p, rs) for p in (prefix, UNLEASED) for rs in ROUTE_SERVERS]
                return rows if all(rows.get(k, {}).get("state") == "filtered" for k in wanted) else None

            rows = await asyncio.to_thread(wait_until, filtered, what="both verdicts in routes")
            for rs in ROUTE_SERVERS:
                too_many = rows[(prefix, rs)]
                assert too_many["rule"] == "communities"
                assert too_many["reason"] == "6 communities exceed the limit of 5"
                assert too_many["communities"] == six and too_many["as_path"] == [asn]
                unleased = rows[(UNLEASED, rs)]
                assert unleased["rule"] == "not_leased"
                assert unleased["reason"] == f"{UNLEASED} is not leased to you"
            # Not accepted anywhere, and the sessions (mallory's and everyone's) are still up.
            assert all(s.state is SessionState.ESTABLISHED for s in speaker.sessions())
            for rs in ROUTE_SERVERS:
                proto = lab.user_protocol(rs, asn)
                assert proto is not None and "Established" in proto.info
                assert lab.accepted(rs, proto.name) == set()
        finally:
            await speaker.stop()
            await manager.down()
    now = await asyncio.to_thread(lab.sessions_since)
    assert_no_reset(since, now)
