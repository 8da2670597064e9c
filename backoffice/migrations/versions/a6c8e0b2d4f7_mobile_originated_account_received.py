"""mobile_originated: an index (account_id, received_at, id) for GET /api/v1/replies, which
pages an account's replies by (received_at, id): every poll sorted all of them

Revision ID: a6c8e0b2d4f7
Revises: f3b5d7a9c1e4
Create Date: 2026-12-08 02:00:00.000000
"""

from alembic import op

from backoffice.migrations.concurrent_index import build_index_concurrently

# revision identifiers, used by Alembic.
revision = "a6c8e0b2d4f7"
down_revision = "f3b5d7a9c1e4"
branch_labels = None
depends_on = None

NAME, COLUMNS = "ix_mobile_originated_account_received", ["account_id", "received_at", "id"]


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():  # CONCURRENTLY: replies keep arriving while it builds
            build_index_concurrently(NAME, "mobile_originated", COLUMNS)
        return
    op.create_index(NAME, "mobile_originated", COLUMNS, unique=False)


def downgrade():
    op.drop_index(NAME, table_name="mobile_originated")
