"""Property: whatever sequence of business events happens (contracts, receipts, usage,
refunds, reversals, balance assertions), after each one the books pass beancount's checker,
reconcile with the database, balance (debits = credits), and rebuild identically from the events."""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backoffice.errors import DomainError
from backoffice.extensions import db
from backoffice.models import EnterpriseAccount, LedgerEvent
from backoffice.services.accounts import allocate_account_code, open_account
from backoffice.services.bookkeeping import check_and_reconcile, post_pending, rebuild_books, record_event
from backoffice.services.credit import UsageLine, charge_usage, credit_receipt, record_balance_assertions, refund_usage, reverse_event
from ledger import ledger_balances

pytestmark = pytest.mark.slow

START = date(2026, 11, 1)
CARRIERS = ["CMCC", "CUCC", "CTCC", "CBN"]
fen = st.integers(min_value=1, max_value=300_000).map(lambda n: Decimal(n) / 100)
tenth_fen = st.integers(min_value=0, max_value=50_000).map(lambda n: Decimal(n) / 10_000)

step = st.one_of(
    st.tuples(st.just("contract"), fen, st.sampled_from([Decimal(0), Decimal("300.00")])),
    st.tuples(st.just("receipt"), st.integers(0, 5), fen, st.sampled_from(["CMB", "ICBC"])),
    st.tuples(st.just("usage"), st.integers(0, 5), st.sampled_from(CARRIERS), st.integers(1, 5000), tenth_fen),
    st.tuples(st.just("refund"), st.integers(0, 5), st.sampled_from(CARRIERS), st.integers(1, 50), tenth_fen),
    st.tuples(st.just("reverse"), st.integers(0, 50)),
    st.tuples(
        st.just("assert"),
    ),
)


def contract_credit(n: int, credit: Decimal, fee: Decimal) -> None:
    """What issuing a contract does to accounts and books (documents are tested elsewhere)."""
    code = allocate_account_code(db.session)
    account, _ = open_account(db.session, code=code, customer_name=f"客户{n}", price_per_message=Decimal("0.035"), sub_account_count=0)
    account.contracted_credit, account.receivable = credit, credit + fee
    payload = {"account_code": code, "customer_name": f"客户{n}", "contract_no": f"HT-P-{n}", "initial_amount": credit, "opening_fee": fee}
    record_event(db.session, "contract_credit", START, payload, event_id=f"contract-credit-{n}")
    db.session.commit()


def assert_books_sound(app: Flask) -> None:
    root = Path(app.config["LEDGER_PATH"])
    report = check_and_reconcile(db.session, root)
    assert report.ok, report
    assert sum(ledger_balances(root / "main.beancount").values(), Decimal(0)) == 0  # debits = credits
    with tempfile.TemporaryDirectory() as rebuilt:
        rebuild_books(db.session, Path(rebuilt))
        names = {p.relative_to(root).as_posix() for p in root.rglob("*.beancount") if ".check" not in p.parts}
        assert names == {p.relative_to(rebuilt).as_posix() for p in Path(rebuilt).rglob("*.beancount")}
        for name in names:
            assert filecmp.cmp(root / name, Path(rebuilt) / name, shallow=False), name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=14))
def test_books_stay_sound_after_every_event(app: Flask, steps: list[tuple]) -> None:
    # hypothesis reuses the function-scoped app across examples: start each from empty.
    db.session.remove()
    db.drop_all()
    db.create_all()
    shutil.rmtree(Path(app.config["LEDGER_PATH"]), ignore_errors=True)
    contract_credit(-1, Decimal("1750.00"), Decimal(0))
    day = START
    for n, (kind, *args) in enumerate(steps):
        day = min(day + timedelta(days=n % 2), date(2026, 11, 23))
        codes = list(db.session.scalars(sa.select(EnterpriseAccount.code).order_by(EnterpriseAccount.id)))
        try:
            if kind == "contract":
                contract_credit(n, args[0], args[1])
            elif kind == "receipt":
                credit_receipt(
                    db.session,
                    account_code=codes[args[0] % len(codes)],
                    amount=args[1],
                    bank=args[2],
                    bank_ref=f"REF{n}",
                    received_on=day,
                    actor="p",
                )
            elif kind in ("usage", "refund"):
                line = UsageLine(codes[args[0] % len(codes)], args[1], args[2], args[3])
                (charge_usage if kind == "usage" else refund_usage)(db.session, day, [line], event_id=f"{kind}-{n}")
            elif kind == "reverse":
                candidates = list(
                    db.session.scalars(
                        sa.select(LedgerEvent.event_id).where(LedgerEvent.kind.in_(["receipt", "usage", "refund"])).order_by(LedgerEvent.id)
                    )
                )
                if not candidates:
                    continue
                reverse_event(db.session, candidates[args[0] % len(candidates)], reason="随机冲销", on=day, actor="p")
            else:
                db.session.commit()  # the assertions are read in a snapshot of their own (begin_snapshot)
                record_balance_assertions(db.session, day)
            db.session.commit()
        except DomainError:
            db.session.rollback()  # refused (insufficient balance, already reversed…): nothing changed
        post_pending(db.session, Path(app.config["LEDGER_PATH"]))
        assert_books_sound(app)
