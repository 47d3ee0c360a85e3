"""The gateway's domain logic on top of the database: users, tokens, ASNs, leases, tunnels, routes.

Independent of HTTP: the FastAPI layer (``app.py``) and the command line (``cli.py``) both call this.
Every failure a client can cause is an :class:`ApiError` carrying its HTTP status and reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from lab.gateway.clock import Clock, SystemClock
from lab.gateway.config import GatewayConfig
from lab.gateway.db import PG_ALLOCATION_LOCK, Database, Lease, PrefixSlot, RouteEntry, Token, Tunnel, User
from peerlab_tui.core import models as m
from peerlab_tui.core.errors import PeerlabError
from peerlab_tui.core.models import ErrorReason

logger = logging.getLogger(__name__)

TOKEN_PREFIX = {"admin": "pla_", "user": "plu_", "service": "pls_"}
ALLOCATION_ATTEMPTS = 8


class ApiError(PeerlabError):
    """A refusal with an HTTP status and a machine-readable reason."""

    def __init__(self, status: int, reason: ErrorReason, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class _Retry(Exception):
    """A compare-and-set lost a race; the transaction is retried."""


class _NeedSlots(Exception):
    """PostgreSQL: a pool's never-used slots that exist as rows are all taken, but the pool has more."""

    def __init__(self, pool: ipaddress.IPv6Network) -> None:
        super().__init__(str(pool))
        self.pool = pool


class UnresolvedToken(Exception):
    """A ``*_by_token`` operation found no user for the token: the caller decides which error that is."""


# --- hot-path statements -----------------------------------------------------------------------------------
# The user API's frequent operations run these prebuilt Core statements on a plain connection: no ORM objects,
# no session, no unit of work (which cost several times the database's own work per request). Bound values
# go through the same column types (UTCDateTime) as the ORM.

_PG_TRY_LOCK_STMT = text("SELECT pg_try_advisory_xact_lock(:k)")
_PG_SHARED_LOCK_STMT = text("SELECT pg_advisory_xact_lock_shared(:k)")
_T, _U, _L, _S = (cast(Table, x.__table__) for x in (Token, User, Lease, PrefixSlot))

_AUTH = select(_T.c.kind, _T.c.name, _T.c.user_id, _T.c.scopes).where(_T.c.token_hash == bindparam("h"))
_IS_ACTIVE = and_(_L.c.released_at.is_(None), _L.c.end_time > bindparam("now"))
_ACTIVE_COUNT = (
    select(func.count()).select_from(_L).where(_L.c.user_id == _U.c.id, _IS_ACTIVE).scalar_subquery()
)
# The user plus its number of active leases, in one statement.
_USER_ROW = select(_U.c.user_hash, _U.c.asn, _U.c.max_leases, _ACTIVE_COUNT.label("active")).where(
    _U.c.id == bindparam("uid")
)
_MAX_IDX = select(func.max(_S.c.idx)).where(_S.c.pool == bindparam("pool"))
# For an allocation: the same plus the highest slot index used so far in the first pool (one round trip).
_USER_ROW_AND_MAX_IDX = _USER_ROW.add_columns(_MAX_IDX.scalar_subquery().label("max_idx"))
_ACTIVE_LEASES = (
    select(_L.c.prefix, _L.c.start_time, _L.c.end_time, _L.c.rpki_enabled)
    .where(_L.c.user_id == bindparam("uid"), _IS_ACTIVE)
    .order_by(_L.c.start_time, _L.c.id)
)
_HISTORY = (
    select(_L.c.prefix, _L.c.start_time, _L.c.end_time, _L.c.released_at, _L.c.rpki_enabled)
    .where(_L.c.user_id == bindparam("uid"))
    .order_by(_L.c.start_time.desc(), _L.c.id.desc())
)
_USER_EXISTS = select(_U.c.id).where(_U.c.id == bindparam("uid"))
_USER_ASN = select(_U.c.asn).where(_U.c.id == bindparam("uid"))
# The lowest free ASN of [first, last]: ``first`` itself, or the successor of a taken one that is free.
_taken = _U.alias("taken")
_FREE_ASN = (
    union_all(
        select(bindparam("first", type_=_U.c.asn.type).label("asn")).where(
            ~select(_U.c.id).where(_U.c.asn == bindparam("first")).exists()
        ),
        select((_taken.c.asn + 1).label("asn")).where(
            _taken.c.asn >= bindparam("first"),
            _taken.c.asn < bindparam("last"),
            ~select(_U.c.id).where(_U.c.asn == _taken.c.asn + 1).exists(),
        ),
    )
    .order_by("asn")
    .limit(1)
)
_SET_ASN = update(_U).where(_U.c.id == bindparam("uid"), _U.c.asn.is_(None)).values(asn=bindparam("new_asn"))
_RESTED_SLOT = (
    select(_S.c.idx, _S.c.prefix)
    .where(_S.c.pool == bindparam("pool"), _S.c.available_at <= bindparam("now"))
    .order_by(_S.c.available_at, _S.c.idx)
    .limit(1)
)
_INSERT_LEASE = (
    insert(_L)
    .values(
        user_id=bindparam("uid"),
        prefix=bindparam("p"),
        start_time=bindparam("start"),
        end_time=bindparam("end"),
        rpki_enabled=literal(False),
    )
    .returning(_L.c.id)
)
_INSERT_SLOT = insert(_S).values(
    prefix=bindparam("p"),
    pool=bindparam("pool_key"),
    idx=bindparam("i"),
    lease_id=bindparam("lid"),
    available_at=bindparam("avail"),
)
# Compare-and-set: a rested slot is taken over only if it is still available (its row is the arbiter).
_CLAIM_SLOT = (
    update(_S)
    .where(_S.c.prefix == bindparam("p"), _S.c.available_at <= bindparam("now"))
    .values(lease_id=bindparam("lid"), available_at=bindparam("avail"))
)
# FOR UPDATE (PostgreSQL; SQLite has one writer anyway): a renewal waits for a concurrent release of the
# same lease, which runs without the allocation lock, and then sees it ended.
_OWN_ACTIVE = (
    select(_L.c.id, _L.c.start_time, _L.c.end_time, _L.c.rpki_enabled)
    .where(_L.c.user_id == bindparam("uid"), _L.c.prefix == bindparam("p"), _IS_ACTIVE)
    .with_for_update()
)
# The user's id: given, or (PostgreSQL hot paths) resolved from the bearer token inside the same statement,
# which saves the separate authentication round trip. The token is looked up on every request, never cached:
# a deleted user's token stops working at once.
_UID: BindParameter[Any] = bindparam("uid")
_USER_ID_OF_TOKEN = select(_T.c.user_id).where(_T.c.token_hash == bindparam("h"), _T.c.kind == "user")
_UID_OF_TOKEN = _USER_ID_OF_TOKEN.scalar_subquery()


