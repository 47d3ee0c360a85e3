"""Routes carry the machine-readable name of the policy rule that filtered them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add routes.rule."""
    with op.batch_alter_table("routes") as batch:
        batch.add_column(sa.Column("rule", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop routes.rule."""
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("rule")
