"""Database schema and engine set-up for SQLite (WAL, serialized writes) and PostgreSQL.

The invariant "no prefix is held by two leases at once" is enforced by the database: each prefix has at
most one row in ``prefix_slots`` (its primary key), and a slot is taken over only while it is available
(``available_at <= now``), re-checked on the row itself. ``available_at`` is the end of the holding lease
plus the quarantine, so a released or expired prefix cannot be handed out again before its quarantine ends.

SQLite has one writer at a time anyway: writes are serialized (BEGIN IMMEDIATE behind a FIFO lock) and kept
short. PostgreSQL allocates without a global lock: the user's row lock serializes one user's requests (lease
limit), ``FOR UPDATE SKIP LOCKED`` lets concurrent requests claim different slots, and an advisory
transaction lock serializes only the rare operations that need it (ASNs, adding never-used slots, admin).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from peerlab_tui.core.errors import ConfigError

logger = logging.getLogger(__name__)

# Arbitrary constant naming the PostgreSQL advisory lock that serializes allocations.
PG_ALLOCATION_LOCK = 0x5045_4552  # "PEER"
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


class FairLock:
    """A FIFO lock: under contention the longest waiter gets it next (``threading.Lock`` is not fair,
    which starves unlucky requests and stretches the latency tail)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False

    def acquire(self) -> None:
        """Wait for our turn."""
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # ownership is handed over by release()

    def release(self) -> None:
        """Hand the lock to the next waiter, if any."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._held = False

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC on every backend and returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware -> naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database layer")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Naive UTC -> aware."""
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of the gateway schema."""


class User(Base):
    """A lab user; ``asn`` and ``overlay_index`` are sticky once given."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    user_hash: Mapped[str] = mapped_column(String(64), unique=True)
    asn: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    max_leases: Mapped[int | None] = mapped_column(Integer, nullable=True)
    overlay_index: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Token(Base):
    """A bearer token, stored only as its SHA-256 (tokens are 256-bit random, so no slow hash is needed)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # admin | user | service
    name: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True)
    scopes: Mapped[str] = mapped_column(String(200), default="")  # space-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_tokens_kind_name", "kind", "name"),)


class Lease(Base):
    """A prefix lease. Active iff not released and ``end_time`` is in the future (no expiry job)."""

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(64), index=True)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rpki_enabled: Mapped[bool] = mapped_column(Boolean, default=False)


class PrefixSlot(Base):
    """One row per prefix ever handed out: who holds it and from when it may be handed out again."""

    __tablename__ = "prefix_slots"

    prefix: Mapped[str] = mapped_column(String(64), primary_key=True)
    pool: Mapped[str] = mapped_column(String(64))
    idx: Mapped[int] = mapped_column(BigInteger)
    lease_id: Mapped[int | None] = mapped_column(ForeignKey("leases.id", ondelete="SET NULL"), nullable=True)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("pool", "idx", name="uq_prefix_slots_pool_idx"),
        Index("ix_prefix_slots_pool_available", "pool", "available_at"),
    )


class Tunnel(Base):
    """A user's registered WireGuard public key."""

    __tablename__ = "tunnels"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64), unique=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RouteEntry(Base):
    """A route a route server reported, with its verdict (the looking glass)."""

    __tablename__ = "routes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rs: Mapped[str] = mapped_column(String(64), index=True)
    user_hash: Mapped[str] = mapped_column(String(64), index=True)
    prefix: Mapped[str] = mapped_column(String(64))
    as_path: Mapped[Any] = mapped_column(JSON)
    communities: Mapped[Any] = mapped_column(JSON)
    large_communities: Mapped[Any] = mapped_column(JSON)
    med: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    rule: Mapped[str | None] = mapped_column(String(64), nullable=True)


# --- engines -----------------------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs; reject backends other than SQLite and PostgreSQL."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"db: {url!r} is not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed.render_as_string(hide_password=False)
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # Each connection would get its own empty database: the schema and the leases would vanish.
            raise ConfigError(f"db: {url!r} is an in-memory database; use sqlite:///PATH (a file)")
        return url
    raise ConfigError(f"db: unsupported database {backend!r}; use sqlite:///PATH or postgresql://...")


