"""ported_numbers: the carrier SMSCs reported for numbers ported away from their prefix's carrier

Revision ID: c8a4f0e6d2b7
Revises: b5d7e2f1a9c4
Create Date: 2026-12-06 16:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

import backoffice.models.base

# revision identifiers, used by Alembic.
revision = "c8a4f0e6d2b7"
down_revision = "b5d7e2f1a9c4"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "ported_numbers",
        sa.Column("number", sa.String(length=11), nullable=False),
        sa.Column("carrier", sa.String(length=8), nullable=False),
        sa.Column("reported_at", backoffice.models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_ported_numbers")),
    )


def downgrade():
    op.drop_table("ported_numbers")
