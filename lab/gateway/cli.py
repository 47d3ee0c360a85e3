"""``peerlab-tui gateway ...``: initialise the database, run the service, add users and service tokens."""

from __future__ import annotations

import functools
import gc
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from lab.gateway.config import GatewayConfig, build_config
from lab.gateway.db import Database, current_revision, head_revision, migrate
from lab.gateway.service import ApiError, GatewayService
from peerlab_tui._cli.common import emit_json, handle_errors, json_option
from peerlab_tui.core.errors import (
    ConfigError,
    ExitCode,
    InputError,
    NotFoundError,
    PeerlabError,
)

logger = logging.getLogger(__name__)


class RefusedError(PeerlabError):
    """The gateway refused: the object exists already, or the database is already initialised."""

    exit_code = ExitCode.REFUSED


def _translate(exc: ApiError) -> PeerlabError:
    if exc.status == 404:
        return NotFoundError(exc.message, status_code=404, code=str(exc.reason))
    if exc.status == 409:
        return RefusedError(exc.message)
    if exc.status == 400:
        return InputError(exc.message)
    return exc


def _config(config_file: Path | None, **cli: Any) -> GatewayConfig:
    return build_config(cli, os.environ, config_file)


def _open_service(cfg: GatewayConfig, *, require_schema: bool = True) -> GatewayService:
    db = Database(cfg.db)
    if require_schema:
        current, head = current_revision(db), head_revision(db)
        if current is None:
            raise ConfigError(
                f"the database {_safe_url(db)} is not initialised: run `peerlab-tui gateway init`"
            )
        if current != head:
            raise ConfigError(
                f"the database schema is at revision {current}, this gateway needs {head}: "
                "run `peerlab-tui gateway init` to migrate"
            )
    return GatewayService(db, cfg)


def _with_service(config_file: Path | None, db: str | None, call: Callable[[GatewayService], T],
                  *, invalid: str = "invalid input") -> T:
    """Open the database, make one service call, and close it again; service errors become CLI errors."""
    from pydantic import ValidationError

    service = _open_service(_config(config_file, db=db))
    try:
        return call(service)
    except ValidationError as exc:
        raise InputError(invalid) from exc
    except ApiError as exc:
        raise _translate(exc) from exc
    finally:
        service.db.dispose()


def _server_stack() -> str:
    """The HTTP parser and event loop uvicorn's "auto" picks: httptools and uvloop when importable
    (cheaper per request than the pure-Python h11 parser and the asyncio loop), else h11 and asyncio."""
    import importlib

    def importable(name: str) -> bool:
        try:
            importlib.import_module(name)
        except ImportError:
            return False
        return True

    http = "httptools" if importable("httptools") else "h11"
    loop = "uvloop" if importable("uvloop") else "asyncio"
    return f"http {http}, loop {loop}"


P = ParamSpec("P")
T = TypeVar("T")


class DatabaseUnreachableError(PeerlabError):
    """The database server could not be reached or refused the connection."""

    exit_code = ExitCode.UNREACHABLE


