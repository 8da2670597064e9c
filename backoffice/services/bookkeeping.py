"""The application's side of the books: record ledger events in the business transaction
(the outbox), post the pending ones through `ledger/`, and reconcile database and books."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import ledger
from backoffice.clock import utcnow
from backoffice.errors import ValidationFailed
from backoffice.models import EnterpriseAccount, LedgerEvent
from ledger import chart


def _jsonable(value: Any) -> Any:
    """Decimals as exact strings, at any depth (JSON has no decimal type; floats would round)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def record_event(session: Session, kind: str, occurred_on: date, payload: dict[str, Any], event_id: str | None = None) -> LedgerEvent:
    """Add a money event to the outbox; its id makes posting it twice a no-op."""
    event = LedgerEvent(
        event_id=event_id or uuid.uuid4().hex,
        kind=kind,
        occurred_on=occurred_on,
        payload=_jsonable(payload),
    )
    try:  # refuse now, in the business transaction, not later when posting
        ledger.entries_for(ledger.Event(event.event_id, kind, occurred_on, event.payload))
    except ledger.PostingRuleError as bad:
        raise ValidationFailed({"ledger": f"无法记账：{bad}"}) from None
    session.add(event)
    return event


def as_ledger_event(e: LedgerEvent) -> ledger.Event:
    """The outbox row as the plain event `ledger/` posts."""
    return ledger.Event(e.event_id, e.kind, e.occurred_on, e.payload)


def post_pending(session: Session, books_root: Path) -> int:
    """Post every unposted event to the books, in the order they are taken, and note that
    order (`posted_seq`) so a rebuild replays it exactly; returns how many were new. Safe to run
    any time and from several processes: the books' lock serialises posters, and the books skip
    ids they already hold (a crash after writing but before this commit)."""
    books = ledger.Books(books_root)
    with books.locked():
        pending = session.scalars(sa.select(LedgerEvent).where(LedgerEvent.posted_at.is_(None)).order_by(LedgerEvent.id)).all()
        if not pending:
            session.rollback()
            return 0
        posted = books.post_locked([as_ledger_event(e) for e in pending])
        seq = session.scalar(sa.select(sa.func.max(LedgerEvent.posted_seq))) or 0
        now = utcnow()
        for offset, e in enumerate(pending, start=1):
            e.posted_at, e.posted_seq = now, seq + offset
        session.commit()
    return len(posted)


def rebuild_books(session: Session, target: Path) -> int:
    """Write the books afresh under `target`, a new folder of the caller's own, from every posted
    event, in posting order. To replace the live books, hold their lock around this and the swap."""
    events = session.scalars(sa.select(LedgerEvent).where(LedgerEvent.posted_seq.is_not(None)).order_by(LedgerEvent.posted_seq)).all()
    # No writer but this one knows the folder: its lock would only leave a lock file behind.
    ledger.Books(target).post_locked([as_ledger_event(e) for e in events])
    return len(events)


def expected_balances(session: Session) -> dict[str, Decimal]:
    """What the books must say for each customer, from the database (beancount's signs:
    liabilities negative): spendable balance = prepaid liability; contracted credit not yet
    paid and what the customer owes for it, from the account's own columns."""
    from backoffice.models import UsageDay
    from backoffice.models.base import Money

    expected: dict[str, Decimal] = {}
    # Charges accepted today are booked once the day is over (one transaction per day): what the
    # open running totals changed, read in the same statement as the balances (one snapshot:
    # an intake committing between two reads made a false difference).
    signed = sa.case((UsageDay.kind == "refund", -UsageDay.amount), else_=UsageDay.amount)
    unbooked = sa.type_coerce(  # in Money's stored units (0.0001 元), back as a Decimal
        sa.select(sa.func.coalesce(sa.func.sum(sa.type_coerce(signed, sa.BigInteger)), 0))
        .where(UsageDay.account_id == EnterpriseAccount.id, UsageDay.event_id.is_(None))
        .scalar_subquery(),
        Money(),
    )
    rows = session.execute(
        sa.select(
            EnterpriseAccount.code, EnterpriseAccount.balance, EnterpriseAccount.contracted_credit, EnterpriseAccount.receivable, unbooked
        )
    )
    for code, balance, contracted, receivable, charged in rows:
        expected[chart.prepaid(code)] = -(balance + Decimal(charged or 0))
        expected[chart.contracted(code)] = -contracted
        expected[chart.receivable(code)] = receivable
    return expected


@dataclass(frozen=True)
class LedgerReport:
    errors: list[str]
    differences: list[ledger.check.Difference]
    pending_events: int
    balances: dict[str, Decimal] = field(default_factory=dict)  # every account's, from the check
    warnings: list[str] = field(default_factory=list)  # what the check went without (a full or read-only disk); not a failure

    @property
    def ok(self) -> bool:
        return not self.errors and not self.differences and not self.pending_events


def check_and_reconcile(session: Session, books_root: Path) -> LedgerReport:
    main = books_root / ledger.books.MAIN
    database: dict[str, Any] = {}

    def read_database() -> None:
        """The database as the books were read (under their lock): a posting can come between
        the check's read of the files and its end, and a database read then counted it."""
        unsaved = bool(session.new or session.dirty or session.deleted)  # (callers have none; never lose them)
        if not unsaved:
            session.rollback()  # a fresh read, not a snapshot taken before the lock
        database["pending"] = session.scalar(sa.select(sa.func.count()).select_from(LedgerEvent).where(LedgerEvent.posted_at.is_(None)))
        database["expected"] = expected_balances(session)
        if not unsaved:
            session.rollback()  # and no read transaction held through beancount's load

    errors, balances, warnings = ledger.check.inspect_books(main, while_locked=read_database) if main.exists() else ([], {}, [])
    if not database:
        read_database()
    # Reconcile even when the checker complains: the differing accounts point at the problem.
    diffs = ledger.reconcile(database["expected"], balances)
    return LedgerReport(errors, diffs, int(database["pending"] or 0), balances, warnings)
