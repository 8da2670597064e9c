"""message_parts: index (smsc_message_id, id) instead of (smsc_message_id), so a receipt's
"latest part with this SMSC id" is one index lookup; PostgreSQL scanned the primary key backwards

Revision ID: f2b7d9e1c3a4
Revises: e6a2c4d8f0b1
Create Date: 2026-12-06 18:20:00.000000
"""

import sqlalchemy as sa
from alembic import context, op

# revision identifiers, used by Alembic.
revision = "f2b7d9e1c3a4"
down_revision = "e6a2c4d8f0b1"
branch_labels = None
depends_on = None

NEW, OLD = "ix_message_parts_smsc_message_id_id", "ix_message_parts_smsc_message_id"


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
        # Without blocking the workers' writes to message_parts while it builds (a large table):
        # CONCURRENTLY runs outside a transaction.
        with op.get_context().autocommit_block():
            # A concurrent build that was interrupted leaves the index INVALID (kept up to date,
            # never read) and the revision unrecorded: build it again rather than fail on it or
            # take it for done (as f1d7c3a9e5b2). The old index may be gone already if the run was
            # stopped between the drop and the revision's record.
            # (`--sql` has no database to ask: the script drops whatever an interrupted run left.)
            if context.is_offline_mode() or _invalid(NEW):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEW}")
            op.create_index(NEW, "message_parts", ["smsc_message_id", "id"], postgresql_concurrently=True, if_not_exists=True)
            op.drop_index(OLD, table_name="message_parts", postgresql_concurrently=True, if_exists=True)
        return
    with op.batch_alter_table("message_parts", schema=None) as batch_op:
        batch_op.create_index("ix_message_parts_smsc_message_id_id", ["smsc_message_id", "id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_message_parts_smsc_message_id"))


def downgrade():
    with op.batch_alter_table("message_parts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_parts_smsc_message_id"), ["smsc_message_id"], unique=False)
        batch_op.drop_index("ix_message_parts_smsc_message_id_id")
