"""Initial schema: users, tokens, leases, prefix slots, tunnels, routes.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("user_hash", sa.String(64), nullable=False),
        sa.Column("asn", sa.BigInteger(), nullable=True),
        sa.Column("max_leases", sa.Integer(), nullable=True),
        sa.Column("overlay_index", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("user_hash"),
        sa.UniqueConstraint("asn"),
        sa.UniqueConstraint("overlay_index"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_tokens_kind_name", "tokens", ["kind", "name"])
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("prefix", sa.String(64), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("end_time", sa.DateTime(), nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.Column("rpki_enabled", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_leases_user_id", "leases", ["user_id"])
    op.create_index("ix_leases_prefix", "leases", ["prefix"])
    op.create_table(
        "prefix_slots",
        sa.Column("prefix", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("lease_id", sa.Integer(), sa.ForeignKey("leases.id", ondelete="SET NULL"), nullable=True),
        sa.Column("available_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("pool", "idx", name="uq_prefix_slots_pool_idx"),
    )
    op.create_index("ix_prefix_slots_pool_available", "prefix_slots", ["pool", "available_at"])
    op.create_table(
        "tunnels",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("public_key"),
    )
    op.create_table(
        "routes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("rs", sa.String(64), nullable=False),
        sa.Column("user_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(64), nullable=False),
        sa.Column("as_path", sa.JSON(), nullable=False),
        sa.Column("communities", sa.JSON(), nullable=False),
        sa.Column("large_communities", sa.JSON(), nullable=False),
        sa.Column("med", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_routes_rs", "routes", ["rs"])
    op.create_index("ix_routes_user_hash", "routes", ["user_hash"])


def downgrade() -> None:
    """Drop every table."""
    for table in ("routes", "tunnels", "prefix_slots", "leases", "tokens", "users"):
        op.drop_table(table)