def database_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Turn database and file errors into clear CLI errors (inside ``handle_errors``), never a traceback.

    A server that cannot be reached is exit 7; a path that cannot be opened or a URL the driver rejects is
    exit 2. The driver's first line says where it failed (host and port, never the password).
    """
    from sqlalchemy.exc import ArgumentError, DatabaseError, InterfaceError, OperationalError

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except PeerlabError:
            raise
        except (OperationalError, InterfaceError) as exc:
            reason = _first_line(exc.orig or exc)
            raise DatabaseUnreachableError(f"cannot use the database: {reason}") from exc
        except (DatabaseError, ArgumentError, OSError, TypeError, ValueError) as exc:
            raise InputError(f"cannot open the database: {_first_line(exc)}") from exc

    return wrapper


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _safe_url(db: Database) -> str:
    from sqlalchemy.engine import make_url

    return make_url(db.url).render_as_string(hide_password=True)


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML file with the settings in snake_case (also PEERLAB_GW_CONFIG).",
)
db_option = click.option(
    "--db", default=None, help="Database URL: sqlite:///PATH or postgresql://... (env PEERLAB_GW_DB)."
)


@click.group()
def gateway() -> None:
    """The lease gateway service (platform side)."""


@gateway.command()
@db_option
@config_option
@click.option(
    "--rotate-admin-token", is_flag=True, help="Replace the admin token of an initialised database."
)
@json_option
@handle_errors
@database_errors
def init(db: str | None, config_file: Path | None, rotate_admin_token: bool, as_json: bool) -> None:
    """Create or migrate the schema and print the admin token (once)."""
    cfg = _config(config_file, db=db)
    database = Database(cfg.db)
    try:
        before, after = migrate(database)
        service = GatewayService(database, cfg)
        if service.is_initialised() and not rotate_admin_token:
            message = (
                f"the database is already initialised (schema {after}"
                + (f", migrated from {before}" if before and before != after else "")
                + "); its admin token is unchanged. Use --rotate-admin-token to replace it."
            )
            raise RefusedError(message)
        try:
            token = service.create_admin_token(rotate=rotate_admin_token)
        except ApiError as exc:
            raise _translate(exc) from exc
    finally:
        database.dispose()
    if as_json:
        emit_json({"admin_token": token, "schema": after})
    else:
        click.echo(f"schema at revision {after}", err=True)
        click.echo("admin token (shown only now, keep it secret):", err=True)
        click.echo(token)


@gateway.command()
@click.option("--listen", default=None, help="HOST:PORT to listen on (default 127.0.0.1:8080; port 0 = any).")
@db_option
@click.option("--prefix-pool", "prefix_pools", multiple=True, help="IPv6 pool to lease from (repeatable).")
@click.option("--lease-length", type=int, default=None, help="Prefix length of each lease (default 48).")
@click.option("--asn-range", default=None, help="FIRST-LAST private ASNs to hand out (default 65000-65534).")
@click.option("--max-leases", type=int, default=None, help="Active leases per user (default 1).")
@click.option("--min-hours", type=int, default=None, help="Shortest lease in hours (default 1).")
@click.option(
    "--max-hours", type=int, default=None, help="Longest lease or renewal step in hours (default 24)."
)
@click.option(
    "--max-lifetime-hours",
    type=int,
    default=None,
    help="Longest total lease lifetime including renewals (default 72).",
)
@click.option(
    "--quarantine-seconds",
    type=int,
    default=None,
    help="How long a released or expired prefix rests before reuse (default 600).",
)
@click.option(
    "--route-server",
    "route_servers",
    multiple=True,
    help="NAME,PUBKEY,ENDPOINT,OVERLAY_NET,OVERLAY_ADDR,ASN (repeatable).",
)
@click.option(
    "--clock-file",
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Testing/classroom aid: a file holding seconds added to real time (re-read per request).",
)
@config_option
@click.option(
    "--port-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the bound port here once listening (useful with --listen HOST:0).",
)
@click.option("--access-log/--no-access-log", default=False, help="Log every request (default off).")
@handle_errors
@database_errors
def serve(config_file: Path | None, port_file: Path | None, access_log: bool, **options: Any) -> None:
    """Run the gateway (uvicorn, one worker)."""
    import uvicorn

    from lab.gateway.app import create_app
    from lab.gateway.clock import Clock, OffsetFileClock, SystemClock

    cfg = _config(config_file, **options)
    service = _open_service(cfg)
    service.check_pools()
    service.prepare_slots()
    clock: Clock = SystemClock()
    if cfg.clock_file is not None:
        logger.warning("clock offset file %s is in use: time may be shifted (testing aid)", cfg.clock_file)
        clock = OffsetFileClock(cfg.clock_file)
    app = create_app(cfg, service.db, clock)
    family = socket.AF_INET6 if ":" in cfg.listen_host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets (else Nagle adds 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.listen_host, cfg.listen_port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {cfg.listen}: {exc.strerror}") from exc
    sock.listen(2048)
    port = sock.getsockname()[1]
    host = f"[{cfg.listen_host}]" if family == socket.AF_INET6 else cfg.listen_host
    click.echo(
        f"gateway listening on http://{host}:{port} (db {_safe_url(service.db)}, "
        f"{cfg.pool_capacity()} /{cfg.lease_length} prefixes, {_server_stack()})",
        err=True,
    )
    if port_file is not None:
        tmp = port_file.with_name(port_file.name + ".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(port_file)
    level = logging.getLogger().getEffectiveLevel()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            workers=1,
            access_log=access_log,
            log_level=max(level, logging.INFO),
            timeout_graceful_shutdown=5,
            timeout_keep_alive=75,  # longer than typical client pools keep idle connections: no reuse race
            backlog=2048,
        )
    )
    # Everything loaded so far (modules, the app, SQLAlchemy's metadata) lives as long as the process: keep
    # it out of the garbage collector's full passes, each of which pauses every request in flight.
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        service.db.dispose()


@gateway.group()
def user() -> None:
    """Manage users directly in the database."""


@user.command("add")
@click.argument("name")
@db_option
@config_option
@click.option(
    "--max-leases", type=int, default=None, help="This user's lease limit (default: the gateway's)."
)
@json_option
@handle_errors
@database_errors
def user_add(
    name: str, db: str | None, config_file: Path | None, max_leases: int | None, as_json: bool
) -> None:
    """Create a user and print its token (shown once)."""
    created = _with_service(
        config_file, db, lambda service: service.create_user(name, max_leases),
        invalid=f"user name {name!r} is invalid: use letters, digits, '.', '_' or '-'",
    )
    if as_json:
        emit_json(created)
    else:
        click.echo(f"user {created.name} ({created.user_hash}); token (shown only now):", err=True)
        click.echo(created.token)


@user.command("list")
@db_option
@config_option
@json_option
@handle_errors
@database_errors
def user_list(db: str | None, config_file: Path | None, as_json: bool) -> None:
    """List users."""
    users = _with_service(config_file, db, lambda service: service.list_users())
    if as_json:
        emit_json(users)
        return
    for u in users.users:
        click.echo(f"{u.name}\t{u.user_hash}\tasn={u.asn or '-'}\tleases={u.active_leases}/{u.max_leases}")


@gateway.group()
def token() -> None:
    """Manage service tokens directly in the database."""


@token.command("add")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["mappings:read", "routes:write", "tunnels:read"]),
    help="A scope to grant (repeatable).",
)
@db_option
@config_option
@json_option
@handle_errors
@database_errors
def token_add(
    name: str, scopes: tuple[str, ...], db: str | None, config_file: Path | None, as_json: bool
) -> None:
    """Create a service token and print it (shown once)."""
    created = _with_service(
        config_file, db, lambda service: service.create_service_token(name, list(scopes)),
        invalid=f"service token name {name!r} is invalid",
    )
    if as_json:
        emit_json(created)
    else:
        click.echo(
            f"service token {created.name} ({' '.join(created.scopes)}); token (shown only now):", err=True
        )
        click.echo(created.token)
