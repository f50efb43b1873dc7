"""web: when a web session was last used (idle timeout)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tokenbroker.db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "last_seen_at", tokenbroker.db.types.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_column("last_seen_at")