def _end_lease(uid: Any) -> Any:
    return (
        update(_L)
        .where(_L.c.user_id == uid, _L.c.prefix == bindparam("p"), _IS_ACTIVE)
        .values(released_at=bindparam("released"))
        .returning(_L.c.id)
    )


def _release_pg(uid: Any) -> Any:
    """PostgreSQL: end the lease and start its slot's quarantine in one statement (one round trip, its own
    transaction). Row locks make it safe without the allocation lock: the lease row is ended at most once, and
    pushing available_at into the future can never make a slot available early."""
    ended = _end_lease(uid).cte("ended")
    quarantined = (
        update(_S)
        .where(_S.c.lease_id.in_(select(ended.c.id)))
        .values(available_at=bindparam("avail"))
        .returning(_S.c.lease_id)
        .cte("quarantined")
    )
    return select(ended.c.id).add_cte(quarantined)


_END_LEASE = _end_lease(_UID)
_RELEASE_PG = _release_pg(_UID)
_RELEASE_BY_TOKEN_PG = _release_pg(_UID_OF_TOKEN)
# PostgreSQL allocation (no global lock): the user's row lock serializes that user's requests (the lease
# limit), and a slot is claimed with FOR UPDATE SKIP LOCKED, so concurrent requests take different slots
# without waiting for each other. The claim re-checks availability on the locked row; the slot's primary
# key keeps one row (one holder) per prefix.
_LOCK_USER_PG = select(_U.c.id, _U.c.asn, _U.c.max_leases).where(_U.c.id == _UID).with_for_update(of=_U)
_LOCK_USER_BY_TOKEN_PG = (
    select(_U.c.id, _U.c.asn, _U.c.max_leases).where(_U.c.id == _UID_OF_TOKEN).with_for_update(of=_U)
)
_ACTIVE_COUNT_PG = select(func.count()).select_from(_L).where(_L.c.user_id == bindparam("uid"), _IS_ACTIVE)
_free = (
    select(_S.c.prefix)
    .where(
        _S.c.pool == bindparam("claim_pool"),
        _S.c.available_at <= bindparam("cutoff"),
        # The lease limit, checked in the claim itself (after the user's row lock, so a request that waited
        # for the same user's earlier one counts its lease): one round trip less than a separate count.
        _ACTIVE_COUNT_PG.scalar_subquery() < bindparam("limit"),
    )
    .order_by(_S.c.available_at, _S.c.idx)
    .limit(1)
    .with_for_update(skip_locked=True)
    .cte("free")
)
_claimed_lease = (
    insert(_L)
    .from_select(
        ["user_id", "prefix", "start_time", "end_time", "rpki_enabled"],
        select(
            bindparam("uid", type_=_L.c.user_id.type),
            _free.c.prefix,
            bindparam("start", type_=_L.c.start_time.type),
            bindparam("end", type_=_L.c.end_time.type),
            literal(False),
        ),
    )
    .returning(_L.c.id, _L.c.prefix)
    .cte("claimed_lease")
)
_CLAIM_PG = (
    update(_S)
    .where(_S.c.prefix == _claimed_lease.c.prefix)
    .values(lease_id=_claimed_lease.c.id, available_at=bindparam("avail"))
    .returning(_S.c.prefix, _S.c.idx)
)
# Never-used slots are materialized (in chunks) with this available_at: they sort before every rested one.
FRESH = datetime(1970, 1, 1, tzinfo=UTC)
SLOT_CHUNK = 512
_FRESH_LEFT = (
    select(_S.c.prefix)
    .where(_S.c.pool == bindparam("pool"), _S.c.available_at == bindparam("fresh"))
    .limit(1)
)
_SET_END = update(_L).where(_L.c.id == bindparam("lid")).values(end_time=bindparam("new_end"))
_SLOT_AVAILABLE_AT = (
    update(_S).where(_S.c.lease_id == bindparam("lid")).values(available_at=bindparam("avail"))
)


