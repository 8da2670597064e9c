"""messages: the platform's own notices to a customer (invoices, renewal, expiry: free messages of
the customer's account, request source 'notice') marked charge_kind 'notice', as they are queued
since, so that the customer's GET /messages and portal leave them out and a reply to the shared
address is not given to the account for them

Revision ID: a4e8c2f6d0b9
Revises: d8e4a2c6f0b3
Create Date: 2026-12-12 10:00:00.000000

One UPDATE through the notice requests (a few per account; messages.request_id is indexed), the
same online and in `--sql`.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "a4e8c2f6d0b9"
down_revision = "d8e4a2c6f0b3"
branch_labels = None
depends_on = None

NOTICES = "SELECT id FROM send_requests WHERE source = 'notice'"


def upgrade():
    op.execute(f"UPDATE messages SET charge_kind = 'notice' WHERE charge_kind IS NULL AND charge = 0 AND request_id IN ({NOTICES})")


def downgrade():
    op.execute(f"UPDATE messages SET charge_kind = NULL WHERE charge_kind = 'notice' AND request_id IN ({NOTICES})")
