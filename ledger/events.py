"""Posting rules: one ledger event in, one balanced beancount transaction out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from beancount.core import data
from beancount.core.amount import Amount

from ledger import chart


class PostingRuleError(ValueError):
    """An event that cannot be posted: unknown kind, missing amount, or postings that do not balance."""


@dataclass(frozen=True)
class Event:
    event_id: str
    kind: str
    occurred_on: date
    payload: dict[str, Any] = field(default_factory=dict)


def _amount(payload: dict[str, Any], key: str) -> Decimal:
    try:
        value = Decimal(str(payload[key]))
    except (KeyError, ArithmeticError, ValueError):
        raise PostingRuleError(f"event payload lacks a decimal {key!r}") from None
    if not value.is_finite():
        raise PostingRuleError(f"event payload {key!r} is not finite")
    return value


def _contract_credit(event: Event) -> tuple[str, str, list[tuple[str, Decimal]]]:
    """Signed contract: the customer owes the initial recharge (not yet spendable) and the opening fee."""
    p = event.payload
    code = p["account_code"]
    credit = _amount(p, "initial_amount")
    fee = _amount(p, "opening_fee")
    legs = [(chart.receivable(code), credit + fee), (chart.contracted(code), -credit)]
    if fee:
        legs.append((chart.INCOME_OPENING_FEE, -fee))
    narration = f"合同 {p['contract_no']} 签订：首次充值 {credit} 元" + (f"，开户费 {fee} 元" if fee else "")
    return p["customer_name"], narration, legs


RULES = {"contract_credit": _contract_credit}


def transaction_for(event: Event) -> data.Transaction:
    """The beancount transaction for an event, with its id as metadata; raises PostingRuleError."""
    rule = RULES.get(event.kind)
    if rule is None:
        raise PostingRuleError(f"unknown ledger event kind {event.kind!r}")
    try:
        payee, narration, legs = rule(event)
    except KeyError as missing:
        raise PostingRuleError(f"event {event.event_id} payload lacks {missing}") from None
    legs = [(account, amount) for account, amount in legs if amount]
    if not legs:
        raise PostingRuleError(f"event {event.event_id} moves no money")
    if sum((amount for _, amount in legs), Decimal(0)) != 0:
        raise PostingRuleError(f"event {event.event_id} does not balance: {legs}")
    meta = data.new_metadata("<ledger>", 0, {"event_id": event.event_id, "kind": event.kind})
    postings = [data.Posting(account, Amount(amount, chart.CURRENCY), None, None, None, None) for account, amount in legs]
    return data.Transaction(meta, event.occurred_on, "*", payee, narration, frozenset(), frozenset(), postings)
