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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from lab.gateway.clock import Clock, SystemClock
from lab.gateway.config import GatewayConfig
from lab.gateway.db import Database, Lease, PrefixSlot, RouteEntry, Token, Tunnel, User
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
    if lease.released_at is not None:
        return "released"
    return "active" if lease.end_time > now else "expired"


class GatewayService:
    """All operations of the gateway, each in its own transaction."""

    def __init__(self, db: Database, config: GatewayConfig, clock: Clock | None = None) -> None:
        self.db = db
        self.config = config
        self.clock: Clock = clock or SystemClock()

    # --- tokens and principals ---------------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token belongs to, or None."""
        digest = hash_token(token)
        with self.db.read() as s:
            row = s.execute(select(Token).where(Token.token_hash == digest)).scalar_one_or_none()
            if row is None:
                return None
            scopes = frozenset(row.scopes.split()) if row.scopes else frozenset()
            return Principal(kind=row.kind, name=row.name, user_id=row.user_id, scopes=scopes)

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
        user = s.execute(select(User).where(User.name == name)).scalar_one_or_none()
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

    def _active_leases(self, s: Session, user_id: int, now: datetime) -> list[Lease]:
        return list(
            s.execute(
                select(Lease)
                .where(Lease.user_id == user_id, Lease.released_at.is_(None), Lease.end_time > now)
                .order_by(Lease.start_time, Lease.id)
            ).scalars()
        )

    def user_info(self, user_id: int) -> m.UserInfo:
        """``GET /api/user/info``."""
        now = self.clock.now()
        with self.db.read() as s:
            user = self._user(s, user_id)
            leases = self._active_leases(s, user_id, now)
            return m.UserInfo(
                user_hash=user.user_hash,
                asn=user.asn,
                max_leases=self._max_leases(user),
                active_leases=[
                    m.Lease(
                        prefix=x.prefix,
                        start_time=x.start_time,
                        end_time=x.end_time,
                        rpki_enabled=x.rpki_enabled,
                    )
                    for x in leases
                ],
            )

    def assign_asn(self, user_id: int) -> m.AsnResponse:
        """Give the user an ASN from the range, or return the one it has (sticky, idempotent)."""
        for _ in range(ALLOCATION_ATTEMPTS):
            try:
                with self.db.write() as s:
                    user = self._user(s, user_id)
                    if user.asn is not None:
                        return m.AsnResponse(asn=user.asn, message="ASN already assigned")
                    first, last = self.config.asn_first, self.config.asn_last
                    taken = s.execute(
                        select(User.asn).where(User.asn >= first, User.asn <= last).order_by(User.asn)
                    ).scalars()
                    candidate = first
                    for asn in taken:
                        if asn != candidate:
                            break
                        candidate += 1
                    if candidate > last:
                        raise ApiError(
                            503, ErrorReason.ASN_EXHAUSTED, "no ASN is free in the gateway's range"
                        )
                    user.asn = candidate
                    return m.AsnResponse(asn=candidate, message="ASN assigned")
            except (IntegrityError, OperationalError) as exc:
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
        self._check_duration(hours)
        for _ in range(ALLOCATION_ATTEMPTS):
            try:
                with self.db.write() as s:
                    return self._allocate(s, user_id, hours)
            except (IntegrityError, OperationalError, _Retry) as exc:
                logger.info("prefix allocation retried after %s", type(exc).__name__)
        raise ApiError(503, ErrorReason.INTERNAL, "could not allocate a prefix under contention; retry")

    def _allocate(self, s: Session, user_id: int, hours: int) -> m.PrefixResponse:
        now = self.clock.now()
        user = self._user(s, user_id)
        if user.asn is None:
            raise ApiError(400, ErrorReason.NO_ASN, "request an ASN first (POST /api/user/asn)")
        limit = self._max_leases(user)
        if self._active_count(s, user_id, now) >= limit:
            raise ApiError(
                403, ErrorReason.LEASE_LIMIT, f"you already hold the maximum of {limit} active lease(s)"
            )
        end = now + timedelta(hours=hours)
        available_at = end + timedelta(seconds=self.config.quarantine_seconds)
        choice = self._free_slot(s, now)
        if choice is None:
            raise ApiError(503, ErrorReason.POOL_EXHAUSTED, "no prefix is free in the gateway's pools")
        pool, idx, prefix, fresh = choice
        lease = Lease(user_id=user_id, prefix=prefix, start_time=now, end_time=end, rpki_enabled=False)
        s.add(lease)
        s.flush()
        if fresh:
            # The primary key on prefix (and unique (pool, idx)) make a double hand-out impossible.
            s.add(PrefixSlot(prefix=prefix, pool=pool, idx=idx, lease_id=lease.id, available_at=available_at))
            s.flush()
        else:
            res = s.execute(
                update(PrefixSlot)
                .where(PrefixSlot.prefix == prefix, PrefixSlot.available_at <= now)
                .values(lease_id=lease.id, available_at=available_at)
            )
            if getattr(res, "rowcount", 0) != 1:
                raise _Retry()
        return m.PrefixResponse(
            prefix=prefix,
            start_time=now,
            end_time=end,
            rpki_enabled=False,
            message=f"prefix leased for {hours} hour(s)",
        )

    def _free_slot(self, s: Session, now: datetime) -> tuple[str, int, str, bool] | None:
        """(pool, index, prefix, never used before) of a free prefix; never-used ones first."""
        length = self.config.lease_length
        for pool in self.config.prefix_pools:
            key = str(pool)
            used = s.execute(select(func.max(PrefixSlot.idx)).where(PrefixSlot.pool == key)).scalar_one()
            idx = 0 if used is None else int(used) + 1
            if idx < 1 << (length - pool.prefixlen):
                return key, idx, _nth_prefix(pool, length, idx), True
        for pool in self.config.prefix_pools:
            row = s.execute(
                select(PrefixSlot.idx, PrefixSlot.prefix)
                .where(PrefixSlot.pool == str(pool), PrefixSlot.available_at <= now)
                .order_by(PrefixSlot.available_at, PrefixSlot.idx)
                .limit(1)
            ).first()
            if row is not None:
                return str(pool), int(row[0]), str(row[1]), False
        return None

    def _own_active_lease(self, s: Session, user_id: int, prefix: str, now: datetime) -> Lease:
        lease = s.execute(
            select(Lease).where(
                Lease.user_id == user_id,
                Lease.prefix == prefix,
                Lease.released_at.is_(None),
                Lease.end_time > now,
            )
        ).scalar_one_or_none()
        if lease is None:
            raise ApiError(404, ErrorReason.NOT_FOUND, f"{prefix} is not one of your active leases")
        return lease

    def release_prefix(self, user_id: int, prefix: str) -> None:
        """End one of the caller's active leases now; the prefix enters quarantine."""
        prefix = _parse_prefix(prefix)
        with self.db.write() as s:
            now = self.clock.now()
            lease = self._own_active_lease(s, user_id, prefix, now)
            lease.released_at = now
            s.execute(
                update(PrefixSlot)
                .where(PrefixSlot.lease_id == lease.id)
                .values(available_at=now + timedelta(seconds=self.config.quarantine_seconds))
            )

    def renew_prefix(self, user_id: int, prefix: str, hours: int) -> m.PrefixResponse:
        """Extend an active lease by ``hours`` from its current end, within the maximum lifetime."""
        prefix = _parse_prefix(prefix)
        self._check_duration(hours)
        with self.db.write() as s:
            now = self.clock.now()
            lease = self._own_active_lease(s, user_id, prefix, now)
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
            lease.end_time = new_end
            s.execute(
                update(PrefixSlot)
                .where(PrefixSlot.lease_id == lease.id)
                .values(available_at=new_end + timedelta(seconds=self.config.quarantine_seconds))
            )
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
        with self.db.read() as s:
            self._user(s, user_id)
            if history:
                rows = list(
                    s.execute(
                        select(Lease)
                        .where(Lease.user_id == user_id)
                        .order_by(Lease.start_time.desc(), Lease.id.desc())
                    ).scalars()
                )
            else:
                rows = self._active_leases(s, user_id, now)
            return m.LeaseList(
                leases=[
                    m.LeaseRecord(
                        prefix=x.prefix,
                        start_time=x.start_time,
                        end_time=x.end_time,
                        released_at=x.released_at,
                        state=lease_state(x, now),
                        rpki_enabled=x.rpki_enabled,
                    )
                    for x in rows
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
