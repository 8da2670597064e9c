"""send log: triggers that refuse UPDATE and DELETE (append-only in the database itself)

Revision ID: 7c3e9a51d2b8
Revises: 2d1c591f4330
Create Date: 2026-11-24 10:00:00.000000

The statements are the model's (backoffice.models.messaging.SEND_LOG_GUARD), which also
attaches them to `create_all`, so a migrated database and a test database agree.
"""

from alembic import op

from backoffice.models.messaging import SEND_LOG_GUARD, SEND_LOG_UNGUARD


# revision identifiers, used by Alembic.
revision = "7c3e9a51d2b8"
down_revision = "2d1c591f4330"
branch_labels = None
depends_on = None


def _run(statements):
    dialect = op.get_context().dialect.name  # works offline (--sql) too
    if dialect not in statements:
        raise NotImplementedError(f"no send_log guard for the {dialect} dialect (SQLite and PostgreSQL are supported)")
    for statement in statements[dialect]:
        op.execute(statement)


def upgrade():
    _run(SEND_LOG_GUARD)


def downgrade():
    _run(SEND_LOG_UNGUARD)
