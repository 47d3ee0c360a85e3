"""Alembic environment: run programmatically by ``lab.gateway.db.migrate`` with a live connection."""

from __future__ import annotations

from alembic import context

from lab.gateway.db import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run migrations on the connection the caller put into ``config.attributes``."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("lab.gateway migrations run only through lab.gateway.db.migrate()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported")
run_migrations_online()
