"""logins: a session nonce on staff users and sub-accounts, part of the session's user id and
changed at logout and at a password change, so a copy of an old session cookie opens nothing

Revision ID: c2e8a6f4d0b3
Revises: b9d3f5a7c1e8
Create Date: 2026-12-06 22:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "c2e8a6f4d0b3"
down_revision = "b9d3f5a7c1e8"
branch_labels = None
depends_on = None

TABLES = ("staff_users", "sub_accounts")


def upgrade():
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("session_nonce", sa.String(length=32), server_default="", nullable=False))


def downgrade():
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("session_nonce")
