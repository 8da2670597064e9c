"""login failures: failed logins counted per login and per address, so that passwords cannot be
guessed without limit (customer logins are sequential and easy to list)

Revision ID: a3c9e5f1b7d4
Revises: f1d7c3a9e5b2
Create Date: 2026-12-07 07:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

from backoffice.models.base import UTCDateTime

# revision identifiers, used by Alembic.
revision = "a3c9e5f1b7d4"
down_revision = "f1d7c3a9e5b2"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(length=100), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures") as batch:
        batch.create_index(batch.f("ix_login_failures_failed_at"), ["failed_at"], unique=False)
        batch.create_index("ix_login_failures_login_failed_at", ["login", "failed_at"], unique=False)
        batch.create_index("ix_login_failures_address_failed_at", ["address", "failed_at"], unique=False)


def downgrade():
    with op.batch_alter_table("login_failures") as batch:
        batch.drop_index("ix_login_failures_address_failed_at")
        batch.drop_index("ix_login_failures_login_failed_at")
        batch.drop_index(batch.f("ix_login_failures_failed_at"))
    op.drop_table("login_failures")
