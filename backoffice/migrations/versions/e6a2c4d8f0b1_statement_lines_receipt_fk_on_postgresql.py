"""statement_lines.receipt_id → receipts.id on PostgreSQL: the finance migration declared it
`use_alter` (the two tables refer to each other), which `op.create_table` leaves out; SQLite
got it inline. Found by the schema test on PostgreSQL.

Revision ID: e6a2c4d8f0b1
Revises: d3f9b1c7e5a2
Create Date: 2026-12-06 17:50:00.000000
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "e6a2c4d8f0b1"
down_revision = "d3f9b1c7e5a2"
branch_labels = None
depends_on = None

NAME = "fk_statement_lines_receipt_id_receipts"


def upgrade():
    if op.get_context().dialect.name != "sqlite":
        op.create_foreign_key(op.f(NAME), "statement_lines", "receipts", ["receipt_id"], ["id"])


def downgrade():
    if op.get_context().dialect.name != "sqlite":
        op.drop_constraint(op.f(NAME), "statement_lines", type_="foreignkey")
