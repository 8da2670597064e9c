"""Every test of tests/backoffice/test_finance.py, on PostgreSQL (see conftest)."""

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskCliRunner

from backoffice.extensions import db
from tests.backoffice.test_finance import *  # noqa: F403
from tests.backoffice.test_finance import run
from tests.conftest import make_contract


def test_an_account_closed_while_its_receipt_is_being_confirmed_is_not_credited(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the closed-account check read the row unlocked, and the credit did not
    look again under its lock, so a forfeit committing in between left the receipt's money on the
    closed account. The credit now refuses it, and nothing of the confirmation stays. (PostgreSQL
    only: SQLite has one writer, the other connection could not commit in that window.)"""
    from backoffice.models import EnterpriseAccount, Receipt
    from backoffice.services import receipts as receipt_service

    account = make_contract(app, "enterprise_sms_center", customer__name="甲科技有限公司").contract.account
    code = account.code
    exit_code, out = run(
        runner, "finance", "receipt", "--account", code, "--amount", "900.00", "--bank-ref", "K9", "--date", "2026-11-23", "--json"
    )
    assert exit_code == 0, out
    receipt_id = out["id"]
    real = receipt_service.credit_receipt

    def closed_meanwhile(*args: Any, **kwargs: Any) -> Any:  # another user's forfeit commits in this window
        with db.engine.connect() as other:
            other.execute(sa.text("UPDATE enterprise_accounts SET status = 'closed' WHERE code = :c"), {"c": code})
            other.commit()
        return real(*args, **kwargs)

    monkeypatch.setattr(receipt_service, "credit_receipt", closed_meanwhile)
    exit_code, out = run(runner, "finance", "confirm", str(receipt_id), "--json")
    assert exit_code != 0 and f"账户 {code}（甲科技有限公司）已关闭，不能入账" in out["error"]["message"], out
    db.session.expire_all()
    closed = db.session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code))
    assert closed.status == "closed" and closed.balance == 0 and db.session.get(Receipt, receipt_id).status == "pending"
