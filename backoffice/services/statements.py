"""Bank statements: finance imports the bank's export (all lines or none), the system proposes
which recorded receipt each credit is, and finance confirms the match (which confirms the
receipt) or records a receipt straight from a statement line."""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from backoffice.clock import local_today, utcnow
from backoffice.errors import Conflict, NotFound, ValidationFailed
from backoffice.models import EnterpriseAccount, Receipt, StatementImport, StatementLine
from backoffice.models.accounts import ENDED_ACCOUNT_STATUSES
from backoffice.money import format_money
from backoffice.services import audit
from backoffice.services.sql import MAX_INT_ID, inserted_if_absent
from reports import bank_statements, matching

log = logging.getLogger(__name__)

MAX_STATEMENT_BYTES = 10 * 1024 * 1024
# The layouts the parser knows, and the receiving bank each export comes from.
LAYOUT_BANKS = {"cmb": "CMB", "icbc": "ICBC"}
_LINES: sa.Table = StatementLine.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Proposal:
    line: StatementLine
    receipt: Receipt | None
    account: EnterpriseAccount | None  # for a line with no receipt: the account whose name is the payer's
    score: int
    reasons: list[str]
    # Receipts not proposed (the memo or the payer names another account), or why no account is offered.
    conflicts: list[str] = field(default_factory=list)
    hint: str = ""  # what finance can do when nothing is offered

    @property
    def credited_already(self) -> bool:
        """The proposed receipt is confirmed: the line is only tied to it, nothing is credited again."""
        return self.receipt is not None and self.receipt.status == "confirmed"

    @property
    def amounts_differ(self) -> bool:
        """Proposed on the bank reference alone: the amounts differ, so it cannot be matched as it is."""
        return self.receipt is not None and self.receipt.amount != self.line.amount


def import_statement(session: Session, *, filename: str, content: bytes, actor: str, today: date | None = None) -> StatementImport:
    """Parse and store a statement. A file with a wrong layout, or a credit that could never be
    entered as a receipt, is refused with the line number and the reason, and nothing is
    imported; lines already imported from an overlapping export are skipped and counted."""
    name = (filename or "").strip()
    if not name or any(c in name for c in "/\\") or ".." in name or any(unicodedata.category(c).startswith("C") for c in name):
        raise ValidationFailed({"file": "文件名不能包含路径（/、\\ 或 ..）或控制字符"})
    if not content:
        raise ValidationFailed({"file": "文件是空的"})
    if len(content) > MAX_STATEMENT_BYTES:
        raise ValidationFailed({"file": f"文件过大，最大 {MAX_STATEMENT_BYTES // 1048576} MB"})
    try:
        statement = bank_statements.parse_statement(content)
    except bank_statements.StatementError as exc:
        raise _refused(exc.line_no, exc.reason) from None
    today = today or local_today()
    for line in statement.lines:
        if reason := _never_a_receipt(line, today):
            raise _refused(line.line_no, reason)
    record = StatementImport(
        file_name=name[:200], file_sha256=hashlib.sha256(content).hexdigest(), layout=statement.layout, imported_by=actor,
        skipped_debits=statement.skipped_debits,
    )  # fmt: skip
    session.add(record)
    session.flush()
    # Each line inserted unless the same bank transaction is stored already (INSERT … ON CONFLICT
    # DO NOTHING). Found by a review: looking first, then inserting, let two imports of one file at
    # once (a double click, two finance users) both find nothing, and the second's insert hit the
    # unique index: a 500. Now the second waits for the first's commit and counts the lines as
    # duplicates. In the unique key's order, so two overlapping imports wait in one order, never
    # for each other (a deadlock).
    for line in sorted(statement.lines, key=lambda x: (x.reference, x.booked_on, x.amount, x.line_no)):
        values = {
            "statement_id": record.id, "line_no": line.line_no, "booked_on": line.booked_on, "amount": line.amount,
            "payer_name": line.payer_name[:200], "payer_account": line.payer_account, "reference": line.reference[:64],
            "memo": line.memo[:500],
        }  # fmt: skip
        if inserted_if_absent(session, _LINES, values, ["reference", "booked_on", "amount"]):
            record.line_count += 1
        else:
            record.duplicate_lines += 1
    session.flush()
    session.expire(record, ["lines"])  # inserted beside the ORM: read back when asked for
    audit.record(
        session, actor, "import_statement", "statement", str(record.id), file=name, lines=record.line_count, layout=statement.layout
    )
    return record


