"""staff users: a password an administrator set (a user made in the web, a reset) is changed at
the next login, as customers' initial passwords are

Revision ID: b9d3f5a7c1e4
Revises: e8c2a4b6d1f3
Create Date: 2026-12-07 01:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "b9d3f5a7c1e4"
down_revision = "e8c2a4b6d1f3"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("staff_users") as batch:
        batch.add_column(sa.Column("must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_column("must_change_password")
