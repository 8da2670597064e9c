"""forbidden keywords: a one-row count of the list's changes, kept by triggers, which intake reads
to know its compiled matcher is current (it counted the whole list on every request: 0.4 ms at
10,000 keywords)

Revision ID: c2e4a6b8d0f1
Revises: a6c8e0b2d4f7
Create Date: 2026-12-08 02:30:00.000000

The triggers are the model's (backoffice.models.messaging.KEYWORDS_VERSION_TRIGGERS), which also
attaches them to `create_all`. The count starts at the list's length: any value does, as each
process compares it with the one it compiled at.
"""

import sqlalchemy as sa
from alembic import op

from backoffice.models.messaging import KEYWORDS_VERSION_TRIGGERS, KEYWORDS_VERSION_UNTRIGGERS

# revision identifiers, used by Alembic.
revision = "c2e4a6b8d0f1"
down_revision = "a6c8e0b2d4f7"
branch_labels = None
depends_on = None


def _run(statements):
    dialect = op.get_context().dialect.name
    if dialect not in statements:
        raise NotImplementedError(f"no keyword list triggers for the {dialect} dialect (SQLite and PostgreSQL are supported)")
    for statement in statements[dialect]:
        op.execute(statement)


def upgrade():
    op.create_table(
        "forbidden_keywords_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("changes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forbidden_keywords_version")),
    )
    op.execute("INSERT INTO forbidden_keywords_version (id, changes) SELECT 1, COUNT(*) FROM forbidden_keywords")
    _run(KEYWORDS_VERSION_TRIGGERS)


def downgrade():
    _run(KEYWORDS_VERSION_UNTRIGGERS)
    op.drop_table("forbidden_keywords_version")
