"""The service layer in-process with an injected clock (no HTTP): allocation order and reuse rules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from lab.gateway.clock import ManualClock
from lab.gateway.config import build_config
from lab.gateway.db import Database, migrate
from lab.gateway.service import ApiError, GatewayService
from peerlab_tui.core.errors import ConfigError


@pytest.fixture
def service(db_url: str) -> Iterator[tuple[GatewayService, ManualClock]]:
    """A service over a fresh database with two tiny pools (2 + 1 prefixes) and a 60 s quarantine."""
    db = Database(db_url)
    migrate(db)
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    cfg = build_config(
        {
            "db": db_url,
            "prefix_pools": ["2001:db8:a::/47", "2001:db8:c::/48"],
            "lease_length": 48,
            "max_leases": 5,
            "quarantine_seconds": 60,
        },
        {},
    )
    try:
        yield GatewayService(db, cfg, clock), clock
    finally:
        db.dispose()


def test_fresh_prefixes_first_then_the_longest_rested(service: tuple[GatewayService, ManualClock]) -> None:
    """Never-used prefixes go out in pool order; afterwards the one out of quarantine longest is reused."""
    svc, clock = service
    uid = svc.authenticate(svc.create_user("u").token).user_id  # type: ignore[union-attr]
    assert uid is not None
    svc.assign_asn(uid)
    got = [svc.request_prefix(uid, 1).prefix for _ in range(3)]
    assert got == ["2001:db8:a::/48", "2001:db8:b::/48", "2001:db8:c::/48"]
    with pytest.raises(ApiError) as err:
        svc.request_prefix(uid, 1)
    assert err.value.status == 503 and err.value.reason == "pool_exhausted"

    svc.release_prefix(uid, "2001:db8:b::/48")
    clock.advance(seconds=10)
    svc.release_prefix(uid, "2001:db8:a::/48")
    clock.advance(seconds=55)  # b rested 65 s, a only 55 s
    assert svc.request_prefix(uid, 1).prefix == "2001:db8:b::/48"
    with pytest.raises(ApiError):
        svc.request_prefix(uid, 1)
    clock.advance(seconds=5)
    assert svc.request_prefix(uid, 1).prefix == "2001:db8:a::/48"

    stats = svc.stats()
    assert stats == {"active_leases": 3, "pool_size": 3, "pool_free": 0, "users": 1}
    clock.advance(hours=1, seconds=1)  # all expire by time alone; only c (ended 71 s ago) has rested 60 s
    assert svc.stats()["active_leases"] == 0 and svc.stats()["pool_free"] == 1
    assert [x.state for x in svc.list_leases(uid, history=True).leases].count("expired") == 3
    clock.advance(seconds=60)
    assert svc.stats()["pool_free"] == 3


def test_pool_changes_that_would_overlap_old_leases_are_refused(
    service: tuple[GatewayService, ManualClock], db_url: str
) -> None:
    """A new lease length for a used pool, or an overlapping replacement pool, is a clear ConfigError."""
    svc, _clock = service
    uid = svc.authenticate(svc.create_user("u").token).user_id  # type: ignore[union-attr]
    assert uid is not None
    svc.assign_asn(uid)
    svc.request_prefix(uid, 1)
    svc.check_pools()  # unchanged settings are fine
    base = {"db": db_url, "prefix_pools": ["2001:db8:a::/47", "2001:db8:c::/48"]}
    longer = GatewayService(svc.db, build_config({**base, "lease_length": 56}, {}))
    with pytest.raises(ConfigError, match="lease_length /56"):
        longer.check_pools()
    wider = GatewayService(svc.db, build_config({**base, "prefix_pools": ["2001:db8:8::/45"]}, {}))
    with pytest.raises(ConfigError, match="overlaps 2001:db8:a::/47"):
        wider.check_pools()
    elsewhere = GatewayService(svc.db, build_config({**base, "prefix_pools": ["2001:db8:100::/40"]}, {}))
    elsewhere.check_pools()
