"""Proposals pairing bank statement credits with receipts waiting for confirmation (or credited
already but not yet tied to the bank's line).

A proposal is for a person to confirm, never applied on its own: each says why (in Chinese) and
how strongly. The same bank transaction number on both sides is decisive; otherwise the amount
must be equal and either the payer's name or the date (within three days) must agree.

The payer on the statement is compared with the name of the account's holder, never with the
payer typed on the receipt: whoever records a receipt (a customer in the portal) types what they
like there. Found by a review: customer B recorded A's usual amount and date with A's company as
the payer; A's transfer, its memo naming A's account, was proposed for B's receipt as "金额一致、
付款人一致、日期一致", and one click credited A's money to B. A line whose memo names another known
account than the receipt's is not proposed for it at all (`conflicts` says why); a payer who is
another account's holder is said so in the reasons. A second review: the same capture worked with a
memo that names no account ("货款"), proposed on amount and date with only that warning. A receipt
the customer recorded (in the portal) is not proposed for a line whose payer is another customer
(`payer_conflict`); one finance recorded is (a parent company paying for its subsidiary).
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from reports.bank_statements import StatementLine

MAX_DAYS_APART = 3
SCORE_REFERENCE = 100  # above anything the other signals can add up to
SCORE_AMOUNT = 40
SCORE_PAYER = 30
SCORE_ACCOUNT_CODE = 15
SCORE_DATE = {0: 10, 1: 7, 2: 4, 3: 1}  # by days apart
_WORD = re.compile(r"[0-9a-z]+")  # a code stands alone: no letter or digit either side


@dataclass(frozen=True)
class OpenReceipt:
    """A receipt recorded by finance or a customer and not yet confirmed against the bank.
    `holder_name`: the customer name of its account (not the payer typed on the receipt);
    `payer_name`: the payer typed on it; `by_customer`: recorded by the customer (the portal)."""

    id: int
    account_code: str
    amount: Decimal
    holder_name: str
    bank_reference: str
    paid_on: date
    payer_name: str = ""
    by_customer: bool = False
    # Credited already, with no statement line yet (the customer's voucher came before the
    # bank's statement): proposed to be tied to its line, which credits nothing again.
    confirmed: bool = False


@dataclass(frozen=True)
class Holder:
    """An account the statement may name: its code (in a memo) and its customer's name (as payer)."""

    code: str
    name: str


@dataclass(frozen=True)
class Match:
    """The proposal for one statement line: a receipt, or None with the reason there is none.
    `conflicts`: receipts that agreed otherwise but that the line's memo (or, for a receipt the
    customer recorded, its payer) names another account for."""

    line_no: int
    receipt_id: int | None
    score: int
    reasons: list[str]
    conflicts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    line: StatementLine
    receipt: OpenReceipt
    score: int
    reasons: list[str]
    conflict: str | None = None  # why it must not be proposed (the memo or the payer names another account)


class Directory:
    """The known accounts, looked up by the code a memo names and by the holder's name."""

    def __init__(self, holders: Iterable[Holder] = ()) -> None:
        self._by_code: dict[str, Holder] = {}
        self._odd_codes: list[Holder] = []  # codes that are not one run of letters and digits
        self._by_name: dict[str, list[Holder]] = defaultdict(list)
        for holder in holders:
            code = normalise(holder.code)
            if code:
                self._by_code.setdefault(code, holder)
                if not _WORD.fullmatch(code):
                    self._odd_codes.append(holder)
            if normalise(holder.name):
                self._by_name[normalise(holder.name)].append(holder)

    def named_in(self, memo: str) -> list[Holder]:
        """The known accounts whose code stands in `memo` as a word of its own, in code order."""
        words = set(_WORD.findall(unicodedata.normalize("NFKC", memo).casefold()))
        found = {h.code: h for w in words if (h := self._by_code.get(w)) is not None}
        found.update({h.code: h for h in self._odd_codes if _mentions(memo, h.code)})
        return [found[code] for code in sorted(found)]

    def holders_named(self, name: str) -> list[Holder]:
        return list(self._by_name.get(normalise(name), [])) if normalise(name) else []


def memo_conflict(memo: str, account_code: str, directory: Directory) -> str | None:
    """Why a statement line cannot be money for `account_code`: its memo names another known
    account (the payer said whose money it is), as "附言写明账户 …". None when it names no other."""
    others = [h for h in directory.named_in(memo) if normalise(h.code) != normalise(account_code)]
    return f"附言写明账户 {'、'.join(f'{h.code}（{h.name}）' for h in others)}" if others else None


