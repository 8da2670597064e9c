"""Proposals pairing bank statement credits with receipts waiting for confirmation.

A proposal is for a person to confirm, never applied on its own: each says why (in Chinese) and
how strongly. The same bank transaction number on both sides is decisive; otherwise the amount
must be equal and either the payer's name or the date (within three days) must agree.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from reports.bank_statements import StatementLine

MAX_DAYS_APART = 3
SCORE_REFERENCE = 100  # above anything the other signals can add up to
SCORE_AMOUNT = 40
SCORE_PAYER = 30
SCORE_ACCOUNT_CODE = 15
SCORE_DATE = {0: 10, 1: 7, 2: 4, 3: 1}  # by days apart


@dataclass(frozen=True)
class OpenReceipt:
    """A receipt recorded by finance or a customer and not yet confirmed against the bank."""

    id: int
    account_code: str
    amount: Decimal
    payer_name: str
    bank_reference: str
    paid_on: date


@dataclass(frozen=True)
class Match:
    """The proposal for one statement line: a receipt, or None with the reason there is none."""

    line_no: int
    receipt_id: int | None
    score: int
    reasons: list[str]


@dataclass(frozen=True)
class _Candidate:
    line: StatementLine
    receipt: OpenReceipt
    score: int
    reasons: list[str]


def normalise(text: str) -> str:
    """Names and references as compared: full-width folded to half-width (NFKC), no whitespace, case-blind."""
    return "".join(unicodedata.normalize("NFKC", text).split()).casefold()


def propose_matches(lines: Sequence[StatementLine], receipts: Sequence[OpenReceipt]) -> list[Match]:
    """One `Match` per statement line, in the lines' order.

    Pairs are taken best score first, so each receipt and each line is proposed at most once;
    equal scores go to the earlier line and the lower receipt id, so the result is repeatable.
    """
    by_reference: dict[str, list[OpenReceipt]] = defaultdict(list)
    by_amount: dict[Decimal, list[OpenReceipt]] = defaultdict(list)
    for receipt in receipts:
        if normalise(receipt.bank_reference):
            by_reference[normalise(receipt.bank_reference)].append(receipt)
        by_amount[receipt.amount].append(receipt)

    candidates: list[_Candidate] = []
    for line in lines:
        seen: set[int] = set()
        for receipt in [*by_reference.get(normalise(line.reference), []), *by_amount.get(line.amount, [])]:
            if receipt.id not in seen:
                seen.add(receipt.id)
                candidate = _assess(line, receipt)
                if candidate is not None:
                    candidates.append(candidate)
    candidates.sort(key=lambda c: (-c.score, c.line.line_no, c.receipt.id))

    chosen: dict[int, _Candidate] = {}
    taken: dict[int, int] = {}  # receipt id -> line_no it went to
    for candidate in candidates:
        if candidate.line.line_no not in chosen and candidate.receipt.id not in taken:
            chosen[candidate.line.line_no] = candidate
            taken[candidate.receipt.id] = candidate.line.line_no

    matches = []
    for line in lines:
        if line.line_no in chosen:
            best = chosen[line.line_no]
            matches.append(Match(line.line_no, best.receipt.id, best.score, best.reasons))
            continue
        elsewhere = sorted({taken[c.receipt.id] for c in candidates if c.line.line_no == line.line_no})
        reason = f"可能的收款已配给第 {'、'.join(map(str, elsewhere))} 行" if elsewhere else "没有金额一致、付款人或日期相符的待确认收款"
        matches.append(Match(line.line_no, None, 0, [reason]))
    return matches


def _assess(line: StatementLine, receipt: OpenReceipt) -> _Candidate | None:
    """The score and reasons of one pair, or None when the pair is not worth proposing."""
    same_reference = bool(normalise(line.reference)) and normalise(line.reference) == normalise(receipt.bank_reference)
    same_amount = line.amount == receipt.amount
    same_payer = bool(normalise(line.payer_name)) and normalise(line.payer_name) == normalise(receipt.payer_name)
    days_apart = abs((line.booked_on - receipt.paid_on).days)
    if not same_reference and not (same_amount and (same_payer or days_apart <= MAX_DAYS_APART)):
        return None

    score, reasons = 0, []
    if same_reference:
        score += SCORE_REFERENCE
        reasons.append("银行流水号一致")
    if same_amount:
        score += SCORE_AMOUNT
        reasons.append("金额一致")
    else:
        reasons.append(f"金额不一致（流水 {line.amount:,.2f}，收款 {receipt.amount:,.2f}）")
    if same_payer:
        score += SCORE_PAYER
        reasons.append("付款人一致")
    if _mentions(line.memo, receipt.account_code):
        score += SCORE_ACCOUNT_CODE
        reasons.append(f"附言含账户编号 {receipt.account_code}")
    score += SCORE_DATE.get(days_apart, 0)
    reasons.append("日期一致" if days_apart == 0 else f"日期相差{days_apart}天")
    return _Candidate(line, receipt, score, reasons)


def _mentions(memo: str, code: str) -> bool:
    """Whether `code` stands in `memo` as a word of its own (AC10 is not in AC100)."""
    code = normalise(code)
    if not code:
        return False
    text = unicodedata.normalize("NFKC", memo).casefold()  # spaces kept: they separate words
    return re.search(rf"(?<![0-9a-z]){re.escape(code)}(?![0-9a-z])", text) is not None
