"""reply fragments: the parts of a long reply wait for the rest in the database, not in a
worker's memory (a restart lost them; parts that came on two binds never met)

Revision ID: c3e5a7b9d1f2
Revises: b9d3f5a7c1e4
Create Date: 2026-12-07 04:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

import backoffice.models.base

# revision identifiers, used by Alembic.
revision = "c3e5a7b9d1f2"
down_revision = "b9d3f5a7c1e4"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "reply_fragments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sender", sa.String(length=24), nullable=False),
        sa.Column("destination", sa.String(length=24), nullable=False),
        sa.Column("reference", sa.Integer(), nullable=False),
        sa.Column("total", sa.SmallInteger(), nullable=False),
        sa.Column("seq", sa.SmallInteger(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("received_at", backoffice.models.base.UTCDateTime(), nullable=False),
        sa.Column("stored", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reply_fragments")),
        sa.UniqueConstraint("sender", "destination", "reference", "total", "seq", name="uq_reply_fragments_part"),
    )
    with op.batch_alter_table("reply_fragments") as batch:
        batch.create_index(batch.f("ix_reply_fragments_received_at"), ["received_at"], unique=False)


def downgrade():
    with op.batch_alter_table("reply_fragments") as batch:
        batch.drop_index(batch.f("ix_reply_fragments_received_at"))
    op.drop_table("reply_fragments")
