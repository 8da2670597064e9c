"""send log archives: rows older than the time they must be kept can be moved to a verified
file (`dispatch archive-log`); the record of each archive, append-only, each the next part of
the log six months old, and the send log's delete trigger letting only archived rows six months
old go; on SQLite, triggers refusing INSERT OR REPLACE of the send log's, its head's and its
archives' rows

Revision ID: f3b5d7a9c1e4
Revises: a4e8c2f6d0b9
Create Date: 2026-12-08 01:00:00.000000

The triggers are the model's (backoffice.models.messaging.SEND_LOG_GUARD,
SEND_LOG_ARCHIVES_GUARD), which also attaches them to `create_all`, so a migrated database and a
test database agree. Downgrading refuses while archives are recorded: the rows they took are no
longer in the database, and the old trigger would make the log look cut at its start.
"""

import sqlalchemy as sa
from alembic import op

import backoffice.models.base
from backoffice.models.messaging import (
    SEND_LOG_ARCHIVES_GUARD,
    SEND_LOG_ARCHIVES_UNGUARD,
    SEND_LOG_GUARD,
    SQLITE_NO_REPLACE,
    SQLITE_NO_REPLACE_UNDO,
)

# revision identifiers, used by Alembic.
revision = "f3b5d7a9c1e4"
down_revision = "a4e8c2f6d0b9"
branch_labels = None
depends_on = None

# The send log's delete guard before this revision (7c3e9a51d2b8).
_OLD_DELETE_GUARD = {
    "sqlite": (
        "DROP TRIGGER IF EXISTS send_log_no_delete",
        "CREATE TRIGGER send_log_no_delete BEFORE DELETE ON send_log BEGIN SELECT RAISE(ABORT, 'send_log is append-only'); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION send_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'send_log is append-only' USING ERRCODE = 'restrict_violation'; END $$",
    ),
}
# The new one: SQLite's trigger made again, PostgreSQL's function replaced (its triggers stay).
_NEW_DELETE_GUARD = {
    "sqlite": ("DROP TRIGGER IF EXISTS send_log_no_delete", SEND_LOG_GUARD["sqlite"][1]),
    "postgresql": (SEND_LOG_GUARD["postgresql"][0],),
}


def _run(statements):
    dialect = op.get_context().dialect.name  # works offline (--sql) too
    if dialect not in statements:
        raise NotImplementedError(f"no send_log guard for the {dialect} dialect (SQLite and PostgreSQL are supported)")
    for statement in statements[dialect]:
        op.execute(statement)


def upgrade():
    op.create_table(
        "send_log_archives",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_prev_hash", sa.String(length=64), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("earliest_logged_at", backoffice.models.base.UTCDateTime(), nullable=False),
        sa.Column("latest_logged_at", backoffice.models.base.UTCDateTime(), nullable=False),
        sa.Column("before_day", sa.Date(), nullable=False),
        sa.Column("file_name", sa.String(length=200), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("archived_at", backoffice.models.base.UTCDateTime(), nullable=False),
        sa.Column("archived_by", sa.String(length=100), nullable=False),
        sa.CheckConstraint("first_seq >= 1 AND last_seq >= first_seq", name=op.f("ck_send_log_archives_seq_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_send_log_archives")),
        sa.UniqueConstraint("first_seq", name=op.f("uq_send_log_archives_first_seq")),
        sa.UniqueConstraint("last_seq", name=op.f("uq_send_log_archives_last_seq")),
    )
    _run(SEND_LOG_ARCHIVES_GUARD)
    _run(_NEW_DELETE_GUARD)
    _run({"sqlite": SQLITE_NO_REPLACE, "postgresql": ()})  # (INSERT OR REPLACE: SQLite only)


def downgrade():
    if op.get_context().as_sql is False:
        archived = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM send_log_archives")).scalar()
        if archived:
            raise RuntimeError(f"{archived} send log archive(s) recorded: their rows are no longer in send_log; not downgrading")
    _run({"sqlite": SQLITE_NO_REPLACE_UNDO, "postgresql": ()})
    _run(_OLD_DELETE_GUARD)
    _run(SEND_LOG_ARCHIVES_UNGUARD)
    op.drop_table("send_log_archives")
