"""messages: the recipient index leads with the recipient, (recipient, account_id, accepted_at)
instead of (account_id, recipient, accepted_at): a reply to a shared source address finds the
account that last sent to its number through it, where the worker scanned up to a million of the
latest messages; an account's same-content check and an unsubscribe's refunds use it as before

Revision ID: b9d3f5a7c1e8
Revises: a7c1e9f3b5d2
Create Date: 2026-12-06 20:40:00.000000
"""

import sqlalchemy as sa
from alembic import context, op

# revision identifiers, used by Alembic.
revision = "b9d3f5a7c1e8"
down_revision = "a7c1e9f3b5d2"
branch_labels = None
depends_on = None

NEW, OLD = "ix_messages_recipient_account", "ix_messages_recipient"


def _invalid(index: str) -> bool:
    """Whether the index is there INVALID (what an interrupted concurrent build leaves)."""
    return (
        op.get_bind()
        .execute(
            sa.text("SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :name AND NOT i.indisvalid"),
            {"name": index},
        )
        .first()
        is not None
    )


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        # Without blocking intake's inserts while it builds (a large table): CONCURRENTLY runs
        # outside a transaction.
        with op.get_context().autocommit_block():
            # A concurrent build that was interrupted leaves the index INVALID (kept up to date,
            # never read) and the revision unrecorded: build it again rather than fail on it or
            # take it for done (as f1d7c3a9e5b2). The old index may be gone already if the run was
            # stopped between the drop and the revision's record.
            # (`--sql` has no database to ask: the script drops whatever an interrupted run left.)
            if context.is_offline_mode() or _invalid(NEW):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEW}")
            op.create_index(NEW, "messages", ["recipient", "account_id", "accepted_at"], postgresql_concurrently=True, if_not_exists=True)
            op.drop_index(OLD, table_name="messages", postgresql_concurrently=True, if_exists=True)
        return
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(NEW, ["recipient", "account_id", "accepted_at"], unique=False)
        batch_op.drop_index(OLD)


def downgrade():
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(OLD, ["account_id", "recipient", "accepted_at"], unique=False)
        batch_op.drop_index(NEW)
