"""receipts: a bank reference is unique among live receipts whatever the bank (a form assumes the
bank from the account's contract, so one transfer entered for two accounts got two banks);
money events' ids (and audit entries naming them) up to 200 characters: a 64-character bank
reference did not fit

Revision ID: a7c1e9f3b5d2
Revises: f2b7d9e1c3a4
Create Date: 2026-12-06 18:30:00.000000
"""

import sqlalchemy as sa
from alembic import context, op

# revision identifiers, used by Alembic.
revision = "a7c1e9f3b5d2"
down_revision = "f2b7d9e1c3a4"
branch_labels = None
depends_on = None

LIVE = "status IN ('pending', 'approved', 'confirmed')"
EVENT_IDS = (
    ("ledger_events", "event_id", 64),
    ("ledger_events", "reverses", 64),
    ("receipts", "ledger_event_id", 120),
    ("usage_days", "event_id", 120),
    ("audit_log", "object_id", 64),
)
TWICE = f"SELECT bank_reference FROM receipts WHERE {LIVE} GROUP BY bank_reference HAVING count(*) > 1"  # noqa: S608
REFUSAL = "bank references live in more than one receipt (reject or reverse all but one first): "


def upgrade():
    if context.is_offline_mode():
        # `--sql` (PostgreSQL only, see env.py) has no rows to read: the script checks when it runs.
        op.execute(
            f"DO $$ BEGIN IF EXISTS ({TWICE}) THEN RAISE EXCEPTION USING MESSAGE = '{REFUSAL}'"
            f" || (SELECT string_agg(bank_reference, ', ') FROM ({TWICE} LIMIT 20) AS twice); END IF; END $$"
        )
    else:
        twice = op.get_bind().execute(sa.text(TWICE)).scalars().all()
        if twice:
            raise RuntimeError(f"{REFUSAL}{twice[:20]}")
    for table, column, length in EVENT_IDS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=length), type_=sa.String(length=200))
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index("uq_receipts_live_bank_reference")
        batch_op.create_index(
            "uq_receipts_live_bank_reference", ["bank_reference"], unique=True, sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE)
        )


def downgrade():
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index("uq_receipts_live_bank_reference")
        batch_op.create_index(
            "uq_receipts_live_bank_reference",
            ["bank", "bank_reference"],
            unique=True,
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )
    for table, column, length in EVENT_IDS:  # fails, as it should, while a longer id is stored (PostgreSQL)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=200), type_=sa.String(length=length))
