"""send log head: triggers that refuse deleting the head row or moving it back (it names the
log's length: without it, rows cut off the end went unnoticed and every later send failed)

Revision ID: e9c5a1d7b3f8
Revises: d7b3f9a1c5e6
Create Date: 2026-12-07 07:00:00.000000

The statements are the model's (backoffice.models.messaging.SEND_LOG_HEAD_GUARD), which also
attaches them to `create_all`, so a migrated database and a test database agree.
"""

from alembic import op

from backoffice.models.messaging import SEND_LOG_HEAD_GUARD, SEND_LOG_HEAD_UNGUARD

# revision identifiers, used by Alembic.
revision = "e9c5a1d7b3f8"
down_revision = "d7b3f9a1c5e6"
branch_labels = None
depends_on = None


def _run(statements):
    dialect = op.get_context().dialect.name  # works offline (--sql) too
    if dialect not in statements:
        raise NotImplementedError(f"no send_log_head guard for the {dialect} dialect (SQLite and PostgreSQL are supported)")
    for statement in statements[dialect]:
        op.execute(statement)


def upgrade():
    _run(SEND_LOG_HEAD_GUARD)


def downgrade():
    _run(SEND_LOG_HEAD_UNGUARD)
