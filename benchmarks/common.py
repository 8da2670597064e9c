"""What several benchmarks set up the same way."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def open_funded_account(app: Any, funds: Decimal) -> Any:
    """A real contract (template 000) whose credit is `funds` and paid, issued and confirmed the
    way the product does it; the rate limit raised so the limiter runs but never refuses."""
    from backoffice.cli import signing_identity
    from backoffice.extensions import db
    from backoffice.services.contract_fields import flatten, nest
    from backoffice.services.contracts import issue_contract
    from backoffice.services.credit import credit_receipt
    from backoffice.services.templates import get_template

    raw = flatten(get_template("enterprise_sms_center").sample)
    raw.update({"initial_messages": int(funds / Decimal("0.045")), "initial_amount": str(funds)})
    issued = issue_contract(
        db.session, "enterprise_sms_center", nest(raw), issued_by="bench",
        documents_root=Path(app.config["DOCUMENTS_PATH"]), signing_identity=signing_identity(app),
    )  # fmt: skip
    db.session.commit()
    account = issued.contract.account
    credit_receipt(
        db.session, account_code=account.code, amount=account.receivable, bank="CMB", bank_ref="BENCH-1",
        received_on=account.created_at.date(), actor="bench",
    )  # fmt: skip
    account.rate_limit_per_second = 1_000_000
    db.session.commit()
    return account
