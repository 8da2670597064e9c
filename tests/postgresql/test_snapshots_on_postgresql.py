"""Reads that must see the database as of one moment, on PostgreSQL (read committed: each
statement sees the latest commits). Found by a review: the nightly balance assertion read the
balances, the open running totals and the later events in separate statements; a charge
committed between them made the assertion wrong, and the books failed beancount's check for good."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

import backoffice.services.usage as usage
from backoffice.clock import local_today
from backoffice.extensions import db
from backoffice.models import EnterpriseAccount, LedgerEvent
from backoffice.services.bookkeeping import check_and_reconcile, post_pending
from backoffice.services.credit import record_balance_assertions
from backoffice.services.sql import begin_snapshot
from tests.backoffice.test_messaging import active_sender


def test_a_charge_committed_while_the_assertions_are_written_does_not_break_the_books(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    sender = active_sender(app)
    db.session.commit()
    real = usage.unbooked_effect

    def then_a_request_is_charged(session: Session) -> dict[str, Decimal]:
        effect = real(session)
        with Session(db.engine) as other:  # an API request on another connection, committed in between
            account = other.get(EnterpriseAccount, sender.account.id)
            assert account is not None
            usage.charge_messages(other, account, local_today(), [("CMCC", 1, Decimal("0.045"))])
            other.commit()
        return effect

    monkeypatch.setattr(usage, "unbooked_effect", then_a_request_is_charged)
    assert record_balance_assertions(db.session, local_today()) == 1
    db.session.commit()
    monkeypatch.setattr(usage, "unbooked_effect", real)
    (assertion,) = db.session.scalars(sa.select(LedgerEvent.payload).where(LedgerEvent.kind == "balance"))
    assert Decimal(assertion["amount"]) == 0  # the start of today, before the day's receipt and the charge (was 0.045)
    post_pending(db.session, Path(app.config["LEDGER_PATH"]))
    report = check_and_reconcile(db.session, Path(app.config["LEDGER_PATH"]))
    assert report.ok, report


def test_a_snapshot_must_begin_with_its_transaction(app: Flask) -> None:
    db.session.execute(sa.select(1))
    with pytest.raises(RuntimeError, match="already begun"):
        begin_snapshot(db.session)
    db.session.rollback()