def payer_conflict(line_payer: str, typed_payer: str, account_code: str, holder_name: str, directory: Directory) -> str | None:
    """Why a statement line cannot be money for a receipt a customer recorded on `account_code`
    (whose customer is `holder_name`): the line's payer, or the payer typed on the receipt, is
    another known customer, as "付款人是其他客户 …". None when the line's payer is this customer
    (the bank's word decides), or neither payer is another customer."""
    if normalise(line_payer) and normalise(line_payer) == normalise(holder_name):
        return None
    for payer, who in ((line_payer, "付款人"), (typed_payer, "到账记录上填写的付款人")):
        if normalise(payer) == normalise(holder_name):
            continue
        if others := [h for h in directory.holders_named(payer) if normalise(h.code) != normalise(account_code)]:
            return f"{who}是其他客户 {'、'.join(f'{h.code}（{h.name}）' for h in others)}"
    return None


def normalise(text: str) -> str:
    """Names and references as compared: full-width folded to half-width (NFKC), no whitespace, case-blind."""
    return "".join(unicodedata.normalize("NFKC", text).split()).casefold()


def propose_matches(lines: Sequence[StatementLine], receipts: Sequence[OpenReceipt], accounts: Iterable[Holder] = ()) -> list[Match]:
    """One `Match` per statement line, in the lines' order. `accounts`: every known account (the
    receipts' ones included), for the codes a memo names and the payers who are customers.

    Pairs are taken best score first, so each receipt and each line is proposed at most once;
    equal scores go to the earlier line and the lower receipt id, so the result is repeatable.
    """
    directory = Directory([*accounts, *(Holder(r.account_code, r.holder_name) for r in receipts)])
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
                candidate = _assess(line, receipt, directory)
                if candidate is not None:
                    candidates.append(candidate)
    conflicts: dict[int, list[str]] = defaultdict(list)
    for candidate in candidates:
        if candidate.conflict is not None:
            receipt = candidate.receipt
            conflicts[candidate.line.line_no].append(
                f"到账记录 {receipt.id}（{receipt.account_code} {receipt.holder_name}）未建议匹配：{candidate.conflict}"
            )
    # On equal scores a receipt waiting for confirmation goes before one credited already.
    candidates = sorted(
        (c for c in candidates if c.conflict is None), key=lambda c: (-c.score, c.receipt.confirmed, c.line.line_no, c.receipt.id)
    )

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
        matches.append(Match(line.line_no, None, 0, [reason], conflicts[line.line_no]))
    return matches


def _assess(line: StatementLine, receipt: OpenReceipt, directory: Directory) -> _Candidate | None:
    """The score and reasons of one pair, or None when the pair is not worth proposing; a pair
    whose line's memo names another account comes with its `conflict`, not to be proposed."""
    same_reference = bool(normalise(line.reference)) and normalise(line.reference) == normalise(receipt.bank_reference)
    same_amount = line.amount == receipt.amount
    # The account's holder, not the payer typed on the receipt (which anyone recording it chooses).
    same_payer = bool(normalise(line.payer_name)) and normalise(line.payer_name) == normalise(receipt.holder_name)
    days_apart = abs((line.booked_on - receipt.paid_on).days)
    if not same_reference and not (same_amount and (same_payer or days_apart <= MAX_DAYS_APART)):
        return None
    # A receipt credited already is tied to a line by its number, or by amount and a date within
    # the window: the same payer paying the same amount every month would otherwise tie this
    # month's new transfer to last month's receipt, and that money would never be credited.
    if receipt.confirmed and not same_reference and days_apart > MAX_DAYS_APART:
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
    elif others := [h for h in directory.holders_named(line.payer_name) if normalise(h.code) != normalise(receipt.account_code)]:
        reasons.append(f"注意：付款人是其他客户（{'、'.join(h.code for h in others[:3])} {others[0].name}），不是本账户户名")
    if _mentions(line.memo, receipt.account_code):
        score += SCORE_ACCOUNT_CODE
        reasons.append(f"附言含账户编号 {receipt.account_code}")
    score += SCORE_DATE.get(days_apart, 0)
    reasons.append("日期一致" if days_apart == 0 else f"日期相差{days_apart}天")
    conflict = memo_conflict(line.memo, receipt.account_code, directory)
    # Found by a second review: what a customer records is not proposed for another customer's transfer.
    if (
        conflict is None
        and receipt.by_customer
        and (paid_by := payer_conflict(line.payer_name, receipt.payer_name, receipt.account_code, receipt.holder_name, directory))
    ):
        conflict = f"{paid_by}，而该到账记录是客户在门户登记的；如确是代付，请与客户核实后驳回该记录，由财务代为登记"
    return _Candidate(line, receipt, score, reasons, conflict)


def _mentions(memo: str, code: str) -> bool:
    """Whether `code` stands in `memo` as a word of its own (AC10 is not in AC100)."""
    code = normalise(code)
    if not code:
        return False
    text = unicodedata.normalize("NFKC", memo).casefold()  # spaces kept: they separate words
    return re.search(rf"(?<![0-9a-z]){re.escape(code)}(?![0-9a-z])", text) is not None
