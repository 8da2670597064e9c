"""messages: the recipient index leads with the recipient, (recipient, account_id, accepted_at)
instead of (account_id, recipient, accepted_at): a reply to a shared source address finds the
account that last sent to its number through it, where the worker scanned up to a million of the
latest messages; an account's same-content check and an unsubscribe's refunds use it as before

Revision ID: b9d3f5a7c1e8
Revises: a7c1e9f3b5d2
Create Date: 2026-12-06 20:40:00.000000
"""

from alembic import op

from backoffice.migrations.concurrent_index import build_index_concurrently

# revision identifiers, used by Alembic.
revision = "b9d3f5a7c1e8"
down_revision = "a7c1e9f3b5d2"
branch_labels = None
depends_on = None

NEW, OLD = "ix_messages_recipient_account", "ix_messages_recipient"


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        # Without blocking intake's inserts while it builds (a large table): CONCURRENTLY runs
        # outside a transaction.
        with op.get_context().autocommit_block():
            build_index_concurrently(NEW, "messages", ["recipient", "account_id", "accepted_at"])
            # (the old index may be gone already if a run stopped between the drop and the record)
            op.drop_index(OLD, table_name="messages", postgresql_concurrently=True, if_exists=True)
        return
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(NEW, ["recipient", "account_id", "accepted_at"], unique=False)
        batch_op.drop_index(OLD)


def downgrade():
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(OLD, ["account_id", "recipient", "accepted_at"], unique=False)
        batch_op.drop_index(NEW)
