"""Charging messages against the prepaid balance, and booking the day's usage.

A request is charged with one atomic conditional debit of its total (the balance never goes
below zero, whatever the concurrency), and the charge is added to the day's running total per
account, carrier and kind in the same transaction. After the day ends the running totals are
booked as one ledger event per day and kind, with a posting per account and carrier. Until
then the books lag the database by exactly the unbooked totals, which reconciliation adds back
(`unbooked_effect`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.errors import ValidationFailed
from backoffice.models import EnterpriseAccount, LedgerEvent, UsageDay
from backoffice.models.base import Money
from backoffice.money import format_price
from backoffice.services.bookkeeping import record_event
from backoffice.services.bulk import Prepared
from backoffice.services.credit import InsufficientBalance, _adjust, lock_accounts

CARRIER_CODES = ("CMCC", "CUCC", "CTCC", "CBN")


_USAGE = UsageDay.__table__
_ACCOUNTS = EnterpriseAccount.__table__
# Built once: these run inside every intake request's write transaction, while the database's
# write lock is held, so not rebuilding them on each call shortens what every other request waits for.
# The open (not yet booked) running total of a day, account, carrier and kind.
_OPEN_TOTAL = (
    _USAGE.c.day == sa.bindparam("b_day"),
    _USAGE.c.account_id == sa.bindparam("b_account"),
    _USAGE.c.carrier == sa.bindparam("b_carrier"),
    _USAGE.c.kind == sa.bindparam("b_kind"),
    _USAGE.c.event_id.is_(None),
)
_BUMP = Prepared(
    sa.update(_USAGE)
    .where(*_OPEN_TOTAL)
    .values(messages=_USAGE.c.messages + sa.bindparam("b_messages"), amount=_USAGE.c.amount + sa.bindparam("b_amount", type_=Money()))
)
_DEBIT = Prepared(
    sa.update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == sa.bindparam("d_account"), _ACCOUNTS.c.balance >= sa.bindparam("d_amount", type_=Money()))
    .values(balance=_ACCOUNTS.c.balance - sa.bindparam("d_amount", type_=Money()))
)


def _accumulate(session: Session, account_id: int, day: date, carrier: str, kind: str, messages: int, amount: Decimal) -> None:
    params = {"b_day": day, "b_account": account_id, "b_carrier": carrier, "b_kind": kind, "b_messages": messages, "b_amount": amount}
    if _BUMP.rowcount(session, params):
        return
    try:
        with session.begin_nested():
            session.execute(
                sa.insert(_USAGE).values(day=day, account_id=account_id, carrier=carrier, kind=kind, messages=messages, amount=amount)
            )
    except sa.exc.IntegrityError:  # a concurrent first charge of the day created the row
        _BUMP.rowcount(session, params)


def _validate(lines: Sequence[tuple[str, int, Decimal]]) -> list[tuple[str, int, Decimal]]:
    clean = []
    for carrier, messages, amount in lines:
        code = carrier.upper()
        if code not in CARRIER_CODES:
            raise ValidationFailed({"carrier": f"未知运营商：{carrier}"})
        if messages < 0 or amount < 0 or not isinstance(amount, Decimal):
            raise ValidationFailed({"amount": "条数和金额不能为负数，金额须为 Decimal"})
        clean.append((code, int(messages), amount))
    return clean


class _Payer(Protocol):
    @property
    def id(self) -> int: ...


def charge_messages(
    session: Session, account: _Payer, day: date, lines: Sequence[tuple[str, int, Decimal]], *, kind: str = "usage"
) -> Decimal:
    """Debit the whole request at once — `lines` are (carrier, messages, amount) — or raise
    InsufficientBalance (402) and change nothing. Returns the total charged."""
    if kind not in ("usage", "refused_content_fee"):
        raise ValueError(f"not a charge kind: {kind}")
    clean = _validate(lines)
    total = sum((amount for _, _, amount in clean), Decimal(0))
    if total > 0 and not _DEBIT.rowcount(session, {"d_account": account.id, "d_amount": total}):
        balance = session.scalar(sa.select(_ACCOUNTS.c.balance).where(_ACCOUNTS.c.id == account.id)) or Decimal(0)
        raise InsufficientBalance(
            f"余额不足：本次需 {format_price(total)} 元，可用余额 {format_price(balance)} 元，未发送也未扣费"
        )  # (not rounded: 0.0451 > 0.0450)
    for carrier, messages, amount in clean:
        if messages or amount:
            _accumulate(session, account.id, day, carrier, kind, messages, amount)
    return total


def refund_messages(session: Session, account_id: int, day: date, carrier: str, messages: int, amount: Decimal) -> None:
    """Give back what a message the platform failed to deliver was charged (booked as a refund
    on `day`, the day the refund is made)."""
    ((code, count, value),) = _validate([(carrier, messages, amount)])
    if value <= 0:
        return
    _adjust(session, account_id, balance=value)
    _accumulate(session, account_id, day, code, "refund", count, value)


_MOVE_OUT = (
    sa.update(_USAGE)
    .where(*_OPEN_TOTAL, _USAGE.c.messages >= 1, _USAGE.c.amount >= sa.bindparam("b_amount", type_=Money()))
    .values(messages=_USAGE.c.messages - 1, amount=_USAGE.c.amount - sa.bindparam("b_amount", type_=Money()))
)


def move_usage_carrier(session: Session, account_id: int, day: date, old: str, new: str, amount: Decimal) -> bool:
    """Number portability: the SMSC reported that a message charged `amount` on `day` went to
    carrier `new`, not the `old` one its prefix named, so its charge moves to `new`'s total
    of the day (income and statistics per carrier); the account's balance does not change.
    Only while the day is open: a booked day stays as booked (False)."""
    ((old_code, _, value), (new_code, _, _)) = _validate([(old, 1, amount), (new, 1, amount)])
    if value <= 0 or old_code == new_code:
        return False
    # The account's row first, as intake and refunds take it before the usage rows they change
    # (intake in the order of the carriers' codes, which this move could otherwise cross).
    lock_accounts(session, {account_id})
    params = {"b_day": day, "b_account": account_id, "b_carrier": old_code, "b_kind": "usage", "b_amount": value}
    if not session.execute(_MOVE_OUT, params).rowcount:
        return False
    _accumulate(session, account_id, day, new_code, "usage", 1, value)
    return True


def unbooked_effect(session: Session) -> dict[str, Decimal]:
    """Per account code, what the charges and refunds not yet booked changed the spendable
    balance by (negative: charged). The books' prepaid balance equals -(balance - this)."""
    rows = session.execute(
        sa.select(EnterpriseAccount.code, UsageDay.kind, sa.func.sum(UsageDay.amount))
        .join(EnterpriseAccount, EnterpriseAccount.id == UsageDay.account_id)
        .where(UsageDay.event_id.is_(None))
        .group_by(EnterpriseAccount.code, UsageDay.kind)
    )
    effect: dict[str, Decimal] = defaultdict(Decimal)
    for code, kind, amount in rows:
        value = amount if isinstance(amount, Decimal) else Decimal(0)  # SUM keeps the column's Money type
        effect[code] += value if kind == "refund" else -value
    return dict(effect)


