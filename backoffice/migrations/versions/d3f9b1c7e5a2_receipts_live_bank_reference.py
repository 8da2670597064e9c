"""receipts: a bank reference is unique among live receipts only (pending, approved, confirmed),
so a transfer whose receipt was rejected or reversed can be recorded again

Revision ID: d3f9b1c7e5a2
Revises: c8a4f0e6d2b7
Create Date: 2026-12-06 17:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "d3f9b1c7e5a2"
down_revision = "c8a4f0e6d2b7"
branch_labels = None
depends_on = None

LIVE = "status IN ('pending', 'approved', 'confirmed')"


def upgrade():
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_constraint("bank_reference", type_="unique")
        batch_op.create_index(
            "uq_receipts_live_bank_reference",
            ["bank", "bank_reference"],
            unique=True,
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )


def downgrade():
    # Fails, as it should, while a reference is recorded more than once (a re-entered transfer).
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index("uq_receipts_live_bank_reference")
        batch_op.create_unique_constraint("bank_reference", ["bank", "bank_reference"])
