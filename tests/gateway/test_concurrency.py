"""200 users at once over real HTTP, demand above supply: no double lease, no 5xx, losers get 503."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from lab.gateway.db import normalize_url
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import bearer
from tests.support.gateway import GatewayHandle

USERS = 200
# 128 + 32 = 160 /48 leases for 200 users.
POOLS = ["--prefix-pool", "2001:db8:1000::/41", "--prefix-pool", "2001:db8:2000::/43", "--lease-length", "48"]
SUPPLY = 160


async def _storm(gw: GatewayHandle) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=USERS + 10, max_keepalive_connections=USERS + 10)
    async with httpx.AsyncClient(base_url=gw.url, timeout=120, limits=limits) as client:
        created = await asyncio.gather(
            *[
                client.post("/admin/users", json={"name": f"user{i:03d}"}, headers=bearer(gw.admin_token))
                for i in range(USERS)
            ]
        )
        assert all(r.status_code == 201 for r in created), {r.status_code for r in created}
        tokens = [r.json()["token"] for r in created]

        async def one(token: str) -> httpx.Response:
            asn = await client.post("/api/user/asn", headers=bearer(token))
            assert asn.status_code == 200, asn.text
            return await client.post("/api/user/prefix", json={"duration_hours": 2}, headers=bearer(token))

        return await asyncio.gather(*[one(t) for t in tokens])


async def test_two_hundred_users_at_once(make_gateway: GatewayFactory) -> None:
    """Exactly the supply is leased, each prefix once (checked in the database and via mappings)."""
    gw = make_gateway(POOLS)
    responses = await _storm(gw)
    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses == {200: SUPPLY, 503: USERS - SUPPLY}, statuses
    assert all(r.json()["reason"] == "pool_exhausted" for r in responses if r.status_code == 503)
    prefixes = [r.json()["prefix"] for r in responses if r.status_code == 200]
    assert len(set(prefixes)) == SUPPLY

    engine = create_engine(normalize_url(gw.db_url))
    try:
        with engine.connect() as conn:
            doubles = conn.execute(
                text(
                    "SELECT prefix, COUNT(*) FROM leases WHERE released_at IS NULL "
                    "GROUP BY prefix HAVING COUNT(*) > 1"
                )
            ).all()
            n_leases = conn.execute(text("SELECT COUNT(*) FROM leases")).scalar_one()
            # Every lease holds its own slot, and the slot points back at it (PostgreSQL materializes
            # never-used slots in advance, so only held slots are counted).
            n_slots = conn.execute(
                text(
                    "SELECT COUNT(DISTINCT s.prefix) FROM prefix_slots s "
                    "JOIN leases l ON l.id = s.lease_id AND l.prefix = s.prefix"
                )
            ).scalar_one()
            asns = conn.execute(
                text("SELECT COUNT(DISTINCT asn) FROM users WHERE asn IS NOT NULL")
            ).scalar_one()
    finally:
        engine.dispose()
    assert doubles == [] and n_leases == SUPPLY and n_slots == SUPPLY and asns == USERS

    svc = gw.create_service_token("check", ["mappings:read"])
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
        mappings: list[dict[str, Any]] = (await client.get("/service/mappings", headers=bearer(svc))).json()[
            "mappings"
        ]
    mapped = [p for m in mappings for p in m["prefixes"]]
    assert len(mappings) == USERS and sorted(mapped) == sorted(prefixes)
    assert len({m["asn"] for m in mappings}) == USERS


async def test_one_user_racing_itself_gets_one_lease(make_gateway: GatewayFactory) -> None:
    """The lease limit holds under concurrent requests from the same user."""
    gw = make_gateway()
    user = gw.create_user("racer")
    async with httpx.AsyncClient(base_url=gw.url, timeout=120) as client:
        assert (await client.post("/api/user/asn", headers=bearer(user["token"]))).status_code == 200
        responses = await asyncio.gather(
            *[
                client.post("/api/user/prefix", json={"duration_hours": 1}, headers=bearer(user["token"]))
                for _ in range(30)
            ]
        )
    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 403: 29}, statuses
    assert {r.json()["reason"] for r in responses if r.status_code == 403} == {"lease_limit"}
