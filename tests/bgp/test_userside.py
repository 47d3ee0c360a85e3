"""The user side (what the daemon and the TUI host): a lease the gateway just granted or renewed is used at
once: a ``lease`` refusal refreshes the leases from the gateway and checks again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from peerlab_tui.core.bgp import Announcement, SafetyError, UserSide, UserSideSpec
from peerlab_tui.core.gateway import GatewayClient
from tests.bgp.conftest import USER_ASN, BgpLab, async_wait_until, established, leases, stop_speakers

pytestmark = pytest.mark.netns

PREFIX = "2001:db8:100::/48"


class Gateway:
    """A gateway whose active leases the test changes; counts the lease refreshes."""

    def __init__(self) -> None:
        self.active: list[dict[str, Any]] = []
        self.info_calls = 0

    def lease(self, ends_in: float) -> None:
        now = datetime.now(UTC)
        self.active = [{"prefix": PREFIX, "start_time": (now - timedelta(minutes=1)).isoformat(),
                        "end_time": (now + timedelta(seconds=ends_in)).isoformat()}]

    def handler(self, request: httpx.Request) -> httpx.Response:
        if (request.method, request.url.path) == ("GET", "/api/user/info"):
            self.info_calls += 1
            return httpx.Response(200, json={"user_hash": "u1", "asn": USER_ASN, "max_leases": 1,
                                             "active_leases": self.active})
        return httpx.Response(404, json={"error": 404, "message": "no"})


@pytest.fixture
async def side(bgp_lab: BgpLab, tmp_path: Path) -> AsyncIterator[tuple[UserSide, Gateway]]:
    gateway = Gateway()
    spec = UserSideSpec(speaker=bgp_lab.config(), tunnel=False, leases=[])
    async with GatewayClient("http://127.0.0.1:9", "t", transport=httpx.MockTransport(gateway.handler),
                             retries=0) as client:
        user_side = UserSide(tmp_path / "state", spec, gateway=client)
        await user_side.start()
        try:
            await established(user_side.speaker, 60)
            yield user_side, gateway
        finally:
            await stop_speakers([user_side.speaker])
            await user_side.stop()
            await async_wait_until(lambda: not bgp_lab.leased_routes("rs1"), 30, "BIRD to drop our routes")


async def test_a_lease_requested_after_start_is_used_at_once(side: tuple[UserSide, Gateway]) -> None:
    user_side, gateway = side
    with pytest.raises(SafetyError) as info:  # nothing leased at the gateway either
        await user_side.announce(Announcement(prefix=PREFIX))
    assert info.value.rule == "lease" and "leased: none" in info.value.message
    assert gateway.info_calls == 1  # refreshed once, then refused
    gateway.lease(3600)  # `lease request` right now; the periodic refresh is a minute away
    preview = await user_side.preview(Announcement(prefix=PREFIX))
    assert preview.prefix == PREFIX
    sent = await user_side.announce(Announcement(prefix=PREFIX, route_servers=["rs1"]))
    assert sent.route_servers == ["rs1"]
    assert [lease.prefix for lease in user_side.speaker.leases] == [PREFIX]


async def test_a_renewed_lease_is_used_at_once(side: tuple[UserSide, Gateway]) -> None:
    user_side, gateway = side
    user_side.speaker.set_leases(leases(ends_in=30, prefixes=[PREFIX]))  # inside the 60 s margin
    gateway.lease(7200)  # `lease renew` at the gateway
    await user_side.announce(Announcement(prefix=PREFIX, route_servers=["rs1"]))
    assert gateway.info_calls == 1
    [route] = user_side.speaker.announced()
    assert route.withdraw_at is not None and route.withdraw_at > datetime.now(UTC) + timedelta(hours=1)
    # A refusal by another rule never asks the gateway.
    with pytest.raises(SafetyError):
        await user_side.announce(Announcement(prefix=PREFIX, prepend=9))
    assert gateway.info_calls == 1
