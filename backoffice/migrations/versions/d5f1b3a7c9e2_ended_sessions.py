"""ended sessions: a logout ends that session only (its token kept while a session cookie is
accepted), the login's other sessions going on; the login's nonce still ends all of them at a
password change or reset

Revision ID: d5f1b3a7c9e2
Revises: c2e8a6f4d0b3
Create Date: 2026-12-06 22:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

from backoffice.models.base import UTCDateTime

# revision identifiers, used by Alembic.
revision = "d5f1b3a7c9e2"
down_revision = "c2e8a6f4d0b3"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "ended_sessions",
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_ended_sessions")),
    )
    with op.batch_alter_table("ended_sessions") as batch:
        batch.create_index(batch.f("ix_ended_sessions_ended_at"), ["ended_at"], unique=False)


def downgrade():
    with op.batch_alter_table("ended_sessions") as batch:
        batch.drop_index(batch.f("ix_ended_sessions_ended_at"))
    op.drop_table("ended_sessions")