def _refused(line_no: int, reason: str) -> ValidationFailed:
    return ValidationFailed({"file": f"第 {line_no} 行：{reason}"}, message=f"对账单未导入：第 {line_no} 行：{reason}")


def _never_a_receipt(line: bank_statements.StatementLine, today: date) -> str | None:
    """Why a credit could never be entered as a receipt (record_receipt's date and payer checks),
    if so. Found by a review: such lines were imported and offered with 按此登记, which
    record_receipt then refused every time."""
    from backoffice.services.receipts import MAX_DAYS_AGO, day_out_of_range, unprintable

    problem = day_out_of_range(line.booked_on, today)
    if problem == "future":
        return f"入账日期 {line.booked_on} 晚于今天（{today}），无法据此登记到账，请检查导出的文件"
    if problem == "too_old":
        return f"入账日期 {line.booked_on} 早于一年前（超过 {MAX_DAYS_AGO} 天），无法据此登记到账：请只导出一年内的交易明细，更早的到账请人工处理"
    if (bad := unprintable(line.payer_name.strip())) is not None:
        return f"付款人名称含有控制字符或不可见字符（U+{ord(bad):04X}），无法据此登记到账：请在文件中改正后重新导入"
    return None


def bank_of(line: StatementLine, default: str) -> str:
    return LAYOUT_BANKS.get(line.statement.layout, default)


def proposals(session: Session) -> list[Proposal]:
    """For every statement line not yet matched: the recorded receipt it most likely is (or,
    failing that, the one live account whose customer name is the payer's, or the one account its
    memo names), best first. A receipt (or account) of another account than the memo names is not
    proposed, nor a closed account, nor one of two live accounts of the payer's name: the line's
    `conflicts` say so."""
    # In the order of the files (a file's lines are not inserted in its order: see import_statement).
    lines = list(
        session.scalars(
            sa.select(StatementLine)
            .where(StatementLine.receipt_id.is_(None), StatementLine.ignored_at.is_(None))
            .order_by(StatementLine.statement_id, StatementLine.line_no, StatementLine.id)
        )
    )
    if not lines:
        return []
    # Confirmed ones too, while no line is tied to them. Found by an exploratory test: in the
    # usual order (the customer's voucher, finance confirms, the statement at month end) the
    # bank's line was offered 按此登记, which the receipt's own number refused, for good.
    # Only the confirmed ones the matcher could propose (the same number, or within its days of
    # a line): every receipt confirmed before this release has no line, and the page read them
    # all, each with its account (found by a review).
    references = sorted({bank_statements.normal_reference(x.reference) for x in lines if x.reference})
    apart = timedelta(days=matching.MAX_DAYS_APART)
    first, last = min(x.booked_on for x in lines) - apart, max(x.booked_on for x in lines) + apart
    could_match = sa.or_(Receipt.bank_reference.in_(references), Receipt.paid_on.between(first, last))
    receipts = {
        r.id: r
        for r in session.scalars(
            sa.select(Receipt)
            .where(
                Receipt.statement_line_id.is_(None),
                sa.or_(Receipt.status.in_(("pending", "approved")), sa.and_(Receipt.status == "confirmed", could_match)),
            )
            .options(selectinload(Receipt.account))
        )
    }
    by_position = dict(enumerate(lines, start=1))
    # The matcher works on its own line numbers (the earlier wins a tie): the row on the page stands in for them.
    parsed = [
        bank_statements.StatementLine(
            line_no=position,
            booked_on=x.booked_on,
            amount=x.amount,
            payer_name=x.payer_name,
            payer_account=x.payer_account,
            reference=x.reference,
            memo=x.memo,
        )
        for position, x in by_position.items()
    ]
    open_receipts = [
        matching.OpenReceipt(
            id=r.id,
            account_code=r.account.code,
            amount=r.amount,
            holder_name=r.account.customer_name,  # not r.payer_name: whoever recorded it typed that
            bank_reference=r.bank_reference,
            paid_on=r.paid_on,
            payer_name=r.payer_name,
            by_customer=r.by_customer,
            confirmed=r.status == "confirmed",
        )
        for r in receipts.values()
    ]
    accounts = list(session.scalars(sa.select(EnterpriseAccount).order_by(EnterpriseAccount.id)))
    by_name: dict[str, list[EnterpriseAccount]] = defaultdict(list)
    for a in accounts:
        by_name[matching.normalise(a.customer_name)].append(a)
    by_code = {a.code: a for a in accounts}
    holders = [matching.Holder(a.code, a.customer_name) for a in accounts]
    directory = matching.Directory(holders)
    result = []
    for match in matching.propose_matches(parsed, open_receipts, holders):
        line = by_position[match.line_no]
        receipt = receipts.get(match.receipt_id) if match.receipt_id is not None else None
        reasons, conflicts = match.reasons, list(match.conflicts)
        account, not_offered = receipt.account if receipt else None, list[str]()
        if receipt is None:
            account, not_offered = _payer_account(by_name, line.payer_name)
            reasons = ["付款人与客户名称一致，尚无登记的汇款"]
        if receipt is None and account is not None and (conflict := matching.memo_conflict(line.memo, account.code, directory)):
            conflicts.append(f"付款人是账户 {account.code}（{account.customer_name}）的客户名称，但{conflict}，请人工核实")
            account = None  # not offered for 按此登记: the payer said whose money it is
        elif receipt is None and account is None and len(named := directory.named_in(line.memo)) == 1:
            if (memo_account := by_code[named[0].code]).status in ENDED_ACCOUNT_STATUSES:
                not_offered.append(
                    f"附言写明的账户 {memo_account.code}（{memo_account.customer_name}）{memo_account.status_name}，不能再登记到账，请人工核实"
                )
            else:
                account, reasons, not_offered = memo_account, [f"附言含账户编号 {named[0].code}，尚无登记的汇款"], []
        hint = ""
        if receipt is not None and receipt.amount != line.amount:
            # Found by an exploratory test: 确认匹配并入账 was offered, and refused on click with
            # no word of what to do instead.
            hint = amount_mismatch(line, receipt)
        elif receipt is not None and receipt.status == "confirmed":
            # Only beside the link it speaks of: amounts that differ are offered no link (found by
            # an exploratory test: "关联后不会重复入账" stood beside "金额不一致，不能匹配").
            reasons = [*reasons, "该到账记录已确认入账，关联后不会重复入账"]
        if account is None:
            reasons = ["未找到对应的汇款登记或客户"]
            conflicts.extend(not_offered)
            # Found by an exploratory test: such a line offered nothing and said nothing.
            hint = (
                "请与付款人核实是哪个账户的汇款，在“代客户登记汇款”中为该账户登记（流水号 "
                f"{line.reference}），再回到此处确认匹配；不是客户的汇款（如利息、退款）请忽略并写明原因"
            )
        result.append(Proposal(line, receipt, account, match.score if receipt else 0, reasons, conflicts, hint))
    return result