def new_token(kind: str) -> str:
    """A fresh 256-bit random bearer token, prefixed by its kind for humans (``plu_...``)."""
    return TOKEN_PREFIX[kind] + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the database stores instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin, a user (with ``user_id``) or a service (with ``scopes``)."""

    kind: str
    name: str
    user_id: int | None = None
    scopes: frozenset[str] = frozenset()


def lease_state(lease: Lease, now: datetime) -> m.LeaseState:
    """released, expired or active (expiry is by time, evaluated now)."""
    return _state(lease.released_at, lease.end_time, now)


def _state(released_at: datetime | None, end_time: datetime, now: datetime) -> m.LeaseState:
    if released_at is not None:
        return "released"
    return "active" if end_time > now else "expired"


class GatewayService:
    """All operations of the gateway, each in its own transaction."""

    def __init__(self, db: Database, config: GatewayConfig, clock: Clock | None = None) -> None:
        self.db = db
        self.config = config
        self.clock: Clock = clock or SystemClock()
        # PostgreSQL: how far each pool's slots are materialized, as last seen here (only a hint for adding
        # the next chunk ahead of need; the database is re-read under the lock before adding).
        self._extent: dict[str, int] = {}

    # --- tokens and principals ---------------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token belongs to, or None."""
        # Looked up on every request, never cached: a deleted user's or a rotated token (also by another
        # process, e.g. ``gateway init --rotate-admin-token``) stops working at once.
        with self.db.read_conn() as c:
            row = c.execute(_AUTH, {"h": hash_token(token)}).first()
        if row is None:
            return None
        kind, name, user_id, scopes = row
        return Principal(kind=kind, name=name, user_id=user_id, scopes=frozenset(scopes.split()))

    def is_initialised(self) -> bool:
        """True once an admin token exists."""
        with self.db.read() as s:
            return s.execute(select(Token.id).where(Token.kind == "admin").limit(1)).first() is not None

    def create_admin_token(self, *, rotate: bool) -> str:
        """Create the admin token; with ``rotate`` replace any existing one. Refuses to silently add one."""
        token = new_token("admin")
        with self.db.write() as s:
            existing = s.execute(select(Token).where(Token.kind == "admin")).scalars().all()
            if existing and not rotate:
                raise ApiError(409, ErrorReason.CONFLICT, "the gateway already has an admin token")
            for row in existing:
                s.delete(row)
            s.add(
                Token(
                    token_hash=hash_token(token),
                    kind="admin",
                    name="admin",
                    scopes="",
                    created_at=self.clock.now(),
                )
            )
        return token

    # --- users (admin) -----------------------------------------------------------------------------------

    def create_user(self, name: str, max_leases: int | None = None) -> m.CreatedUser:
        """Create a user and its token (shown once)."""
        m.CreateUserRequest(name=name, max_leases=max_leases)  # same rules as the API
        token = new_token("user")
        try:
            with self.db.write() as s:
                if s.execute(select(User.id).where(User.name == name)).first() is not None:
                    raise ApiError(409, ErrorReason.CONFLICT, f"user {name!r} already exists")
                user = User(
                    name=name,
                    user_hash=secrets.token_hex(8),
                    max_leases=max_leases,
                    created_at=self.clock.now(),
                )
                s.add(user)
                s.flush()
                s.add(
                    Token(
                        token_hash=hash_token(token),
                        kind="user",
                        name=name,
                        user_id=user.id,
                        scopes="",
                        created_at=self.clock.now(),
                    )
                )
                user_hash = user.user_hash
        except IntegrityError as exc:
            raise ApiError(409, ErrorReason.CONFLICT, f"user {name!r} already exists") from exc
        return m.CreatedUser(name=name, user_hash=user_hash, token=token)

    def _user_by_name(self, s: Session, name: str) -> User:
        # FOR UPDATE (PostgreSQL): waits for the user's in-flight allocation, which holds this row's lock,
        # so a deletion or a limit change sees its lease.
        user = s.execute(select(User).where(User.name == name).with_for_update()).scalar_one_or_none()
        if user is None:
            raise ApiError(404, ErrorReason.NOT_FOUND, f"no user named {name!r}")
        return user

    def _active_count(self, s: Session, user_id: int, now: datetime) -> int:
        return int(
            s.execute(
                select(func.count(Lease.id)).where(
                    Lease.user_id == user_id, Lease.released_at.is_(None), Lease.end_time > now
                )
            ).scalar_one()
        )

    def _summary(self, s: Session, user: User, now: datetime) -> m.UserSummary:
        return m.UserSummary(
            name=user.name,
            user_hash=user.user_hash,
            asn=user.asn,
            max_leases=self._max_leases(user),
            active_leases=self._active_count(s, user.id, now),
            created_at=user.created_at,
        )

    def _max_leases(self, user: User) -> int:
        return self.config.max_leases if user.max_leases is None else user.max_leases

    def list_users(self) -> m.UserList:
        """Every user, by name."""
        now = self.clock.now()
        with self.db.read() as s:
            users = s.execute(select(User).order_by(User.name)).scalars().all()
            return m.UserList(users=[self._summary(s, u, now) for u in users])

    def delete_user(self, name: str) -> None:
        """Delete a user: its leases end now (their prefixes go into quarantine), its tokens stop working."""
        now = self.clock.now()
        quarantine_end = now + timedelta(seconds=self.config.quarantine_seconds)
        with self.db.write() as s:
            user = self._user_by_name(s, name)
            lease_ids = select(Lease.id).where(Lease.user_id == user.id)
            s.execute(
                update(PrefixSlot)
                .where(PrefixSlot.lease_id.in_(lease_ids), PrefixSlot.available_at > quarantine_end)
                .values(available_at=quarantine_end)
            )
            s.execute(update(PrefixSlot).where(PrefixSlot.lease_id.in_(lease_ids)).values(lease_id=None))
            s.execute(delete(Token).where(Token.user_id == user.id))
            s.execute(delete(Tunnel).where(Tunnel.user_id == user.id))
            s.execute(delete(Lease).where(Lease.user_id == user.id))
            s.delete(user)

    def set_max_leases(self, name: str, max_leases: int) -> m.UserSummary:
        """Change one user's lease limit (existing leases are kept)."""
        with self.db.write() as s:
            user = self._user_by_name(s, name)
            user.max_leases = max_leases
            s.flush()
            return self._summary(s, user, self.clock.now())

    # --- service tokens (admin) --------------------------------------------------------------------------

    def create_service_token(self, name: str, scopes: list[str]) -> m.CreatedServiceToken:
        """Create a scoped service token (shown once)."""
        req = m.CreateServiceTokenRequest.model_validate({"name": name, "scopes": scopes})
        ordered = sorted(set(req.scopes))
        token = new_token("service")
        with self.db.write() as s:
            taken = s.execute(select(Token.id).where(Token.kind == "service", Token.name == name)).first()
            if taken is not None:
                raise ApiError(409, ErrorReason.CONFLICT, f"service token {name!r} already exists")
            s.add(
                Token(
                    token_hash=hash_token(token),
                    kind="service",
                    name=name,
                    scopes=" ".join(ordered),
                    created_at=self.clock.now(),
                )
            )
        return m.CreatedServiceToken(name=name, scopes=ordered, token=token)

    def list_service_tokens(self) -> list[dict[str, Any]]:
        """Name, scopes and creation time of every service token (never the token)."""
        with self.db.read() as s:
            rows = s.execute(select(Token).where(Token.kind == "service").order_by(Token.name)).scalars()
            return [{"name": r.name, "scopes": r.scopes.split(), "created_at": r.created_at} for r in rows]

    def delete_service_token(self, name: str) -> None:
        """Revoke a service token."""
        with self.db.write() as s:
            res = s.execute(delete(Token).where(Token.kind == "service", Token.name == name))
            if not getattr(res, "rowcount", 0):
                raise ApiError(404, ErrorReason.NOT_FOUND, f"no service token named {name!r}")

    # --- user API ----------------------------------------------------------------------------------------

    def _user(self, s: Session, user_id: int) -> User:
        user = s.get(User, user_id)
        if user is None:  # deleted between authentication and now
            raise ApiError(401, ErrorReason.UNAUTHENTICATED, "this token's user no longer exists")
        return user

    def user_info(self, user_id: int) -> m.UserInfo:
        """``GET /api/user/info``."""
        params = {"uid": user_id, "now": self.clock.now()}
        with self.db.read_conn() as c:
            user = self._user_row(c, params)
            leases = c.execute(_ACTIVE_LEASES, params).all()
        return m.UserInfo(
            user_hash=user.user_hash,
            asn=user.asn,
            max_leases=self._limit(user.max_leases),
            active_leases=[
                m.Lease(prefix=p, start_time=start, end_time=end, rpki_enabled=rpki)
                for p, start, end, rpki in leases
            ],
        )

    def _user_row(self, c: Connection, params: dict[str, Any]) -> Any:
        """(user_hash, asn, max_leases, active) of ``params["uid"]``, active counted at ``params["now"]``."""
        row = c.execute(_USER_ROW, params).first()
        if row is None:  # deleted between authentication and now
            raise ApiError(401, ErrorReason.UNAUTHENTICATED, "this token's user no longer exists")
        return row

    def _limit(self, max_leases: int | None) -> int:
        return self.config.max_leases if max_leases is None else max_leases

    def assign_asn(self, user_id: int) -> m.AsnResponse:
        """Give the user an ASN from the range, or return the one it has (sticky, idempotent)."""
        for _ in range(ALLOCATION_ATTEMPTS):
            try:
                # Most calls find the ASN already there: answer those without the write lock.
                with self.db.read_conn() as c:
                    row = c.execute(_USER_ASN, {"uid": user_id}).first()
                if row is None:
                    raise ApiError(401, ErrorReason.UNAUTHENTICATED, "this token's user no longer exists")
                if row[0] is not None:
                    return m.AsnResponse(asn=row[0], message="ASN already assigned")
                with self.db.write_conn() as c:
                    row = c.execute(_USER_ASN, {"uid": user_id}).first()
                    if row is None:
                        raise ApiError(401, ErrorReason.UNAUTHENTICATED, "this token's user no longer exists")
                    if row[0] is not None:
                        return m.AsnResponse(asn=row[0], message="ASN already assigned")
                    first, last = self.config.asn_first, self.config.asn_last
                    candidate = c.execute(_FREE_ASN, {"first": first, "last": last}).scalar()
                    if candidate is None or candidate > last:
                        raise ApiError(
                            503, ErrorReason.ASN_EXHAUSTED, "no ASN is free in the gateway's range"
                        )
                    # The unique constraint on users.asn is the arbiter; "asn IS NULL" keeps it sticky.
                    if c.execute(_SET_ASN, {"uid": user_id, "new_asn": candidate}).rowcount != 1:
                        raise _Retry()
                    return m.AsnResponse(asn=int(candidate), message="ASN assigned")
            except (IntegrityError, OperationalError, _Retry) as exc:
                logger.info("ASN assignment retried after %s", type(exc).__name__)
        raise ApiError(503, ErrorReason.INTERNAL, "could not assign an ASN under contention; retry")

    def _check_duration(self, hours: int) -> None:
        lo, hi = self.config.min_hours, self.config.max_hours
        if not lo <= hours <= hi:
            raise ApiError(
                400,
                ErrorReason.BAD_DURATION,
                f"duration_hours must be an integer between {lo} and {hi}, got {hours}",
            )

    def request_prefix(self, user_id: int, hours: int) -> m.PrefixResponse:
        """Lease a free prefix for ``hours`` hours."""
        return self._request_prefix(user_id, None, hours)

    def request_prefix_by_token(self, token: str, hours: int) -> m.PrefixResponse:
        """:meth:`request_prefix` for the user a bearer token belongs to; :class:`UnresolvedToken` if none.

        The token is resolved inside the allocation's transaction (on PostgreSQL in its first statement), not
        in a separate one.
        """
        return self._request_prefix(None, hash_token(token), hours)

    @staticmethod
    def _user_id_in(c: Connection, token_hash: str) -> int:
        """The user id of a user token, looked up on an open connection; :class:`UnresolvedToken` if none."""
        user_id = c.execute(_USER_ID_OF_TOKEN, {"h": token_hash}).scalar()
        if user_id is None:
            raise UnresolvedToken()
        return int(user_id)

    def _user_id_of(self, token: str) -> int:
        found = self.authenticate(token)
        if found is None or found.kind != "user" or found.user_id is None:
            raise UnresolvedToken()
        return found.user_id

    def _request_prefix(self, user_id: int | None, token_hash: str | None, hours: int) -> m.PrefixResponse:
        self._check_duration(hours)
        failures = 0
        while failures < ALLOCATION_ATTEMPTS:
            try:
                if not self.db.is_sqlite:
                    with self.db.transaction() as c:
                        leased, running_low = self._allocate_pg(c, user_id, token_hash, hours)
                    if running_low is not None:
                        # Add the next chunk before the fresh slots run out (which would make a burst of
                        # requests wait); skipped if another request is at it.
                        self._materialize(running_low, wait=False)
                    return leased
                with self.db.write_conn() as c:
                    if token_hash is not None:
                        user_id = self._user_id_in(c, token_hash)
                    assert user_id is not None
                    return self._allocate(c, user_id, hours)
            except _NeedSlots as need:
                # Outside the allocation's transaction (its row lock is released): every pass either adds
                # slots or finds the pool complete, so this ends.
                self._materialize(need.pool)
            except (IntegrityError, OperationalError, _Retry) as exc:
                failures += 1
                logger.info("prefix allocation retried after %s", type(exc).__name__)
        raise ApiError(503, ErrorReason.INTERNAL, "could not allocate a prefix under contention; retry")

    def _allocate_pg(
        self, c: Connection, user_id: int | None, token_hash: str | None, hours: int
    ) -> tuple[m.PrefixResponse, ipaddress.IPv6Network | None]:
        """PostgreSQL: claim a slot without the global lock (see ``_CLAIM_PG``); also the pool whose
        never-used slots are running low, if any."""
        if token_hash is not None:
            user = c.execute(_LOCK_USER_BY_TOKEN_PG, {"h": token_hash}).first()
            if user is None:
                raise UnresolvedToken()
        else:
            user = c.execute(_LOCK_USER_PG, {"uid": user_id}).first()
            if user is None:  # deleted between authentication and now
                raise ApiError(401, ErrorReason.UNAUTHENTICATED, "this token's user no longer exists")
        user_id = int(user.id)
        if user.asn is None:
            raise ApiError(400, ErrorReason.NO_ASN, "request an ASN first (POST /api/user/asn)")
        # The clock is read after the row lock: a request that waited for its own earlier one counts it.
        now = self.clock.now()
        limit = self._limit(user.max_leases)
        end = now + timedelta(hours=hours)
        claim = {
            "uid": user_id,
            "now": now,
            "limit": limit,
            "start": now,
            "end": end,
            "avail": end + timedelta(seconds=self.config.quarantine_seconds),
        }
        # Never-used prefixes first, pool by pool (materializing more of a pool when its fresh slots run
        # out), then the one that has rested longest.
        for n, pool in enumerate(self.config.prefix_pools):
            row = c.execute(_CLAIM_PG, {**claim, "claim_pool": str(pool), "cutoff": FRESH}).first()
            if row is not None:
                extent = self._extent.get(str(pool), 0)
                low = row.idx >= extent - SLOT_CHUNK // 4 and extent < self._capacity(pool)
                return self._leased(row.prefix, now, end, hours), pool if low else None
            if n == 0 and c.execute(_ACTIVE_COUNT_PG, {"uid": user_id, "now": now}).scalar_one() >= limit:
                raise ApiError(
                    403, ErrorReason.LEASE_LIMIT, f"you already hold the maximum of {limit} active lease(s)"
                )
            if self._materialized_up_to(c, pool) < self._capacity(pool):
                raise _NeedSlots(pool)
        for pool in self.config.prefix_pools:
            row = c.execute(_CLAIM_PG, {**claim, "claim_pool": str(pool), "cutoff": now}).first()
            if row is not None:
                return self._leased(row.prefix, now, end, hours), None
        raise ApiError(503, ErrorReason.POOL_EXHAUSTED, "no prefix is free in the gateway's pools")

    def _capacity(self, pool: ipaddress.IPv6Network) -> int:
        return 1 << (self.config.lease_length - pool.prefixlen)

    @staticmethod
    def _materialized_up_to(c: Connection, pool: ipaddress.IPv6Network) -> int:
        """How many of ``pool``'s slots exist as rows (they are materialized in index order)."""
        top = c.execute(_MAX_IDX, {"pool": str(pool)}).scalar()
        return 0 if top is None else int(top) + 1

    def _materialize(self, pool: ipaddress.IPv6Network, *, wait: bool = True) -> None:
        """PostgreSQL: add the next chunk of never-used slots of ``pool`` in a short transaction of its own.

        Serialized by the allocation lock; the extent is re-read after taking it, so a chunk another request
        has just added is seen and not added twice (and the slots' primary key would refuse it anyway).
        When the lock is busy, the request does not queue for it (a burst of requests would then pass it on
        one by one): it waits in shared mode until the holder is done (unless ``wait`` is False), and retries
        its claim.
        """
        key, length = str(pool), self.config.lease_length
        with self.db.transaction() as c:
            if not c.execute(_PG_TRY_LOCK_STMT, {"k": PG_ALLOCATION_LOCK}).scalar():
                if wait:
                    c.execute(_PG_SHARED_LOCK_STMT, {"k": PG_ALLOCATION_LOCK})
                return
            start = self._materialized_up_to(c, pool)
            end = min(self._capacity(pool), start + SLOT_CHUNK)
            self._extent[key] = end
            if start >= end:
                return
            rows = [
                {
                    "prefix": _nth_prefix(pool, length, i),
                    "pool": key,
                    "idx": i,
                    "lease_id": None,
                    "available_at": FRESH,
                }
                for i in range(start, end)
            ]
            c.execute(insert(_S), rows)

    def _allocate(self, c: Connection, user_id: int, hours: int) -> m.PrefixResponse:
        now = self.clock.now()
        first_pool = str(self.config.prefix_pools[0])
        user = c.execute(_USER_ROW_AND_MAX_IDX, {"uid": user_id, "now": now, "pool": first_pool}).first()
        if user is None:  # deleted between authentication and now
            raise ApiError(401, ErrorReason.UNAUTHENTICATED, "this token's user no longer exists")
        if user.asn is None:
            raise ApiError(400, ErrorReason.NO_ASN, "request an ASN first (POST /api/user/asn)")
        limit = self._limit(user.max_leases)
        if user.active >= limit:
            raise ApiError(
                403, ErrorReason.LEASE_LIMIT, f"you already hold the maximum of {limit} active lease(s)"
            )
        end = now + timedelta(hours=hours)
        available_at = end + timedelta(seconds=self.config.quarantine_seconds)
        choice = self._free_slot(c, now, user.max_idx)
        if choice is None:
            raise ApiError(503, ErrorReason.POOL_EXHAUSTED, "no prefix is free in the gateway's pools")
        pool, idx, prefix, fresh = choice
        lease_id = c.execute(
            _INSERT_LEASE, {"uid": user_id, "p": prefix, "start": now, "end": end}
        ).scalar_one()
        slot = {"p": prefix, "pool_key": pool, "i": idx, "lid": lease_id, "avail": available_at, "now": now}
        if fresh:
            # The primary key on prefix (and unique (pool, idx)) make a double hand-out impossible.
            c.execute(_INSERT_SLOT, slot)
        elif c.execute(_CLAIM_SLOT, slot).rowcount != 1:
            raise _Retry()
        return self._leased(prefix, now, end, hours)

    @staticmethod
    def _leased(prefix: str, now: datetime, end: datetime, hours: int) -> m.PrefixResponse:
        return m.PrefixResponse(
            prefix=prefix,
            start_time=now,
            end_time=end,
            rpki_enabled=False,
            message=f"prefix leased for {hours} hour(s)",
        )

    def _free_slot(
        self, c: Connection, now: datetime, first_max_idx: int | None
    ) -> tuple[str, int, str, bool] | None:
        """(pool, index, prefix, never used before) of a free prefix; never-used ones first.

        ``first_max_idx`` is the first pool's highest used index, already read in this transaction.
        """
        length = self.config.lease_length
        for n, pool in enumerate(self.config.prefix_pools):
            key = str(pool)
            used = first_max_idx if n == 0 else c.execute(_MAX_IDX, {"pool": key}).scalar()
            idx = 0 if used is None else int(used) + 1
            if idx < 1 << (length - pool.prefixlen):
                return key, idx, _nth_prefix(pool, length, idx), True
        for pool in self.config.prefix_pools:
            row = c.execute(_RESTED_SLOT, {"pool": str(pool), "now": now}).first()
            if row is not None:
                return str(pool), int(row[0]), str(row[1]), False
        return None

    def release_prefix(self, user_id: int, prefix: str) -> None:
        """End one of the caller's active leases now; the prefix enters quarantine."""
        prefix = _parse_prefix(prefix)
        if not self.db.is_sqlite:
            if not self._release_pg(_RELEASE_PG, {"uid": user_id}, prefix):
                raise ApiError(404, ErrorReason.NOT_FOUND, f"{prefix} is not one of your active leases")
            return
        self._release_sqlite(user_id, None, prefix)

    def _release_sqlite(self, user_id: int | None, token_hash: str | None, prefix: str) -> None:
        with self.db.write_conn() as c:
            if token_hash is not None:
                user_id = self._user_id_in(c, token_hash)
            now = self.clock.now()
            row = c.execute(_END_LEASE, {"uid": user_id, "p": prefix, "now": now, "released": now}).first()
            if row is None:
                raise ApiError(404, ErrorReason.NOT_FOUND, f"{prefix} is not one of your active leases")
            avail = now + timedelta(seconds=self.config.quarantine_seconds)
            c.execute(_SLOT_AVAILABLE_AT, {"lid": row[0], "avail": avail})

    def release_prefix_by_token(self, token: str, prefix: str) -> None:
        """:meth:`release_prefix` for the user a bearer token belongs to.

        The token is resolved inside the release's transaction (on PostgreSQL inside its one statement; when
        nothing was released, the token is then checked on its own): :class:`UnresolvedToken` if it names no
        user, else 404 when the prefix is not one of the user's active leases.
        """
        prefix = _parse_prefix(prefix)
        if self.db.is_sqlite:
            self._release_sqlite(None, hash_token(token), prefix)
            return
        if not self._release_pg(_RELEASE_BY_TOKEN_PG, {"h": hash_token(token)}, prefix):
            self._user_id_of(token)
            raise ApiError(404, ErrorReason.NOT_FOUND, f"{prefix} is not one of your active leases")

    def _release_pg(self, statement: Any, who: dict[str, Any], prefix: str) -> bool:
        with self.db.autocommit_conn() as c:
            now = self.clock.now()
            avail = now + timedelta(seconds=self.config.quarantine_seconds)
            params = {**who, "p": prefix, "now": now, "released": now, "avail": avail}
            return c.execute(statement, params).first() is not None

    def renew_prefix(self, user_id: int, prefix: str, hours: int) -> m.PrefixResponse:
        """Extend an active lease by ``hours`` from its current end, within the maximum lifetime."""
        prefix = _parse_prefix(prefix)
        self._check_duration(hours)
        with self.db.write_conn() as c:
            now = self.clock.now()
            lease = c.execute(_OWN_ACTIVE, {"uid": user_id, "p": prefix, "now": now}).first()
            if lease is None:
                raise ApiError(404, ErrorReason.NOT_FOUND, f"{prefix} is not one of your active leases")
            new_end = lease.end_time + timedelta(hours=hours)
            limit = timedelta(hours=self.config.max_lifetime_hours)
            if new_end - lease.start_time > limit:
                left = max(0, int((lease.start_time + limit - lease.end_time).total_seconds() // 3600))
                raise ApiError(
                    403,
                    ErrorReason.LIFETIME_EXCEEDED,
                    f"a lease may last at most {self.config.max_lifetime_hours} hours in total; "
                    f"this one can be extended by at most {left} more hour(s)",
                )
            c.execute(_SET_END, {"lid": lease.id, "new_end": new_end})
            avail = new_end + timedelta(seconds=self.config.quarantine_seconds)
            c.execute(_SLOT_AVAILABLE_AT, {"lid": lease.id, "avail": avail})
            return m.PrefixResponse(
                prefix=prefix,
                start_time=lease.start_time,
                end_time=new_end,
                rpki_enabled=lease.rpki_enabled,
                message=f"lease extended by {hours} hour(s)",
            )

    def list_leases(self, user_id: int, history: bool) -> m.LeaseList:
        """The caller's active leases, or with ``history`` every lease it ever had (newest first)."""
        now = self.clock.now()
        params = {"uid": user_id, "now": now}
        with self.db.read_conn() as c:
            if c.execute(_USER_EXISTS, params).first() is None:
                raise ApiError(401, ErrorReason.UNAUTHENTICATED, "this token's user no longer exists")
            if history:
                rows = [tuple(r) for r in c.execute(_HISTORY, params)]
            else:
                active = c.execute(_ACTIVE_LEASES, params)
                rows = [(p, start, end, None, rpki) for p, start, end, rpki in active]
        return m.LeaseList(
            leases=[
                m.LeaseRecord(
                    prefix=p,
                    start_time=start,
                    end_time=end,
                    released_at=released,
                    state=_state(released, end, now),
                    rpki_enabled=rpki,
                )
                for p, start, end, released, rpki in rows
            ]
        )

    # --- overlay -----------------------------------------------------------------------------------------

    def _addresses(self, index: int) -> list[str]:
        return [
            f"{rs.overlay_network.network_address + 0x100 + index}/{rs.overlay_network.prefixlen}"
            for rs in self.config.route_servers
        ]

    def _tunnel_info(self, user: User) -> m.TunnelInfo:
        assert user.asn is not None and user.overlay_index is not None
        addresses = self._addresses(user.overlay_index)
        return m.TunnelInfo(
            addresses=addresses,
            asn=user.asn,
            route_servers=[
                m.RouteServerPeer(
                    name=rs.name,
                    public_key=rs.public_key,
                    endpoint=rs.endpoint,
                    overlay_address=str(rs.overlay_address),
                    bgp_neighbor=str(rs.overlay_address),
                    asn=rs.asn,
                    local_address=addr,
                )
                for rs, addr in zip(self.config.route_servers, addresses, strict=True)
            ],
        )

    def register_tunnel(self, user_id: int, public_key: str) -> m.TunnelInfo:
        """Register or rotate the caller's WireGuard key; the overlay index is given once and kept."""
        for _ in range(ALLOCATION_ATTEMPTS):
            try:
                with self.db.write() as s:
                    user = self._user(s, user_id)
                    if user.asn is None:
                        raise ApiError(400, ErrorReason.NO_ASN, "request an ASN first (POST /api/user/asn)")
                    other = s.execute(
                        select(Tunnel.user_id).where(
                            Tunnel.public_key == public_key, Tunnel.user_id != user_id
                        )
                    ).first()
                    if other is not None:
                        raise ApiError(
                            409, ErrorReason.CONFLICT, "this public key is registered to another user"
                        )
                    if user.overlay_index is None:
                        top = s.execute(select(func.max(User.overlay_index))).scalar_one()
                        user.overlay_index = 1 if top is None else int(top) + 1
                    tunnel = s.get(Tunnel, user_id)
                    if tunnel is None:
                        s.add(Tunnel(user_id=user_id, public_key=public_key, updated_at=self.clock.now()))
                    else:
                        tunnel.public_key = public_key
                        tunnel.updated_at = self.clock.now()
                    s.flush()
                    return self._tunnel_info(user)
            except (IntegrityError, OperationalError) as exc:
                logger.info("tunnel registration retried after %s", type(exc).__name__)
        raise ApiError(503, ErrorReason.INTERNAL, "could not register the tunnel under contention; retry")

    def get_tunnel(self, user_id: int) -> m.TunnelInfo:
        """The caller's tunnel (404 when no key is registered)."""
        with self.db.read() as s:
            user = self._user(s, user_id)
            if s.get(Tunnel, user_id) is None or user.asn is None:
                raise ApiError(404, ErrorReason.NOT_FOUND, "you have no tunnel registered")
            return self._tunnel_info(user)

    def delete_tunnel(self, user_id: int) -> None:
        """Remove the caller's key (the overlay index stays reserved for the user)."""
        with self.db.write() as s:
            tunnel = s.get(Tunnel, user_id)
            if tunnel is None:
                raise ApiError(404, ErrorReason.NOT_FOUND, "you have no tunnel registered")
            s.delete(tunnel)

    def tunnel_peers(self) -> m.TunnelPeerList:
        """Every registered key with the user's overlay addresses, ordered by user_hash."""
        with self.db.read() as s:
            rows = s.execute(
                select(User.user_hash, Tunnel.public_key, User.overlay_index)
                .join(Tunnel, Tunnel.user_id == User.id)
                .order_by(User.user_hash)
            ).all()
            return m.TunnelPeerList(
                peers=[
                    m.TunnelPeer(user_hash=h, public_key=k, addresses=self._addresses(int(i or 0)))
                    for h, k, i in rows
                ]
            )

    # --- looking glass -----------------------------------------------------------------------------------

    def replace_routes(self, rs: str, report: m.RouteReport) -> int:
        """Replace everything route server ``rs`` reported before with this report, atomically."""
        if rs not in {r.name for r in self.config.route_servers}:
            raise ApiError(404, ErrorReason.NOT_FOUND, f"no route server named {rs!r} is configured")
        with self.db.write() as s:
            s.execute(delete(RouteEntry).where(RouteEntry.rs == rs))
            for r in report.routes:
                s.add(
                    RouteEntry(
                        rs=rs,
                        user_hash=r.user_hash,
                        prefix=r.prefix,
                        as_path=list(r.as_path),
                        communities=list(r.communities),
                        large_communities=list(r.large_communities),
                        med=r.med,
                        state=r.state,
                        reason=r.reason,
                        rule=r.rule,
                    )
                )
        return len(report.routes)

    def user_routes(self, user_id: int) -> m.RouteList:
        """The caller's routes across route servers (route-server order, then prefix)."""
        order = {r.name: i for i, r in enumerate(self.config.route_servers)}
        with self.db.read() as s:
            user = self._user(s, user_id)
            rows = list(
                s.execute(
                    select(RouteEntry).where(RouteEntry.user_hash == user.user_hash).order_by(RouteEntry.id)
                ).scalars()
            )
        rows.sort(key=lambda r: (order.get(r.rs, len(order)), r.rs, _prefix_key(r.prefix), r.id))
        return m.RouteList(
            routes=[
                m.RouteVerdict(
                    rs=r.rs,
                    prefix=r.prefix,
                    as_path=r.as_path,
                    communities=r.communities,
                    large_communities=r.large_communities,
                    med=r.med,
                    state=r.state,
                    reason=r.reason,
                    rule=r.rule,
                )
                for r in rows
            ]
        )

    # --- service API -------------------------------------------------------------------------------------

    def mappings(self, user_hash: str | None = None) -> m.MappingList:
        """Users with an ASN and the prefixes of their active leases, ordered by user_hash and prefix."""
        now = self.clock.now()
        with self.db.read() as s:
            q = select(User).where(User.asn.is_not(None)).order_by(User.user_hash)
            if user_hash is not None:
                q = q.where(User.user_hash == user_hash)
            users = list(s.execute(q).scalars())
            leases = s.execute(
                select(Lease.user_id, Lease.prefix).where(Lease.released_at.is_(None), Lease.end_time > now)
            ).all()
        by_user: dict[int, list[str]] = {}
        for uid, prefix in leases:
            by_user.setdefault(uid, []).append(prefix)
        return m.MappingList(
            mappings=[
                m.Mapping(
                    user_hash=u.user_hash,
                    user_id=u.name,
                    asn=int(u.asn or 0),
                    prefixes=sorted(by_user.get(u.id, []), key=_prefix_key),
                )
                for u in users
            ]
        )

    def prepare_slots(self) -> None:
        """PostgreSQL: make sure every pool has never-used slots ready (``serve`` calls this at start), so the
        first burst of requests does not wait for them. SQLite creates slots as it hands them out."""
        if self.db.is_sqlite:
            return
        for pool in self.config.prefix_pools:
            with self.db.read_conn() as c:
                fresh = c.execute(_FRESH_LEFT, {"pool": str(pool), "fresh": FRESH}).scalar()
                self._extent[str(pool)] = self._materialized_up_to(c, pool)
            if not fresh and self._extent[str(pool)] < self._capacity(pool):
                self._materialize(pool)

    def check_pools(self) -> None:
        """Refuse pool settings that would hand out prefixes overlapping ones handed out before.

        Slots remember their pool and prefix; changing a pool's lease length, or replacing a pool by an
        overlapping one, would make the slot index map to different (overlapping) prefixes.
        """
        from peerlab_tui.core.errors import ConfigError

        with self.db.read() as s:
            rows = s.execute(
                select(PrefixSlot.pool, func.min(PrefixSlot.prefix)).group_by(PrefixSlot.pool)
            ).all()
        configured = {str(p): p for p in self.config.prefix_pools}
        for pool_key, sample in rows:
            length = ipaddress.IPv6Network(sample).prefixlen
            if pool_key in configured:
                if length != self.config.lease_length:
                    raise ConfigError(
                        f"pool {pool_key} already holds /{length} leases; lease_length "
                        f"/{self.config.lease_length} would overlap them: keep the length or use a new pool"
                    )
                continue
            old = ipaddress.IPv6Network(pool_key)
            for new in self.config.prefix_pools:
                if old.overlaps(new):
                    raise ConfigError(
                        f"pool {new} overlaps {old}, which leased prefixes before: "
                        "use the same pool or one that does not overlap"
                    )

    def stats(self) -> dict[str, int]:
        """Gauges for /metrics: active leases, pool size and free prefixes."""
        now = self.clock.now()
        with self.db.read() as s:
            active = int(
                s.execute(
                    select(func.count(Lease.id)).where(Lease.released_at.is_(None), Lease.end_time > now)
                ).scalar_one()
            )
            unavailable = int(
                s.execute(
                    select(func.count()).select_from(PrefixSlot).where(PrefixSlot.available_at > now)
                ).scalar_one()
            )
            users = int(s.execute(select(func.count(User.id))).scalar_one())
        size = self.config.pool_capacity()
        return {
            "active_leases": active,
            "pool_size": size,
            "pool_free": max(0, size - unavailable),
            "users": users,
        }

    def ping(self) -> None:
        """Fail unless the database answers."""
        with self.db.read() as s:
            s.execute(select(1))


def _nth_prefix(pool: ipaddress.IPv6Network, length: int, idx: int) -> str:
    base = int(pool.network_address) + (idx << (128 - length))
    return str(ipaddress.IPv6Network((base, length)))


def _prefix_key(prefix: str) -> tuple[int, int]:
    try:
        net = ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return (1 << 129, 0)
    return int(net.network_address), net.prefixlen


def _parse_prefix(value: str) -> str:
    try:
        return m.normalize_ipv6_prefix(value)
    except ValueError as exc:
        raise ApiError(400, ErrorReason.BAD_REQUEST, str(exc)) from exc
