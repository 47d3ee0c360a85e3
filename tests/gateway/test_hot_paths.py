"""The optimized hot paths (lease, release, info): authentication is never stale, errors keep their
precedence, and the PostgreSQL slot claim (row locks, SKIP LOCKED, chunked slots) stays exact under
concurrency. Run on SQLite and PostgreSQL."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import lab.gateway.db as db_module
import lab.gateway.service as service_module
from lab.gateway.clock import ManualClock
from lab.gateway.config import build_config
from lab.gateway.db import Database, migrate
from lab.gateway.service import ApiError, GatewayService
from tests.gateway.conftest import unique
from tests.gateway.helpers import assert_error, call, enc, user_with_asn
from tests.support.gateway import GatewayHandle
from tests.support.postgres import PostgresCluster


def test_deleted_users_token_stops_working_at_once(shared_gw: GatewayHandle) -> None:
    """A token used a moment ago is refused on every user endpoint right after its user is deleted."""
    user = user_with_asn(shared_gw, unique("gone"))
    tok = user["token"]
    prefix = call(shared_gw, "POST", "/api/user/prefix", tok, json={"duration_hours": 1}).json()["prefix"]
    for _ in range(5):  # warm whatever could be warmed
        assert call(shared_gw, "GET", "/api/user/info", tok).status_code == 200
    assert call(shared_gw, "DELETE", f"/admin/users/{user['name']}", shared_gw.admin_token).status_code == 204
    for method, path, body in [
        ("GET", "/api/user/info", None),
        ("POST", "/api/user/asn", None),
        ("POST", "/api/user/prefix", {"duration_hours": 1}),
        ("DELETE", f"/api/user/prefix/{enc(prefix)}", None),
        ("POST", f"/api/user/prefix/{enc(prefix)}/renew", {"duration_hours": 1}),
        ("GET", "/api/user/leases", None),
    ]:
        assert_error(call(shared_gw, method, path, tok, json=body), 401, "unauthenticated")


def test_authentication_comes_before_input_errors(shared_gw: GatewayHandle) -> None:
    """Lease and release resolve the token themselves, yet a bad or wrong token still wins over bad input."""
    svc = shared_gw.create_service_token(unique("svc"), ["mappings:read"])
    for body in ({"duration_hours": 0}, {"duration_hours": "abc"}, {}):
        assert_error(
            call(shared_gw, "POST", "/api/user/prefix", "plu_nope", json=body), 401, "unauthenticated"
        )
        for token in (shared_gw.admin_token, svc):
            assert_error(call(shared_gw, "POST", "/api/user/prefix", token, json=body), 403, "forbidden")
    assert_error(
        call(shared_gw, "DELETE", "/api/user/prefix/not-a-prefix", "plu_nope"), 401, "unauthenticated"
    )
    assert_error(call(shared_gw, "DELETE", "/api/user/prefix/not-a-prefix", svc), 403, "forbidden")

    # With a valid user token, the input errors and refusals are the precise ones.
    fresh = shared_gw.create_user(unique("noasn"))
    assert_error(
        call(shared_gw, "POST", "/api/user/prefix", fresh["token"], json={"duration_hours": 1}), 400, "no_asn"
    )
    owner, other = user_with_asn(shared_gw, unique("own")), user_with_asn(shared_gw, unique("oth"))
    prefix = call(shared_gw, "POST", "/api/user/prefix", owner["token"], json={"duration_hours": 1}).json()[
        "prefix"
    ]
    assert_error(
        call(shared_gw, "DELETE", f"/api/user/prefix/{enc(prefix)}", other["token"]), 404, "not_found"
    )
    assert_error(
        call(shared_gw, "POST", "/api/user/prefix", owner["token"], json={"duration_hours": 1}),
        403,
        "lease_limit",
    )
    assert call(shared_gw, "DELETE", f"/api/user/prefix/{enc(prefix)}", owner["token"]).status_code == 204
    assert_error(
        call(shared_gw, "DELETE", f"/api/user/prefix/{enc(prefix)}", owner["token"]), 404, "not_found"
    )


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL materializes never-used slots 2 at a time (SQLite creates them one by one anyway)."""
    monkeypatch.setattr(service_module, "SLOT_CHUNK", 2)


