"""Charging per request, booking per day: the books follow the database through the day
(reconciliation adds back what is not booked yet) and after the day is booked."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from backoffice.extensions import db
from backoffice.models import LedgerEvent, UsageDay
from backoffice.services.accounts import get_account
from backoffice.services.bookkeeping import check_and_reconcile, post_pending
from backoffice.services.credit import InsufficientBalance, credit_receipt, record_balance_assertions
from backoffice.services.usage import book_usage, charge_messages, move_usage_carrier, refund_messages, unbooked_effect
from tests.conftest import make_contract


def _funded(app: Flask, amount: str = "100.00") -> str:
    code = make_contract(app, "enterprise_sms_center").contract.account.code
    credit_receipt(
        db.session, account_code=code, amount=Decimal(amount), bank="CMB", bank_ref=f"r-{code}", received_on=date(2026, 11, 21), actor="t"
    )
    db.session.commit()
    return code


def _books_ok(app: Flask) -> None:
    post_pending(db.session, Path(app.config["LEDGER_PATH"]))
    report = check_and_reconcile(db.session, Path(app.config["LEDGER_PATH"]))
    assert report.ok, report


def test_charges_accumulate_per_day_and_are_booked_as_one_event_per_day(app: Flask) -> None:
    with app.app_context():
        code = _funded(app)
        account = get_account(db.session, code)
        day = date(2026, 11, 22)
        assert charge_messages(db.session, account, day, [("cmcc", 10, Decimal("0.35")), ("CUCC", 2, Decimal("0.07"))]) == Decimal("0.42")
        charge_messages(db.session, account, day, [("cmcc", 1, Decimal("0.035"))])
        refund_messages(db.session, account.id, date(2026, 11, 23), "cmcc", 1, Decimal("0.035"))
        db.session.commit()
        db.session.refresh(account)
        assert account.balance == Decimal("99.58")
        assert unbooked_effect(db.session) == {code: Decimal("-0.42")}
        _books_ok(app)  # nothing booked yet, reconciliation adds the running totals back
        db.session.commit()  # the assertions are read in a snapshot of their own (begin_snapshot)
        record_balance_assertions(db.session, date(2026, 11, 23))  # books the 22nd first
        db.session.commit()
        _books_ok(app)
        usage = db.session.scalar(sa.select(LedgerEvent).where(LedgerEvent.event_id == "usage-day-2026-11-22"))
        assert usage is not None and {(x["carrier"], x["messages"]) for x in usage.payload["lines"]} == {("CMCC", 11), ("CUCC", 2)}
        assert unbooked_effect(db.session) == {code: Decimal("0.035")}  # today's refund, still open


def test_a_charge_for_a_day_already_booked_is_booked_by_a_second_event(app: Flask) -> None:
    with app.app_context():
        code = _funded(app)
        account = get_account(db.session, code)
        day = date(2026, 11, 22)
        charge_messages(db.session, account, day, [("cmcc", 1, Decimal("0.035"))])
        book_usage(db.session, before=date(2026, 11, 23))
        charge_messages(db.session, account, day, [("ctcc", 1, Decimal("0.035"))])  # committed just after midnight
        refund_messages(db.session, account.id, date(2026, 11, 23), "cmcc", 1, Decimal("0.035"))
        book_usage(db.session, before=date(2026, 11, 24))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UsageDay).where(UsageDay.event_id.is_(None))) == 0
        ids = set(db.session.scalars(sa.select(LedgerEvent.event_id).where(LedgerEvent.kind.in_(("usage", "refund")))))
        assert ids == {"usage-day-2026-11-22", "usage-day-2026-11-22-2", "refund-day-2026-11-23"}
        _books_ok(app)


def test_two_overlapping_bookings_of_a_day_book_its_rows_once(app: Flask) -> None:
    """The 00:10 job lists the open rows; `ledger assert-balances` books them and commits; the
    job must not book them again as 'usage-day-D-2' (found by a review)."""
    with app.app_context():
        code = _funded(app)
        charge_messages(db.session, get_account(db.session, code), date(2026, 11, 22), [("cmcc", 10, Decimal("0.35"))])
        db.session.commit()
        fired = []

        def assert_balances_meanwhile(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if fired or not statement.lstrip().upper().startswith("SELECT") or "usage_days" not in statement:
                return
            fired.append(statement)  # once, after the job's first read of the usage rows
            with Session(db.engine) as other:
                record_balance_assertions(other, date(2026, 11, 23))
                other.commit()

        sa.event.listen(db.engine, "after_cursor_execute", assert_balances_meanwhile)
        try:
            book_usage(db.session, before=date(2026, 11, 23))
        finally:
            sa.event.remove(db.engine, "after_cursor_execute", assert_balances_meanwhile)
        db.session.commit()
        assert fired
        ids = list(db.session.scalars(sa.select(LedgerEvent.event_id).where(LedgerEvent.kind == "usage")))
        assert ids == ["usage-day-2026-11-22"]
        _books_ok(app)


def test_a_request_the_balance_does_not_cover_changes_nothing(app: Flask) -> None:
    with app.app_context():
        code = _funded(app, "1.00")
        account = get_account(db.session, code)
        with pytest.raises(InsufficientBalance, match="余额不足"):
            charge_messages(db.session, account, date(2026, 11, 23), [("cmcc", 20, Decimal("0.70")), ("ctcc", 9, Decimal("0.315"))])
        db.session.rollback()
        assert get_account(db.session, code).balance == Decimal("1.00")
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UsageDay)) == 0
        _books_ok(app)


def test_a_ported_number_moves_its_charge_to_the_reported_carrier_while_the_day_is_open(app: Flask) -> None:
    with app.app_context():
        code = _funded(app)
        account = get_account(db.session, code)
        day = date(2026, 11, 22)
        charge_messages(db.session, account, day, [("cmcc", 2, Decimal("0.07"))])
        assert move_usage_carrier(db.session, account.id, day, "cmcc", "cucc", Decimal("0.035"))
        assert not move_usage_carrier(db.session, account.id, day, "cmcc", "cmcc", Decimal("0.035"))  # the same carrier
        assert not move_usage_carrier(db.session, account.id, day, "ctcc", "cucc", Decimal("0.035"))  # nothing charged there
        db.session.commit()
        totals = {u.carrier: (u.messages, u.amount) for u in db.session.scalars(sa.select(UsageDay))}
        assert totals == {"CMCC": (1, Decimal("0.035")), "CUCC": (1, Decimal("0.035"))}
        assert get_account(db.session, code).balance == Decimal("99.93")  # the balance does not move
        book_usage(db.session, before=date(2026, 11, 23))
        db.session.commit()
        usage = db.session.scalar(sa.select(LedgerEvent).where(LedgerEvent.event_id == "usage-day-2026-11-22"))
        assert usage is not None and {(x["carrier"], x["messages"]) for x in usage.payload["lines"]} == {("CMCC", 1), ("CUCC", 1)}
        # Once the day is booked its income per carrier stays as booked.
        assert not move_usage_carrier(db.session, account.id, day, "cmcc", "ctcc", Decimal("0.035"))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UsageDay).where(UsageDay.event_id.is_(None))) == 0
        _books_ok(app)


def test_a_charge_that_the_balance_covers_only_until_another_commits_waits_and_is_refused(app: Flask) -> None:
    """DESIGN invariant 3 tested on the debit itself, not through intake (found by mutation
    testing: the debit made read-then-write in Python passed every test, intake's own locks
    hiding it). Two transactions each charge 70 of 100: the second waits for the first's lock
    and, once it commits, is refused; with read-then-write it would have read 100 and written
    30 over the first's 30, a charge lost."""
    import threading

    code = _funded(app, "100.00")
    account = get_account(db.session, code)
    day = date(2026, 11, 23)
    first, second = Session(db.engine), Session(db.engine)
    outcome: list[str] = []

    def other() -> None:
        try:
            charge_messages(second, account, day, [("CMCC", 1000, Decimal("70.00"))])
            second.commit()
            outcome.append("charged")
        except InsufficientBalance:
            second.rollback()
            outcome.append("refused")
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            second.rollback()
            outcome.append(repr(error))

    try:
        assert charge_messages(first, account, day, [("CMCC", 1000, Decimal("70.00"))]) == Decimal("70.00")
        waiting = threading.Thread(target=other)
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive(), f"the second charge did not wait for the first: {outcome}"
        first.commit()
        waiting.join(timeout=30)
        assert outcome == ["refused"]
    finally:
        first.close()
        second.close()
    db.session.expire_all()
    assert get_account(db.session, code).balance == Decimal("30.00")
    assert db.session.scalar(sa.select(sa.func.sum(UsageDay.messages)).where(UsageDay.account_id == account.id)) == 1000
    _books_ok(app)
