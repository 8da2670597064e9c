"""contracts keep the provider's bank they printed (in their terms), so that receipts are booked
to it whatever the provider's details say later: the contracts issued before are given the bank
of their template's details, the only ones any contract could print until then

Revision ID: e8c2a4b6d1f3
Revises: d5f1b3a7c9e2
Create Date: 2026-12-06 23:00:00.000000
"""

import json
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

# revision identifiers, used by Alembic.
revision = "e8c2a4b6d1f3"
down_revision = "d5f1b3a7c9e2"
branch_labels = None
depends_on = None

TEMPLATES = Path(__file__).resolve().parents[3] / "contracts_templates"
CONTRACTS = sa.table("contracts", sa.column("id", sa.Integer), sa.column("template_id", sa.String), sa.column("terms", sa.JSON))


def _template_bank(template_id: str) -> dict[str, str]:
    try:
        provider = json.loads((TEMPLATES / template_id / "template.json").read_text(encoding="utf-8")).get("provider", {})
    except (OSError, ValueError):  # a template removed since: its bank is unknown, receipts use RECEIVING_BANK
        return {}
    return {"provider_bank_name": provider.get("bank_name", ""), "provider_bank_account": provider.get("bank_account", "")}


def upgrade():
    if context.is_offline_mode():
        # `--sql` (PostgreSQL only, see env.py) has no rows to read: the script gives each
        # template's contracts that bank itself, as below (terms are json, edited as jsonb).
        for template in sorted(path.parent.name for path in TEMPLATES.glob("*/template.json")):
            if bank := _template_bank(template):
                op.execute(
                    sa.text(
                        "UPDATE contracts SET terms = (CASE WHEN json_typeof(terms) = 'object' THEN terms::jsonb ELSE '{}'::jsonb END"
                        " || CAST(:bank AS jsonb))::json"
                        " WHERE template_id = :template AND NOT (json_typeof(terms) = 'object' AND terms::jsonb ? 'provider_bank_name')"
                    ).bindparams(bank=json.dumps(bank, ensure_ascii=False), template=template)
                )
        return
    bind = op.get_bind()
    banks: dict[str, dict[str, str]] = {}
    for row in bind.execute(sa.select(CONTRACTS.c.id, CONTRACTS.c.template_id, CONTRACTS.c.terms)).all():
        terms = dict(row.terms or {})
        if "provider_bank_name" in terms:
            continue
        bank = banks.setdefault(row.template_id, _template_bank(row.template_id))
        if bank:
            bind.execute(sa.update(CONTRACTS).where(CONTRACTS.c.id == row.id).values(terms={**terms, **bank}))


def downgrade():
    pass  # the kept bank is harmless to the code before it
