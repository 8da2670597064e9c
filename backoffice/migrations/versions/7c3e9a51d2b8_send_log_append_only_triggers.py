"""send log: triggers that refuse UPDATE and DELETE (append-only in the database itself)

Revision ID: 7c3e9a51d2b8
Revises: 2d1c591f4330
Create Date: 2026-11-24 10:00:00.000000

The statements were the model's (backoffice.models.messaging.SEND_LOG_GUARD) at the time; they
are written out here since the model's changed (f3b5d7a9c1e4: rows written to an archive may go).
"""

from alembic import op

from backoffice.models.messaging import SEND_LOG_UNGUARD

SEND_LOG_GUARD = {
    "sqlite": (
        "CREATE TRIGGER send_log_no_update BEFORE UPDATE ON send_log BEGIN SELECT RAISE(ABORT, 'send_log is append-only'); END",
        "CREATE TRIGGER send_log_no_delete BEFORE DELETE ON send_log BEGIN SELECT RAISE(ABORT, 'send_log is append-only'); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION send_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'send_log is append-only' USING ERRCODE = 'restrict_violation'; END $$",
        "CREATE TRIGGER send_log_no_update_or_delete BEFORE UPDATE OR DELETE ON send_log "
        "FOR EACH ROW EXECUTE FUNCTION send_log_append_only()",
        "CREATE TRIGGER send_log_no_truncate BEFORE TRUNCATE ON send_log FOR EACH STATEMENT EXECUTE FUNCTION send_log_append_only()",
    ),
}


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
