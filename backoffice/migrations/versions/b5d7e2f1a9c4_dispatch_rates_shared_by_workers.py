"""dispatch_rates: each account's send rate, shared by every dispatcher worker

Revision ID: b5d7e2f1a9c4
Revises: 7c3e9a51d2b8
Create Date: 2026-12-06 15:40:00.000000

Each worker used to pace an account's messages with a bucket of its own, so N workers could send
N times the account's rate; the GCRA state now lives in the database and a worker takes starts
from it in small grants.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "b5d7e2f1a9c4"
down_revision = "7c3e9a51d2b8"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "dispatch_rates",
        sa.Column("account_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tat_us", sa.BigInteger(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["enterprise_accounts.id"], name=op.f("fk_dispatch_rates_account_id_enterprise_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_dispatch_rates")),
    )


def downgrade():
    op.drop_table("dispatch_rates")
