"""ported_numbers: the carrier SMSCs reported for numbers ported away from their prefix's carrier;
an index on unsubscribes.created_at for the dispatcher workers' look for new entries

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
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_ported_numbers")),
    )
    with op.batch_alter_table("unsubscribes", schema=None) as batch_op:
        batch_op.create_index("ix_unsubscribes_created_at", ["created_at"], unique=False)


def downgrade():
    with op.batch_alter_table("unsubscribes", schema=None) as batch_op:
        batch_op.drop_index("ix_unsubscribes_created_at")
    op.drop_table("ported_numbers")
