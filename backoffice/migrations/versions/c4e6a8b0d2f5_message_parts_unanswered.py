"""message_parts: a partial index of the parts whose submit_sm_resp is not recorded, so the
workers' look for anything in flight reads those few rows, not every part an SMSC ever refused

Revision ID: c4e6a8b0d2f5
Revises: a3c9e5f1b7d4
Create Date: 2026-12-08 09:00:00.000000

On PostgreSQL the index is built CONCURRENTLY (outside the migration's transaction), so intake
and the dispatcher keep writing message_parts meanwhile.
"""

import sqlalchemy as sa
from alembic import op

from backoffice.migrations.concurrent_index import build_index_concurrently

# revision identifiers, used by Alembic.
revision = "c4e6a8b0d2f5"
down_revision = "a3c9e5f1b7d4"
branch_labels = None
depends_on = None

NAME, WHERE = "ix_message_parts_unanswered", "submit_status IS NULL"


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            build_index_concurrently(NAME, "message_parts", ["message_id"], where=WHERE)
        return
    op.create_index(NAME, "message_parts", ["message_id"], sqlite_where=sa.text(WHERE))


def downgrade():
    op.drop_index(NAME, table_name="message_parts")