def _payer_account(by_name: dict[str, list[EnterpriseAccount]], payer: str) -> tuple[EnterpriseAccount | None, list[str]]:
    """The one live account whose customer name is `payer`, or None and why none is offered.
    Found by a review: the oldest account of the name was offered, a closed one too (its balance
    forfeited before the customer opened a new account), and 按此登记 recorded the transfer there."""
    namesakes = by_name.get(matching.normalise(payer), []) if matching.normalise(payer) else []
    live = [a for a in namesakes if a.status not in ENDED_ACCOUNT_STATUSES]
    if len(live) == 1:
        return live[0], []
    codes = "、".join(a.code for a in (live or namesakes))
    if len(live) > 1:
        return None, [
            f"付款人与 {len(live)} 个在用账户 {codes} 的客户名称相同，无法确定是哪个账户的汇款：请与客户核实后在“代客户登记汇款”中登记"
        ]
    if namesakes:
        return None, [f"付款人是已关闭账户 {codes}（{namesakes[0].customer_name}）的客户名称，已关闭的账户不能再登记到账，请人工核实"]
    return None, []


def get_line(session: Session, line_id: int | str) -> StatementLine:
    try:
        ident = int(line_id)
        line = session.get(StatementLine, ident) if 0 < ident <= MAX_INT_ID else None
    except (TypeError, ValueError):
        line = None
    if line is None:
        raise NotFound(f"对账单明细不存在：{line_id}")
    return line


