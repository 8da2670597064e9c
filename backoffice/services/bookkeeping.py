"""The application's side of the books: record ledger events in the business transaction
(the outbox), post the pending ones through `ledger/`, and reconcile database and books."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import ledger
from backoffice.clock import utcnow
from backoffice.models import Contract, EnterpriseAccount, LedgerEvent
from ledger import chart


def record_event(session: Session, kind: str, occurred_on: date, payload: dict[str, Any], event_id: str | None = None) -> LedgerEvent:
    """Add a money event to the outbox; its id makes posting it twice a no-op."""
    event = LedgerEvent(
        event_id=event_id or uuid.uuid4().hex,
        kind=kind,
        occurred_on=occurred_on,
        payload={k: str(v) if isinstance(v, Decimal) else v for k, v in payload.items()},
    )
    ledger.transaction_for(ledger.Event(event.event_id, kind, occurred_on, event.payload))  # refuse now, not later
    session.add(event)
    return event


def post_pending(session: Session, books_root: Path) -> int:
    """Post every unposted event to the books and mark it posted; returns how many were new.
    Safe to run any time and from several processes: the books skip ids they already hold."""
    pending = session.scalars(sa.select(LedgerEvent).where(LedgerEvent.posted_at.is_(None)).order_by(LedgerEvent.id)).all()
    if not pending:
        return 0
    books = ledger.Books(books_root)
    posted = books.post(ledger.Event(e.event_id, e.kind, e.occurred_on, e.payload) for e in pending)
    now = utcnow()
    for e in pending:
        e.posted_at = now
    return len(posted)


def expected_balances(session: Session) -> dict[str, Decimal]:
    """What the books must say for each customer, from the database (beancount's signs:
    liabilities negative): the spendable balance is the prepaid liability; contracted credit not
    yet paid, and what the customer owes for it, come from the contracts."""
    expected: dict[str, Decimal] = {}
    for code, balance in session.execute(sa.select(EnterpriseAccount.code, EnterpriseAccount.balance)):
        expected[chart.prepaid(code)] = -balance
        expected[chart.contracted(code)] = Decimal(0)
        expected[chart.receivable(code)] = Decimal(0)
    contracted = session.execute(
        sa.select(EnterpriseAccount.code, Contract.initial_amount, Contract.opening_fee).join(
            Contract, Contract.account_id == EnterpriseAccount.id
        )
    )
    for code, credit, fee in contracted:
        expected[chart.contracted(code)] -= credit
        expected[chart.receivable(code)] += credit + fee
    return expected


@dataclass(frozen=True)
class LedgerReport:
    errors: list[str]
    differences: list[ledger.check.Difference]
    pending_events: int

    @property
    def ok(self) -> bool:
        return not self.errors and not self.differences and not self.pending_events


def check_and_reconcile(session: Session, books_root: Path) -> LedgerReport:
    main = books_root / ledger.books.MAIN
    errors = ledger.check_books(main) if main.exists() else []
    pending = session.scalar(sa.select(sa.func.count()).select_from(LedgerEvent).where(LedgerEvent.posted_at.is_(None))) or 0
    balances = ledger.ledger_balances(main) if main.exists() and not errors else {}
    diffs = ledger.reconcile(expected_balances(session), balances) if not errors else []
    return LedgerReport(errors, diffs, int(pending))