@pytest.fixture
def service(db_url: str, small_chunks: None) -> Iterator[tuple[GatewayService, ManualClock]]:
    """A service over a fresh database: pools of 4 and 2 prefixes, 60 s quarantine, 10 leases per user."""
    db = Database(db_url)
    migrate(db)
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    cfg = build_config(
        {
            "db": db_url,
            "prefix_pools": ["2001:db8:8::/46", "2001:db8:c::/47"],
            "lease_length": 48,
            "max_leases": 10,
            "quarantine_seconds": 60,
        },
        {},
    )
    try:
        yield GatewayService(db, cfg, clock), clock
    finally:
        db.dispose()


def _user(svc: GatewayService, name: str) -> tuple[int, str]:
    token = svc.create_user(name).token
    principal = svc.authenticate(token)
    assert principal is not None and principal.user_id is not None
    svc.assign_asn(principal.user_id)
    return principal.user_id, token


def test_order_across_slot_chunks(service: tuple[GatewayService, ManualClock]) -> None:
    """Never-used prefixes go out in pool and index order across chunk boundaries, then the longest rested."""
    svc, clock = service
    uid, token = _user(svc, "u")
    got = [svc.request_prefix_by_token(token, 1).prefix for _ in range(5)]
    got.append(svc.request_prefix(uid, 1).prefix)
    assert got == [f"2001:db8:{x}::/48" for x in "89abcd"]
    with pytest.raises(ApiError) as err:
        svc.request_prefix(uid, 1)
    assert err.value.status == 503 and err.value.reason == "pool_exhausted"
    assert svc.stats()["pool_free"] == 0

    svc.release_prefix_by_token(token, "2001:db8:d::/48")
    clock.advance(seconds=5)
    svc.release_prefix(uid, "2001:db8:9::/48")
    clock.advance(seconds=59)  # d (second pool) rested 64 s, 9 (first pool) only 59 s
    assert svc.stats()["pool_free"] == 1
    assert svc.request_prefix(uid, 1).prefix == "2001:db8:d::/48"
    clock.advance(seconds=1)
    assert svc.request_prefix_by_token(token, 1).prefix == "2001:db8:9::/48"
    leases = svc.user_info(uid).active_leases
    assert sorted(x.prefix for x in leases) == sorted(got)


def test_concurrent_claims_across_chunks_are_exact(service: tuple[GatewayService, ManualClock]) -> None:
    """20 users at once for 6 prefixes (materialized 2 at a time on PostgreSQL): 6 distinct leases, 14
    pool_exhausted refusals, no other outcome."""
    svc, _clock = service
    users = [_user(svc, f"c{i:02d}") for i in range(20)]
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(users))

    def worker(token: str) -> None:
        start.wait(timeout=60)
        try:
            outcome = svc.request_prefix_by_token(token, 1).prefix
        except ApiError as exc:
            outcome = f"{exc.status} {exc.reason}"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker, args=(token,)) for _uid, token in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    outcomes = collections.Counter(r if r.startswith("503") else "leased" for r in results)
    assert outcomes == {"leased": 6, "503 pool_exhausted": 14}, results
    assert len({r for r in results if not r.startswith("503")}) == 6


def test_concurrent_releases_of_one_lease(service: tuple[GatewayService, ManualClock]) -> None:
    """Ten simultaneous releases of the same lease: exactly one succeeds, the others are 404."""
    svc, _clock = service
    _uid, token = _user(svc, "r")
    prefix = svc.request_prefix_by_token(token, 1).prefix
    results: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def worker() -> None:
        start.wait(timeout=60)
        try:
            svc.release_prefix_by_token(token, prefix)
            status = 204
        except ApiError as exc:
            status = exc.status
        with lock:
            results.append(status)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [204] + [404] * 9


@pytest.mark.postgres
def test_stale_postgres_connections_are_replaced(
    postgres_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections the server dropped (restart, idle timeout) are replaced before use, not failed:
    a connection idle for a while is pinged on checkout (busy ones skip that round trip)."""
    import psycopg

    monkeypatch.setattr(db_module, "PG_PING_AFTER_IDLE", 0.0)
    url = postgres_cluster.create_database()
    db = Database(url)
    try:
        migrate(db)
        svc = GatewayService(db, build_config({"db": url}, {}))
        uid, token = _user(svc, "p")
        assert svc.user_info(uid).asn is not None  # pooled connections now exist
        with psycopg.connect(
            host="127.0.0.1", port=postgres_cluster.port, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (url.rsplit("/", 1)[1],),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        assert svc.authenticate(token) is not None
        prefix = svc.request_prefix_by_token(token, 1).prefix
        svc.release_prefix_by_token(token, prefix)
    finally:
        db.dispose()