def match_line(session: Session, line_id: int | str, receipt_id: int | str, *, actor: str) -> Receipt:
    """Tie a statement line to a recorded receipt (the bank saw the money the customer
    reported). The caller then confirms the receipt, in the same transaction."""
    from backoffice.services.receipts import get_receipt, live_receipt_with

    line = get_line(session, line_id)
    receipt = get_receipt(session, receipt_id)
    if line.receipt_id is not None and line.receipt_id != receipt.id:
        raise Conflict(f"该对账单明细已匹配到账记录 {line.receipt_id}")
    _refuse_ignored(line)
    if receipt.statement_line_id is not None and receipt.statement_line_id != line.id:
        raise Conflict(f"到账记录 {receipt.id} 已匹配其他对账单明细")
    if line.amount != receipt.amount:
        said = amount_mismatch(line, receipt)
        raise ValidationFailed({"amount": said}, message=said)
    # Found by a review: a customer recorded another's transfer (its amount, its date, that
    # customer's name as payer) and the bank's line, its memo naming the other account, was
    # proposed for it and confirmed with one click. The payer's own words say whose money it is.
    account = receipt.account
    holders = [
        matching.Holder(code, name) for code, name in session.execute(sa.select(EnterpriseAccount.code, EnterpriseAccount.customer_name))
    ]
    directory = matching.Directory(holders)
    if conflict := matching.memo_conflict(line.memo, account.code, directory):
        raise Conflict(
            f"不能匹配：对账单明细（流水号 {line.reference}）的{conflict}，而到账记录 {receipt.id} 属于账户 {account.code}"
            f"（{account.customer_name}）；请核实这笔汇款是哪个账户的，必要时驳回该到账记录，再按对账单为附言中的账户登记"
        )
    # A second review: with no account in the memo ("货款"), the same capture went through on
    # amount and date. What the customer recorded is not matched to another customer's transfer;
    # a real third-party payment (a parent company paying for its subsidiary) finance records.
    if receipt.by_customer and (
        conflict := matching.payer_conflict(line.payer_name, receipt.payer_name, account.code, account.customer_name, directory)
    ):
        raise Conflict(
            f"不能匹配：对账单明细（流水号 {line.reference}）的{conflict}，而到账记录 {receipt.id} 是账户 {account.code}"
            f"（{account.customer_name}）在客户门户登记的，不能用于其他客户的汇款；如确是代付（如母公司替子公司付款），"
            f"请先与客户核实，驳回该到账记录，再由财务在“代客户登记汇款”中为账户 {account.code} 登记流水号 {line.reference} 的汇款后匹配"
        )
    other = live_receipt_with(session, line.reference, other_than=receipt.id)
    if other is not None:  # the same transfer recorded under the bank's number: matching it here would credit it twice
        raise Conflict(f"该对账单明细的流水号 {line.reference} 已登记为到账记录 {other.id}（{other.status_name}），请匹配那一条")
    # The statement shows where the money arrived (found by a review: a CMB line matched to a
    # receipt recorded for the contract's ICBC account was booked to Assets:Bank:ICBC).
    # A receipt confirmed already stays booked where it was (moving money between the provider's
    # bank accounts is not built): the match is made, as before, and the audit log names both
    # banks; refusing it left the line unmatched for good (a second review).
    bank = bank_of(line, receipt.bank)
    booked = receipt.bank
    if bank != receipt.bank and receipt.status != "confirmed":
        receipt.bank = bank
    _claim_line(session, line, receipt)
    details: dict[str, object] = {"line": line.id, "bank": receipt.bank}
    if bank != receipt.bank:
        details["statement_bank"] = bank
        log.warning("receipt %s booked at %s matched to a line of %s's statement", receipt.id, booked, bank)
    audit.record(session, actor, "match_statement_line", "receipt", str(receipt.id), **details)
    return receipt


def amount_mismatch(line: StatementLine, receipt: Receipt) -> str:
    """Why a line and a receipt of different amounts cannot be matched, and what finance does."""
    said = f"金额不一致，不能匹配：对账单 {format_money(line.amount)} 元，到账记录 {receipt.id} 登记 {format_money(receipt.amount)} 元"
    undo = "冲销" if receipt.status == "confirmed" else "驳回"
    return f"{said}；请核实后{undo}到账记录 {receipt.id}（写明实际到账金额），再按对账单登记这笔汇款"


