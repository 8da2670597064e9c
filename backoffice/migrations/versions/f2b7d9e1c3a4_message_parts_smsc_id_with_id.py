"""message_parts: index (smsc_message_id, id) instead of (smsc_message_id), so a receipt's
"latest part with this SMSC id" is one index lookup; PostgreSQL scanned the primary key backwards

Revision ID: f2b7d9e1c3a4
Revises: e6a2c4d8f0b1
Create Date: 2026-12-06 18:20:00.000000
"""

from alembic import op

from backoffice.migrations.concurrent_index import build_index_concurrently

# revision identifiers, used by Alembic.
revision = "f2b7d9e1c3a4"
down_revision = "e6a2c4d8f0b1"
branch_labels = None
depends_on = None

NEW, OLD = "ix_message_parts_smsc_message_id_id", "ix_message_parts_smsc_message_id"


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        # Without blocking the workers' writes to message_parts while it builds (a large table):
        # CONCURRENTLY runs outside a transaction.
        with op.get_context().autocommit_block():
            build_index_concurrently(NEW, "message_parts", ["smsc_message_id", "id"])
            # (the old index may be gone already if a run stopped between the drop and the record)
            op.drop_index(OLD, table_name="message_parts", postgresql_concurrently=True, if_exists=True)
        return
    with op.batch_alter_table("message_parts", schema=None) as batch_op:
        batch_op.create_index("ix_message_parts_smsc_message_id_id", ["smsc_message_id", "id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_message_parts_smsc_message_id"))


def downgrade():
    with op.batch_alter_table("message_parts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_parts_smsc_message_id"), ["smsc_message_id"], unique=False)
        batch_op.drop_index("ix_message_parts_smsc_message_id_id")
