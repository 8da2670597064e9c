"""statement_lines: a line finance sets aside (忽略) with a reason, off the matching queue

Revision ID: b2d4f6a8c0e3
Revises: c4e6a8b0d2f5
Create Date: 2026-12-09 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import backoffice.models.base

# revision identifiers, used by Alembic.
revision = "b2d4f6a8c0e3"
down_revision = "c4e6a8b0d2f5"
branch_labels = None
depends_on = None


def upgrade():
    # Nullable columns: a plain ADD COLUMN on both databases, no table rebuild.
    op.add_column("statement_lines", sa.Column("ignored_at", backoffice.models.base.UTCDateTime(), nullable=True))
    op.add_column("statement_lines", sa.Column("ignored_by", sa.String(length=80), nullable=True))
    op.add_column("statement_lines", sa.Column("ignore_reason", sa.String(length=500), nullable=True))


def downgrade():
    op.drop_column("statement_lines", "ignore_reason")
    op.drop_column("statement_lines", "ignored_by")
    op.drop_column("statement_lines", "ignored_at")
