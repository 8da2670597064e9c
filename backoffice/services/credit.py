"""Money moving on customer accounts: each function changes the balances in the database and
records the matching ledger event in the same transaction, so the books always follow.

Debits are one conditional UPDATE (`balance >= amount` in the WHERE clause): the balance never
goes below zero, whatever the concurrency. Every event has an id; doing the same thing twice
with the same id changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import ledger
from backoffice.errors import Conflict, DomainError, NotFound, ValidationFailed
from backoffice.models import EnterpriseAccount, LedgerEvent
from backoffice.models.accounts import ENDED_ACCOUNT_STATUSES
from backoffice.models.ledger import REVERSAL_REASON_LENGTH
from backoffice.money import format_money
from backoffice.services import audit
from backoffice.services.bookkeeping import as_ledger_event, record_event
from backoffice.services.sql import begin_snapshot
from ledger import chart


class InsufficientBalance(DomainError):
    status = 402
    code = "insufficient_balance"


@dataclass(frozen=True)
class UsageLine:
    account_code: str
    carrier: str
    messages: int
    amount: Decimal


def closed_account(account: EnterpriseAccount, action: str) -> Conflict:
    """The refusal of money put on an account that has ended for good."""
    return Conflict(
        f"账户 {account.code}（{account.customer_name}）已关闭，不能{action}：请驳回该到账记录，"
        "如客户已开新账户，再为新账户登记这笔汇款；否则请与客户联系，人工处理"
    )


def _account(session: Session, code: str, *, lock: bool = False) -> EnterpriseAccount:
    """The account, read afresh from the database (not as this session last loaded it); with
    `lock`, its row held until the end of the transaction (PostgreSQL; SQLite has one writer)."""
    query = sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code).execution_options(populate_existing=True)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(key_share=True)  # NO KEY UPDATE, as lock_accounts takes it
    account = session.scalar(query)
    if account is None:
        raise NotFound(f"账户不存在：{code}")
    return account


def _existing(session: Session, event_id: str) -> LedgerEvent | None:
    return session.scalar(sa.select(LedgerEvent).where(LedgerEvent.event_id == event_id))


def _reversed(session: Session, event_id: str) -> bool:
    return session.scalar(sa.select(LedgerEvent.id).where(LedgerEvent.reverses == event_id)) is not None


def lock_accounts(session: Session, account_ids: set[int]) -> None:
    """Lock the accounts' rows in the order of their ids (PostgreSQL; SQLite has one writer).

    The one lock order of every transaction that changes balances: accounts first, in id order,
    then their usage rows, then the send log's head. Intake (one account) and finance (one
    account) follow it by taking their account first; a dispatcher turn takes all of its
    accounts here before it refunds or moves a charge, and appends its lines last."""
    if account_ids and session.get_bind().dialect.name == "postgresql":
        table = EnterpriseAccount.__table__
        query = sa.select(table.c.id).where(table.c.id.in_(sorted(account_ids))).order_by(table.c.id)
        session.execute(query.with_for_update(key_share=True)).all()


def _adjust(session: Session, account_id: int, **deltas: Decimal) -> bool:
    """Add the deltas to the account's money columns in one statement; refuses (False) if any
    column would go below zero."""
    table = EnterpriseAccount.__table__
    values = {name: table.c[name] + delta for name, delta in deltas.items() if delta}
    if not values:
        return True
    guards = [table.c[name] >= -delta for name, delta in deltas.items() if delta < 0]
    result = session.execute(sa.update(table).where(table.c.id == account_id, *guards).values(**values))
    return bool(result.rowcount)


def credit_receipt(
    session: Session,
    *,
    account_code: str,
    amount: Decimal,
    bank: str,
    bank_ref: str,
    received_on: date,
    actor: str,
    receipt_id: int | None = None,
) -> LedgerEvent:
    """Money arrived for an account: it first settles what the customer owes under its
    contracts (releasing contracted credit into spendable credit), the rest is a recharge.
    The bank reference is the event's identity: confirming it twice credits once. Once that
    credit was reversed (confirmed to the wrong account, say), the receipt that enters the
    transfer again (`receipt_id`) credits it under its own identity."""
    if amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        raise ValidationFailed({"amount": "金额必须大于 0，且最多 2 位小数"})
    event_id = f"receipt-{bank}-{bank_ref}"
    existing = _existing(session, event_id)
    if existing is not None and receipt_id is not None and _reversed(session, event_id):
        event_id = f"{event_id}#{receipt_id}"  # '#' is not allowed in a reference: no other transfer's id
        existing = _existing(session, event_id)
    if existing is not None:
        payload = existing.payload
        if payload.get("account_code") != account_code or Decimal(payload["amount"]) != amount or payload.get("bank_ref") != bank_ref:
            raise Conflict(f"银行流水号 {bank_ref} 已用于另一笔到账，不能重复入账")
        return existing
    account = _account(session, account_code, lock=True)  # what it settles is read from the row it changes
    if account.status in ENDED_ACCOUNT_STATUSES:  # read under the lock: closed by a forfeit that committed meanwhile
        raise closed_account(account, "入账")
    settles = min(amount, account.receivable)
    releases = min(settles, account.contracted_credit)
    credit = releases + (amount - settles)
    if not _adjust(session, account.id, receivable=-settles, contracted_credit=-releases, balance=credit):
        raise Conflict(f"账户 {account_code} 的应收款在处理期间发生变化，请重试")
    if account.status == "awaiting_payment" and credit > 0:
        account.status = "active"
    event = record_event(
        session, "receipt", received_on,
        {"account_code": account_code, "customer_name": account.customer_name, "amount": amount, "bank": bank,
         "bank_ref": bank_ref, "settles_receivable": settles, "releases_contracted": releases},
        event_id=event_id,
    )  # fmt: skip
    audit.record(session, actor, "credit_receipt", "account", account_code, amount=format_money(amount), bank_ref=bank_ref)
    return event


def _lines_payload(lines: list[UsageLine]) -> dict[str, Any]:
    return {"lines": [{"account_code": x.account_code, "carrier": x.carrier, "messages": x.messages, "amount": x.amount} for x in lines]}


def _chargeable(lines: list[UsageLine]) -> list[UsageLine]:
    """The lines that move money (free messages cost nothing); refuses negative amounts and a
    batch with nothing to book."""
    if any(line.amount < 0 for line in lines):
        raise ValidationFailed({"amount": "金额不能为负数"})
    kept = [line for line in lines if line.amount > 0]
    if not kept:
        raise ValidationFailed({"lines": "没有需要记账的金额"})
    return kept


def charge_usage(session: Session, day: date, lines: list[UsageLine], *, event_id: str, kind: str = "usage") -> LedgerEvent:
    """Debit each account for a batch of sent messages (aggregated per account, carrier and day)
    and book it as one event. All or nothing: one account short of credit refuses the batch."""
    if (existing := _existing(session, event_id)) is not None:
        return existing
    lines = _chargeable(lines)
    for line in lines:
        account = _account(session, line.account_code)
        if not _adjust(session, account.id, balance=-line.amount):
            raise InsufficientBalance(f"账户 {line.account_code} 余额不足：需 {line.amount} 元")
    return record_event(session, kind, day, _lines_payload(lines), event_id=event_id)


def refund_usage(session: Session, day: date, lines: list[UsageLine], *, event_id: str) -> LedgerEvent:
    """Give back what failed sends were charged."""
    if (existing := _existing(session, event_id)) is not None:
        return existing
    lines = _chargeable(lines)
    for line in lines:
        _adjust(session, _account(session, line.account_code).id, balance=line.amount)
    payload = {
        "lines": [{"account_code": x.account_code, "carrier": x.carrier, "messages": x.messages, "amount": str(x.amount)} for x in lines]
    }
    return record_event(session, "refund", day, payload, event_id=event_id)


def _effects(event: LedgerEvent) -> dict[str, dict[str, Decimal]]:
    """Per account code, how the event changed balance / contracted credit / receivable."""
    columns = {
        "Liabilities:Prepaid:": ("balance", -1),
        "Liabilities:Contracted:": ("contracted_credit", -1),
        "Assets:Receivable:": ("receivable", 1),
    }
    effects: dict[str, dict[str, Decimal]] = {}
    for account, amount in ledger.account_effects([as_ledger_event(event)]).items():
        for prefix, (column, sign) in columns.items():
            if account.startswith(prefix):
                per = effects.setdefault(account.removeprefix(prefix), {})
                per[column] = per.get(column, Decimal(0)) + sign * amount
    return effects


def reverse_event(session: Session, event_id: str, *, reason: str, on: date, actor: str) -> LedgerEvent:
    """Undo a mistaken money event with a reversing entry: nothing in the books is edited or
    deleted. An event is reversed at most once; a reversal that would take a balance below
    zero (the credit was already spent) is refused."""
    if not reason.strip():
        raise ValidationFailed({"reason": "请填写冲销原因"})
    reason = audit.reason_text(reason, limit=REVERSAL_REASON_LENGTH)  # what ledger_events.reason keeps
    original = _existing(session, event_id)
    if original is None:
        raise NotFound(f"记账事件不存在：{event_id}")
    if original.kind in ("reversal", "balance"):
        raise Conflict("冲销分录和余额断言不能再冲销")
    if _reversed(session, event_id):
        raise Conflict(f"事件 {event_id} 已冲销过")
    for code, deltas in _effects(original).items():
        account = _account(session, code)
        if not _adjust(session, account.id, **{column: -delta for column, delta in deltas.items()}):
            raise InsufficientBalance(f"账户 {code} 的余额已被使用，无法全额冲销")
    event = record_event(
        session, "reversal", on,
        {"reverses": event_id, "reason": reason, "original": {"kind": original.kind, "payload": original.payload}},
        event_id=f"reversal-{event_id}",
    )  # fmt: skip
    event.reverses, event.reason, event.actor = event_id, reason, actor
    audit.record(session, actor, "reverse_event", "ledger_event", event_id, reason=reason)
    return event


def record_balance_assertions(session: Session, day: date) -> int:
    """Write, from the database, each customer's prepaid balance as of the start of `day` as a
    beancount `balance` assertion: the current balance less what events dated `day` or later
    changed. Beancount then flags any drift between the two. Idempotent per account and day.
    Starts a transaction of its own (commit or roll back the session's before)."""
    from backoffice.clock import local_today
    from backoffice.services import usage
    from ledger.books import OPENING

    if not OPENING < day <= local_today():
        # Later, a charge recorded today but dated before it would contradict the assertion; before
        # the chart opens, no account exists to assert: either would break the books for good.
        raise ValidationFailed({"date": f"余额断言的日期应在 {OPENING + timedelta(days=1)} 至今天（{local_today()}）之间：{day}"})
    # Balances, open running totals and later events as of one moment: a charge committed
    # between two of these reads would make the assertion wrong for good (found by a review).
    # A request reads the clock for its charge's day once it holds the write lock (SQLite) or
    # its account's row (PostgreSQL): one that held it before midnight may charge the day
    # before, so it must commit before the snapshot, which waits for it (found by a review).
    begin_snapshot(session, after_row_locks_on=EnterpriseAccount.__table__)
    book_usage, unbooked_effect = usage.book_usage, usage.unbooked_effect
    book_usage(session, before=day)  # an assertion must never precede a charge booked later
    pending = unbooked_effect(session)  # what is left is dated `day` or later
    later = session.scalars(sa.select(LedgerEvent).where(LedgerEvent.occurred_on >= day, LedgerEvent.kind != "balance")).all()
    effect = ledger.account_effects(as_ledger_event(e) for e in later)
    existing = set(session.scalars(sa.select(LedgerEvent.event_id).where(LedgerEvent.kind == "balance", LedgerEvent.occurred_on == day)))
    count = 0
    for code, balance in session.execute(sa.select(EnterpriseAccount.code, EnterpriseAccount.balance)):
        event_id = f"balance-{code}-{day.isoformat()}"
        if event_id in existing:
            continue
        # Books' sign: the liability is negative. Balance then = -(db balance) - later effect.
        amount = -(balance - pending.get(code, Decimal(0))) - effect.get(chart.prepaid(code), Decimal(0))
        record_event(session, "balance", day, {"account_code": code, "amount": amount}, event_id=event_id)
        count += 1
    return count


def assertion_due(day: date, cadence: str) -> bool:
    """Whether `day` gets balance assertions under the configured cadence."""
    if cadence == "daily":
        return True
    if cadence == "weekly":
        return day.weekday() == 0
    if cadence == "monthly":
        return day.day == 1
    raise ValueError(f"LEDGER_BALANCE_ASSERTIONS must be daily, weekly or monthly, not {cadence!r}")


def charge_penalty(
    session: Session, *, account_code: str, messages: int, rate: Decimal, on: date, event_id: str, actor: str
) -> LedgerEvent:
    """003 §3.4: a penalty of `rate` (0.5 元) per message sent in violation, taken from the
    prepaid credit. Refused, changing nothing, if the credit does not cover it."""
    if (existing := _existing(session, event_id)) is not None:
        return existing
    amount = rate * messages
    if messages <= 0 or amount <= 0:
        raise ValidationFailed({"messages": "违约条数必须大于 0"})
    account = _account(session, account_code)
    if not _adjust(session, account.id, balance=-amount):
        raise InsufficientBalance(f"账户 {account_code} 余额不足以扣除违约金 {amount} 元")
    audit.record(session, actor, "charge_penalty", "account", account_code, amount=str(amount), messages=messages)
    payload = {"account_code": account_code, "customer_name": account.customer_name, "messages": messages, "rate": rate, "amount": amount}
    return record_event(session, "penalty", on, payload, event_id=event_id)


def forfeit_balance(session: Session, *, account_code: str, reason: str, on: date, actor: str) -> LedgerEvent | None:
    """004 §2.1(2): when a carrier shuts the channel over the customer's complaints, the
    remaining balance is not refunded. Closes the account; nothing to book if it was empty."""
    if not reason.strip():
        raise ValidationFailed({"reason": "请填写原因"})
    # Locked: a confirmation crediting the account meanwhile either lands first (and is
    # forfeited with the rest) or waits and is refused (found by a review: read unlocked, a
    # credit committed in between stayed on the closed account).
    account = _account(session, account_code, lock=True)
    from backoffice.services.message_queue import cancel_account_waiting  # (it locks accounts through this module)

    cancel_account_waiting(session, account.id, why="closed")  # their money is forfeited with the rest
    session.refresh(account, ["balance"])
    amount = account.balance
    account.status = "closed"
    audit.record(session, actor, "forfeit_balance", "account", account_code, amount=str(amount), reason=reason)
    return _forfeit(session, account, amount, reason=reason, on=on, event_id=f"forfeit-{account_code}-{on.isoformat()}")


def _forfeit(session: Session, account: EnterpriseAccount, amount: Decimal, *, reason: str, on: date, event_id: str) -> LedgerEvent | None:
    """Take `amount` off the (locked) account's balance into the forfeit event; nothing if none."""
    if amount <= 0:
        return None
    if not _adjust(session, account.id, balance=-amount):
        raise Conflict("余额在处理期间发生变化，请重试")
    payload = {"account_code": account.code, "customer_name": account.customer_name, "amount": amount, "reason": reason}
    return record_event(session, "forfeit", on, payload, event_id=event_id)


LATE_REFUND_FORFEITED = "账户关闭后才退回的短信费用，与余额一并不予退还"


def forfeit_late_refund(session: Session, account_id: int, amount: Decimal, *, on: date, key: str) -> LedgerEvent | None:
    """Messages of a closed account refunded after its closing (a worker held them then, or died
    holding them): their money would sit on an account that can never spend it, never forfeited
    (found by a review). It is forfeited as the rest of the balance was, in the refund's
    transaction; `key` (the first message's id) names the event. The caller holds the row lock."""
    if amount <= 0:
        return None
    account = session.get(EnterpriseAccount, account_id)
    assert account is not None and account.status == "closed"
    audit.record(session, "system:dispatcher", "forfeit_balance", "account", account.code, amount=str(amount), reason=LATE_REFUND_FORFEITED)
    return _forfeit(session, account, amount, reason=LATE_REFUND_FORFEITED, on=on, event_id=f"forfeit-{account.code}-refund-{key}")


def record_carrier_cost(session: Session, day: date, costs: dict[str, Decimal]) -> LedgerEvent:
    """What the carriers charge the provider for a day's messages (per carrier); once a day."""
    lines = [{"carrier": carrier, "amount": amount} for carrier, amount in sorted(costs.items()) if amount > 0]
    if not lines:
        raise ValidationFailed({"costs": "没有需要记账的通道费"})
    event_id = f"carrier-cost-{day.isoformat()}"
    return _existing(session, event_id) or record_event(session, "carrier_cost", day, {"lines": lines}, event_id=event_id)
