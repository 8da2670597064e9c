"""Two finance users confirm two transfers of one customer at the same moment (PostgreSQL: read
committed, two connections). Before the fix each read what the customer still owed before
the other committed, the second's guarded UPDATE then matched no row, and its event was booked
anyway, so the books held a credit the database never got."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from backoffice.extensions import db
from backoffice.models import EnterpriseAccount
from backoffice.services.credit import credit_receipt
from tests.backoffice.test_books import DAY, settle
from tests.conftest import make_contract


def _session() -> Session:
    session = Session(db.engine)
    session.execute(sa.text("SET lock_timeout = '10s'"))
    session.commit()
    return session


@pytest.fixture
def contract(app: Flask):  # type: ignore[no-untyped-def]
    """004: 50,000 messages at 0.035 = 1,750.00 元, unpaid."""
    return make_contract(app, "sms_business_service")


def test_two_receipts_of_one_account_confirmed_at_once_are_both_credited(app: Flask, contract) -> None:  # type: ignore[no-untyped-def]
    code = contract.contract.account.code  # 1,750.00 owed under the contract
    first, second = _session(), _session()
    credit_receipt(first, account_code=code, amount=Decimal("1000.00"), bank="CMB", bank_ref="P1", received_on=DAY, actor="finance:a")
    errors: list[BaseException] = []
    done = threading.Event()

    def other_finance_user() -> None:
        with app.app_context():
            try:
                credit_receipt(
                    second, account_code=code, amount=Decimal("1000.00"), bank="CMB", bank_ref="P2", received_on=DAY, actor="finance:b"
                )
                second.commit()
            except BaseException as error:  # noqa: BLE001 - reported below
                second.rollback()
                errors.append(error)
            finally:
                done.set()

    thread = threading.Thread(target=other_finance_user)
    thread.start()
    time.sleep(0.5)
    assert not done.is_set()  # it waits for the first confirmation's lock on the account
    first.commit()
    thread.join(20)
    first.close()
    second.close()
    assert errors == []
    db.session.expire_all()
    account = db.session.scalars(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code)).one()
    assert (account.balance, account.contracted_credit, account.receivable) == (Decimal("2000.00"), 0, 0)
    settle(app)  # the books agree with the database to the fen