def _claim_line(session: Session, line: StatementLine, receipt: Receipt) -> None:
    """Tie `line` to `receipt` unless another transaction tied it to another receipt meanwhile.
    Found by a review: two finance users matching one line to two receipts at once (a transfer
    the customer had recorded twice) both read it free, and both receipts were credited."""
    claimed = session.execute(
        sa.update(StatementLine)
        .where(
            StatementLine.id == line.id,
            sa.or_(StatementLine.receipt_id.is_(None), StatementLine.receipt_id == receipt.id),
            StatementLine.ignored_at.is_(None),  # set aside meanwhile by another finance user
        )
        .values(receipt_id=receipt.id)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if not claimed:
        session.refresh(line)
        _refuse_ignored(line)
        raise Conflict(f"该对账单明细已匹配到账记录 {line.receipt_id}")
    receipt.statement_line_id = line.id


def receipt_from_line(
    session: Session, line_id: int | str, *, account_code: str, actor: str, default_bank: str, documents_root: Path, max_voucher_bytes: int
) -> Receipt:
    """Record the receipt a statement line shows, for the given account (the bank statement is
    the evidence; no voucher needed)."""
    from backoffice.services.receipts import record_receipt

    line = get_line(session, line_id)
    if line.receipt_id is not None:
        raise Conflict(f"该对账单明细已匹配到账记录 {line.receipt_id}")
    _refuse_ignored(line)
    receipt = record_receipt(
        session, account_code=account_code, amount=line.amount, paid_on=line.booked_on, payer_name=line.payer_name,
        bank_reference=line.reference, bank=bank_of(line, default_bank), voucher=None, recorded_by=actor,
        documents_root=documents_root, max_voucher_bytes=max_voucher_bytes,
    )  # fmt: skip
    _claim_line(session, line, receipt)
    return receipt


def link_line(session: Session, line_id: int | str, receipt_id: int | str, *, actor: str) -> Receipt:
    """Tie a statement line to a receipt confirmed before the statement came: the bank saw the
    money credited already; nothing is credited again (as `finance match` does for it)."""
    from backoffice.services.receipts import get_receipt

    receipt = get_receipt(session, receipt_id)
    if receipt.status != "confirmed":
        raise Conflict(f"到账记录 {receipt.id} 当前状态为“{receipt.status_name}”，不是已入账的到账，请用“确认匹配并入账”")
    line = get_line(session, line_id)
    if line.receipt_id == receipt.id:  # a second tab, a second click (found by an exploratory test: "关联成功" again, audited twice)
        raise Conflict(f"该对账单明细已关联到账记录 {receipt.id}，无需重复操作")
    return match_line(session, line_id, receipt.id, actor=actor)


def _refuse_ignored(line: StatementLine) -> None:
    if line.ignored_at is not None:
        raise Conflict(f"该对账单明细已被忽略（{line.ignore_reason}），如需匹配或登记，请先在“已忽略的明细”中恢复")


def ignore_line(session: Session, line_id: int | str, *, reason: str | None, actor: str) -> StatementLine:
    """Set a line aside with a reason (not a customer's money, or settled by hand), so the queue
    can be emptied; kept and listed with the reason, and restored with `restore_line`."""
    text = audit.reason_text(reason)
    line = get_line(session, line_id)
    if line.receipt_id is not None:
        raise Conflict(f"该对账单明细已匹配到账记录 {line.receipt_id}，不能忽略")
    _refuse_ignored(line)
    # One conditional UPDATE: a match made meanwhile by another finance user wins.
    moved = session.execute(
        sa.update(StatementLine)
        .where(StatementLine.id == line.id, StatementLine.receipt_id.is_(None), StatementLine.ignored_at.is_(None))
        .values(ignored_at=utcnow(), ignored_by=actor, ignore_reason=text)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(line)
    if not moved:
        _refuse_ignored(line)
        raise Conflict(f"该对账单明细已匹配到账记录 {line.receipt_id}，不能忽略")
    audit.record(session, actor, "ignore_statement_line", "statement_line", str(line.id), reference=line.reference, reason=text)
    return line


def restore_line(session: Session, line_id: int | str, *, actor: str) -> StatementLine:
    """Put a line set aside back on the queue (its reason stays in the audit log)."""
    line = get_line(session, line_id)
    if line.ignored_at is None:
        raise Conflict("该对账单明细未被忽略，无需恢复")
    reason = line.ignore_reason
    line.ignored_at, line.ignored_by, line.ignore_reason = None, None, None
    audit.record(session, actor, "restore_statement_line", "statement_line", str(line.id), reference=line.reference, was=reason)
    return line


def ignored_lines(session: Session) -> list[StatementLine]:
    """The lines set aside, latest first."""
    query = sa.select(StatementLine).where(StatementLine.ignored_at.is_not(None))
    return list(session.scalars(query.order_by(StatementLine.ignored_at.desc(), StatementLine.id.desc())))