class Database:
    """An engine plus the transaction helpers the gateway uses.

    ``write()`` opens a serialized write transaction: a process-wide FIFO lock, then on SQLite BEGIN IMMEDIATE
    (so writers never deadlock on lock upgrades), on PostgreSQL an advisory transaction lock (which also
    serializes against other processes, e.g. ``gateway user add`` while the service runs).
    ``read()`` opens a plain transaction (concurrent with writers under WAL / MVCC). The ``*_conn()`` variants
    give Core connections for the hot paths (no ORM session); ``transaction()`` and ``autocommit_conn()`` are
    unserialized and meant for PostgreSQL statements that rely on row locks.
    """

    def __init__(self, url: str, *, pool_size: int = 40) -> None:
        self.url = normalize_url(url)
        self.backend = make_url(self.url).get_backend_name()
        # Serializes this process's writers in arrival order; the database lock below covers other processes.
        self._write_lock = FairLock()
        if self.backend == "sqlite":
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = _postgres_engine(self.url, pool_size)
        # Single-statement reads need no transaction: on PostgreSQL that saves the BEGIN and COMMIT round
        # trips (each statement still sees one consistent snapshot, as under READ COMMITTED).
        self._autocommit = (
            self.engine if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @property
    def is_sqlite(self) -> bool:
        """True on SQLite."""
        return self.backend == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def read_conn(self) -> Iterator[Connection]:
        """A Core connection for reads (the hot paths: no ORM session, no identity map).

        On SQLite the reads share one transaction; on PostgreSQL each statement is its own (autocommit).
        """
        if self.is_sqlite:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        else:
            with self.autocommit_conn() as conn:
                yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """An unserialized transaction on a Core connection (PostgreSQL allocations rely on row locks)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def autocommit_conn(self) -> Iterator[Connection]:
        """PostgreSQL only: a connection on which every statement is its own transaction."""
        if self.is_sqlite:
            raise RuntimeError("autocommit_conn is for PostgreSQL; SQLite writes go through write_conn()")
        with self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def write_conn(self) -> Iterator[Connection]:
        """Like :meth:`write` on a Core connection: same lock order, same atomicity, far less Python."""
        with self._write_lock:
            if self.is_sqlite:
                with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
                    yield conn
            else:
                with self.engine.connect() as conn, conn.begin():
                    conn.execute(_PG_LOCK, {"k": PG_ALLOCATION_LOCK})
                    yield conn

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A serialized write transaction, committed on success and rolled back on error."""
        if self.is_sqlite:
            with self._write_lock:
                conn = self.engine.connect().execution_options(sqlite_immediate=True)
                try:
                    with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                        yield session
                finally:
                    conn.close()
        else:
            with (
                self._write_lock,
                Session(self.engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                session.execute(_PG_LOCK, {"k": PG_ALLOCATION_LOCK})
                yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


# A pooled PostgreSQL connection idle for longer than this is pinged before use (a restarted server or a
# dropped connection is then replaced instead of failing a request). Busy connections skip the round trip.
PG_PING_AFTER_IDLE = 10.0


def _postgres_engine(url: str, pool_size: int) -> Engine:
    # Keep as many connections as the server has worker threads (anyio's default is 40): with a smaller pool,
    # connections above it are closed on return and reopened moments later, and each reopening forks a
    # PostgreSQL backend (measured: about a third of the throughput lost at 200 clients).
    engine = create_engine(url, pool_size=pool_size, max_overflow=20, pool_timeout=60)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PG_PING_AFTER_IDLE:
            return
        try:
            dbapi_conn.execute("SELECT 1")
            if not dbapi_conn.autocommit:
                dbapi_conn.rollback()
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another one.
            raise DisconnectionError(f"stale PostgreSQL connection: {exc}") from exc

    return engine


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        import os
        from pathlib import Path

        path = Path(parsed.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # The database holds token hashes and user data: owner-only from the start.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    engine = create_engine(
        url,
        connect_args={"timeout": 60, "check_same_thread": False},
        pool_size=20,
        max_overflow=40,
        pool_timeout=60,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy (not the driver) decide when transactions begin, so BEGIN IMMEDIATE is possible.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# --- migrations --------------------------------------------------------------------------------------------


def _alembic_config(db: Database) -> Any:
    from alembic.config import Config

    cfg = Config()
    script_dir = resources.files("lab.gateway") / "migrations"
    cfg.set_main_option("script_location", str(script_dir))
    return cfg


def migrate(db: Database) -> tuple[str | None, str]:
    """Create or upgrade the schema to the newest revision; return (revision before, revision after)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = _alembic_config(db)
    with db.engine.connect() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with db.engine.connect() as conn:
        after = MigrationContext.configure(conn).get_current_revision()
    logger.info("schema at revision %s (was %s)", after, before)
    return before, after or ""


def head_revision(db: Database) -> str:
    """The newest revision the shipped migrations define."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(db)).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The revision the database is at (None when the schema was never created)."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