def book_usage(session: Session, before: date) -> list[LedgerEvent]:
    """Book every open running total of days before `before`: one ledger event per day and
    kind (usage, refund, refused_content_fee), a line per account and carrier.

    A day's rows are taken by one UPDATE that requires them still open and returns them as it
    took them, never from an earlier read: a booking that overlaps (`ledger assert-balances` while
    the 00:10 job runs) takes each row once, and the other books only what is left, if anything
    (found by a review: both booked the same rows, as 'usage-day-D' and 'usage-day-D-2')."""
    groups = session.execute(
        sa.select(_USAGE.c.day, _USAGE.c.kind)
        .distinct()
        .where(_USAGE.c.event_id.is_(None), _USAGE.c.day < before)
        .order_by(_USAGE.c.day, _USAGE.c.kind)
    ).all()
    events = []
    for day, kind in groups:
        prefix = f"{kind}-day-{day.isoformat()}"
        taken = session.scalar(sa.select(sa.func.count()).select_from(LedgerEvent).where(LedgerEvent.event_id.like(f"{prefix}%")))
        event_id = prefix if not taken else f"{prefix}-{taken + 1}"
        # PostgreSQL: a row another booking took but has not committed yet is waited for, then
        # left out (in assert-balances' snapshot the UPDATE is refused instead: nothing is booked,
        # the command can run again); SQLite: this statement takes the one write lock first.
        took = session.execute(
            sa.update(_USAGE)
            .where(_USAGE.c.day == day, _USAGE.c.kind == kind, _USAGE.c.event_id.is_(None))
            .values(event_id=event_id)
            .returning(_USAGE.c.account_id, _USAGE.c.carrier, _USAGE.c.messages, _USAGE.c.amount)
        ).all()
        if not took:
            continue  # another booking took the day's rows since they were listed
        accounts = sa.select(_ACCOUNTS.c.id, _ACCOUNTS.c.code).where(_ACCOUNTS.c.id.in_({r.account_id for r in took}))
        codes = dict(session.execute(accounts).all())
        lines = [
            {"account_code": codes[r.account_id], "carrier": r.carrier, "messages": r.messages, "amount": r.amount}
            for r in sorted(took, key=lambda r: (codes[r.account_id], r.carrier))
            if r.amount > 0
        ]
        if lines:
            events.append(record_event(session, kind, day, {"lines": lines}, event_id=event_id))
    return events
