"""dispatch workers: each worker's heartbeat, link state and latest problem, for the operations
page and `dispatch status` (a stopped worker or an SMSC refusing for ever was in the log only)

Revision ID: d7b3f9a1c5e6
Revises: c3e5a7b9d1f2
Create Date: 2026-12-07 06:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

import backoffice.models.base

# revision identifiers, used by Alembic.
revision = "d7b3f9a1c5e6"
down_revision = "c3e5a7b9d1f2"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "dispatch_workers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("smsc", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", backoffice.models.base.UTCDateTime(), nullable=False),
        sa.Column("seen_at", backoffice.models.base.UTCDateTime(), nullable=False),
        sa.Column("bound", sa.Boolean(), nullable=False),
        sa.Column("down_since", backoffice.models.base.UTCDateTime(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("problem_at", backoffice.models.base.UTCDateTime(), nullable=True),
        sa.Column("rebinds", sa.Integer(), nullable=False),
        sa.Column("throttled_pauses", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("counters", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_dispatch_workers")),
    )


def downgrade():
    op.drop_table("dispatch_workers")
