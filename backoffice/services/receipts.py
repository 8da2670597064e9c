"""Bank-transfer receipts: recorded by the customer or finance with the remittance voucher,
confirmed by finance (four-eyes above a configured amount), which credits the account, books
the money, issues the invoice and notifies the customer; or rejected, or reversed, with a reason.

Confirmation is one conditional UPDATE of the receipt's status, so of two finance users (or a
retried request) only one moves it; the credit itself is keyed on the bank reference as well."""

from __future__ import annotations

import hashlib
import io
import unicodedata
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image
from sqlalchemy.orm import Session

from backoffice.clock import local_today, utcnow
from backoffice.config import BANK_CODE
from backoffice.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from backoffice.models import EnterpriseAccount, Invoice, Receipt, StatementLine
from backoffice.models.accounts import ENDED_ACCOUNT_STATUSES
from backoffice.models.finance import LIVE_RECEIPT
from backoffice.models.ledger import REVERSAL_REASON_LENGTH
from backoffice.money import MoneyFormatError, format_money, parse_decimal
from backoffice.services import audit
from backoffice.services.accounts import get_account
from backoffice.services.credit import closed_account, credit_receipt, reverse_event
from backoffice.services.sql import MAX_INT_ID
from backoffice.services.staged_files import stage_file
from reports.bank_statements import REFERENCE, normal_reference

VOUCHER_TYPES = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}
_BANK_REFERENCE = REFERENCE  # one pattern for a receipt and a statement line
# The provider's receiving banks, by the name printed in its contracts; the code names the
# books account Assets:Bank:<code>.
BANK_CODES = {
    "招商银行": "CMB", "工商银行": "ICBC", "建设银行": "CCB", "农业银行": "ABC", "中国银行": "BOC", "交通银行": "BOCOM",
    "浦东发展银行": "SPDB", "浦发银行": "SPDB", "中信银行": "CITIC", "民生银行": "CMBC", "兴业银行": "CIB", "光大银行": "CEB",
    "华夏银行": "HXB", "平安银行": "PAB", "广发银行": "CGB", "邮政储蓄银行": "PSBC", "北京银行": "BOB", "上海银行": "BOS",
}  # fmt: skip


#: How far back a transfer may be recorded (older ones are for finance to handle by hand).
MAX_DAYS_AGO = 366


def day_out_of_range(day: date, today: date) -> str | None:
    """Why a transfer of `day` cannot be recorded as a receipt: "future", "too_old", or None.
    (A bank statement's lines are checked the same way at import: services.statements.)"""
    if day > today:
        return "future"
    if (today - day).days > MAX_DAYS_AGO:
        return "too_old"
    return None


def unprintable(text: str) -> str | None:
    """The first control, format (zero-width) or other unprintable character of `text`, or line
    or paragraph separator (U+2028/U+2029: a one-line name over two lines, found by fuzzing), if any."""
    return next((c for c in text if unicodedata.category(c).startswith("C") or unicodedata.category(c) in ("Zl", "Zp")), None)


@dataclass(frozen=True)
class Voucher:
    """A remittance voucher as uploaded: its name on the customer's disk and its bytes."""

    filename: str
    content: bytes


@dataclass(frozen=True)
class Reversal:
    """What a reversal did, for the message finance reads: the invoices it voided or made owed
    again, and whether the account went back to waiting for payment."""

    receipt: Receipt
    voided: list[str]
    owed_again: list[tuple[str, str, Decimal]]  # contract invoices unpaid after it: number, 待付款 or 部分付款, what it owes
    account_reopened: bool

    def summary(self) -> str:
        """In Chinese, only what happened (found by an exploratory test: the message always said
        the contract's invoice was owed again, also when another receipt had paid it)."""
        done = ["冲销分录已入账"]
        if self.voided:
            done.append(f"发票 {'、'.join(self.voided)} 已作废")
        if self.owed_again:
            done.append("、".join(f"合同发票 {number} {status}，尚欠 {format_money(owed)} 元" for number, status, owed in self.owed_again))
        if self.account_reopened:
            done.append(f"账户 {self.receipt.account.code} 改回待付款开通")
        return f"已冲销（{'；'.join(done)}）"


@dataclass(frozen=True)
class Confirmation:
    receipt: Receipt
    credited: bool  # False when this call only gave the first of two approvals (four-eyes)
    already: bool  # True when the receipt had been confirmed before (a retried request)
    invoice: Invoice | None
    balance: Decimal


def bank_code_for(bank_name: str | None, default: str) -> str:
    for name, code in BANK_CODES.items():
        if bank_name and name in bank_name:
            return code
    return default


def receiving_bank(session: Session, account_code: str, *, default: str) -> str:
    """The provider's bank a customer pays into: the one named in the provider details of the
    account's latest contract, else `default` (the RECEIVING_BANK setting)."""
    from backoffice.services.contracts import provider_settings
    from backoffice.services.invoices import latest_contract
    from backoffice.services.templates import get_template

    account = session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == account_code))
    contract = latest_contract(session, account) if account else None
    if contract is None:
        return default
    terms = contract.terms or {}
    if terms.get("provider_bank_code"):  # what the contract printed, with its books code
        return str(terms["provider_bank_code"])
    if printed := terms.get("provider_bank_name"):
        return bank_code_for(printed, default)
    try:  # the contract printed no bank (its template has none): the provider's current details
        provider = provider_settings(session, get_template(contract.template_id))[0]
    except DomainError:  # the template folder was removed or no longer loads: its bank is unknown
        return default
    return provider.get("bank_code") or bank_code_for(provider.get("bank_name"), default)


def parse_amount(raw: object, errors: dict[str, str], field: str = "amount") -> Decimal | None:
    """A transfer amount: a plain number, more than 0, at most 2 decimals (the bank's fen)."""
    try:
        amount = parse_decimal(raw, places=2)
    except MoneyFormatError as exc:
        errors[field] = f"金额无效（{exc}）：应为大于 0、最多 2 位小数的数字，如 1750.00"
        return None
    if amount <= 0:
        errors[field] = "金额必须大于 0"
        return None
    if amount >= Decimal("1e12"):
        errors[field] = "金额过大"
        return None
    return amount


def size_text(size: int) -> str:
    """A size limit as people read it: 5 MB, 5.5 MB, 512 KB."""
    if size < 1048576:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1048576:.1f}".removesuffix(".0") + " MB"


def check_voucher(voucher: Voucher, max_bytes: int, errors: dict[str, str]) -> tuple[str, str] | None:
    """(mime type, file extension) of an acceptable voucher: a PDF or a PNG/JPEG image that
    decodes, within the size limit, with a plain file name."""
    name = voucher.filename or ""
    if not name.strip() or any(c in name for c in "/\\") or name.strip(". ") == "" or ".." in name:
        errors["voucher"] = "凭证文件名不能包含路径（/、\\ 或 ..），请只上传文件本身"
        return None
    if any(unicodedata.category(c).startswith("C") for c in name) or len(name) > 200:
        errors["voucher"] = "凭证文件名含有控制字符或过长"
        return None
    if not voucher.content:
        errors["voucher"] = "凭证文件是空的"
        return None
    if len(voucher.content) > max_bytes:
        # No size named: only limit + 1 bytes are read (found by an exploratory test: a 6.3 MB
        # file was "过大（5.0 MB），最大 5 MB"), and what was read is not the file's size.
        errors["voucher"] = f"凭证文件超过 {size_text(max_bytes)} 的上限，请压缩或改用较小的扫描件、截图后重新上传"
        return None
    head = voucher.content[:8]
    if head.startswith(b"%PDF-"):
        if b"%%EOF" not in voucher.content[-2048:]:
            errors["voucher"] = "凭证 PDF 文件不完整或已损坏"
            return None
        return "application/pdf", "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        expected = "PNG" if head.startswith(b"\x89PNG") else "JPEG"
        try:
            with Image.open(io.BytesIO(voucher.content), formats=[expected]) as image:
                if image.width * image.height > 40_000_000:
                    raise ValueError("too many pixels")
                image.verify()
        except Exception:  # Pillow raises many kinds on broken data
            errors["voucher"] = "凭证图片已损坏或尺寸过大，无法读取"
            return None
        return ("image/png", "png") if expected == "PNG" else ("image/jpeg", "jpg")
    errors["voucher"] = "凭证文件类型不支持：只接受 PDF、PNG 或 JPEG"
    return None


def live_receipt_with(session: Session, reference: str, *, other_than: int | None = None) -> Receipt | None:
    """A live receipt recorded under this bank reference (other than `other_than`), if any: in
    any letter case (found by a review: "cmb2026…" and "CMB2026…" were two receipts, credited
    twice; references are stored upper-case since, older rows may not be)."""
    query = sa.select(Receipt).where(sa.func.upper(Receipt.bank_reference) == reference.upper(), Receipt.status.in_(LIVE_RECEIPT))
    if other_than is not None:
        query = query.where(Receipt.id != other_than)
    return session.scalar(query.limit(1))


def _matched_under(session: Session, reference: str) -> Receipt | None:
    """The live receipt a bank statement line with this reference was matched to, if any."""
    return session.scalar(
        sa.select(Receipt)
        .join(StatementLine, StatementLine.receipt_id == Receipt.id)
        .where(sa.func.upper(StatementLine.reference) == reference.upper(), Receipt.status.in_(LIVE_RECEIPT))
        .limit(1)
    )


def record_receipt(
    session: Session,
    *,
    account_code: str,
    amount: object,
    paid_on: object,
    payer_name: str | None,
    bank_reference: str,
    bank: str,
    voucher: Voucher | None,
    recorded_by: str,
    documents_root: Path,
    max_voucher_bytes: int,
    today: date | None = None,
) -> Receipt:
    """Record a transfer the customer made, on an account that is not closed. Every problem with
    the input is reported at once (ValidationFailed per field); nothing is written unless all is
    well. The caller commits."""
    errors: dict[str, str] = {}
    # Codes are issued upper-case (E000001); found by an exploratory test: e000002 was 账户不存在.
    code = (account_code or "").strip().upper()
    account = session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code))
    if account is None:
        errors["account"] = f"账户不存在：{account_code}"
    elif account.status in ENDED_ACCOUNT_STATUSES:
        # Found by a review: 按此登记 offered a closed account of the payer's name, and the credit
        # went to an account that can never send (nothing in the lifecycle reopens one).
        errors["account"] = (
            f"账户 {account.code}（{account.customer_name}）{account.status_name}，不能再登记到账："
            "如客户已开新账户，请登记到新账户；否则请与客户联系，人工处理这笔汇款"
        )
    value = parse_amount(amount, errors)
    day: date | None = None
    today = today or local_today()
    try:
        day = paid_on if isinstance(paid_on, date) else date.fromisoformat(str(paid_on).strip())
    except ValueError:
        errors["paid_on"] = "汇款日期无效，格式应为 YYYY-MM-DD"
    if day is not None and (problem := day_out_of_range(day, today)):
        errors["paid_on"] = "汇款日期不能晚于今天" if problem == "future" else "汇款日期早于一年前，请联系财务人工处理"
    if not isinstance(bank, str) or not BANK_CODE.fullmatch(bank):
        # The books' Assets:Bank:<code>: a code beancount refuses would fail at confirmation, later.
        errors["bank"] = f"收款银行代码应为 2–16 位大写字母或数字、以字母开头（如 CMB、ICBC）：{str(bank)[:20]}"
    # One transfer, however its number was typed: spaces dropped and upper-cased as the statement
    # parser does (found by an exploratory test: "K 2026120700001" was 银行流水号无效).
    reference = normal_reference(bank_reference or "")
    if not _BANK_REFERENCE.fullmatch(reference):
        errors["bank_reference"] = "银行流水号无效：1–64 位字母、数字或 - _ / ."
    else:
        # Under this number: a live receipt, or the bank's number of a transfer already matched to
        # a receipt recorded under the customer's own (found by a review: recording it again
        # credited it twice).
        live = live_receipt_with(session, reference)
        clash = live or _matched_under(session, reference)
        if clash is not None and recorded_by.startswith("sub:") and (account is None or clash.account_id != account.id):
            # A customer learns nothing of another customer's transfer (its record, its state).
            errors["bank_reference"] = f"银行流水号 {reference} 已登记过，不能重复登记；如确为本账户的汇款，请联系财务"
        elif live is not None:
            errors["bank_reference"] = f"银行流水号 {reference} 已登记过（到账记录 {live.id}，{live.status_name}），不能重复登记"
        elif clash is not None:
            errors["bank_reference"] = f"银行流水号 {reference} 的汇款已与到账记录 {clash.id}（{clash.status_name}）对账匹配，不能重复登记"
    payer = (payer_name or "").strip() or (account.customer_name if account else "")
    if len(payer) > 200 or unprintable(payer) is not None:
        errors["payer_name"] = "付款人名称过长或含有控制字符"
    kind = check_voucher(voucher, max_voucher_bytes, errors) if voucher is not None else None
    if errors:
        raise ValidationFailed(errors)
    assert account is not None and value is not None and day is not None
    receipt = Receipt(
        account=account, amount=value, paid_on=day, payer_name=payer, bank=bank, bank_reference=reference, recorded_by=recorded_by
    )
    session.add(receipt)
    try:
        session.flush()
    except sa.exc.IntegrityError:  # the same reference recorded at the same moment elsewhere
        raise Conflict(f"银行流水号 {reference} 已登记过，不能重复登记") from None
    if voucher is not None and kind is not None:
        digest = hashlib.sha256(voucher.content).hexdigest()
        relative = Path("vouchers") / str(day.year) / f"R{receipt.id:06d}-{digest[:12]}.{kind[1]}"
        stage_file(session, documents_root / relative, voucher.content)
        receipt.voucher_file, receipt.voucher_name = str(relative), voucher.filename
        receipt.voucher_type, receipt.voucher_sha256 = kind[0], digest
    audit.record(
        session,
        recorded_by,
        "record_receipt",
        "receipt",
        str(receipt.id),
        account=account.code,
        amount=format_money(value),
        bank_ref=reference,
    )
    return receipt


def get_receipt(session: Session, receipt_id: int | str) -> Receipt:
    try:
        ident = int(receipt_id)
    except (TypeError, ValueError):
        raise NotFound(f"到账记录不存在：{receipt_id}") from None
    if not 0 < ident <= MAX_INT_ID:
        raise NotFound(f"到账记录不存在：{receipt_id}")
    receipt = session.get(Receipt, ident)
    if receipt is None:
        raise NotFound(f"到账记录不存在：{receipt_id}")
    return receipt


def _move(session: Session, receipt: Receipt, allowed: tuple[str, ...], **values: Any) -> bool:
    """Change the receipt's status only if it is still in one of `allowed` (one atomic UPDATE):
    the one caller that wins goes on, every other one learns it lost."""
    result = session.execute(
        sa.update(Receipt)
        .where(Receipt.id == receipt.id, Receipt.status.in_(allowed))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(receipt)
    return bool(result.rowcount)


def _refuse_state(receipt: Receipt, action: str) -> None:
    if receipt.status == "rejected":
        raise Conflict(f"到账记录 {receipt.id} 已被驳回（{receipt.rejection_reason}），不能{action}")
    if receipt.status == "reversed":
        raise Conflict(f"到账记录 {receipt.id} 已冲销（{receipt.reversal_reason}），不能{action}")
    raise Conflict(f"到账记录 {receipt.id} 当前状态为“{receipt.status_name}”，不能{action}")


def confirm_receipt(
    session: Session,
    receipt_id: int | str,
    *,
    actor: str,
    four_eyes_threshold: Decimal,
    documents_root: Path,
    today: date | None = None,
) -> Confirmation:
    """Finance confirms that the money arrived: in the caller's transaction the account is
    credited (the bank reference is the money event's id), the books get the receipt, an
    invoice is issued and the customer is notified. Above the four-eyes threshold two different
    finance users are needed, and nobody confirms a receipt they recorded themselves."""
    from backoffice.services import invoices, notifications

    receipt = get_receipt(session, receipt_id)
    if receipt.status == "confirmed":
        # The one issued for it (an overpayment also paid the contract's invoice, an older id).
        invoice = session.scalar(sa.select(Invoice).where(Invoice.receipt_id == receipt.id).order_by(Invoice.id.desc()).limit(1))
        return Confirmation(receipt, credited=False, already=True, invoice=invoice, balance=receipt.account.balance)
    if receipt.status not in ("pending", "approved"):
        _refuse_state(receipt, "确认入账")
    if receipt.account.status in ENDED_ACCOUNT_STATUSES:
        # Found by a review: a receipt recorded before its account was closed was still credited,
        # money on an account that can never send again (credit_receipt checks again under its lock).
        raise closed_account(receipt.account, "确认入账")
    now = utcnow()
    if receipt.amount > four_eyes_threshold:
        if actor == receipt.recorded_by:
            raise Forbidden(
                f"四眼原则：金额超过 {format_money(four_eyes_threshold)} 元的到账须由另一位财务人员确认，不能确认自己登记的到账"
            )
        if actor == receipt.approved_by:
            raise Forbidden("四眼原则：初审和复核须由两位不同的财务人员完成，您已初审过这笔到账")
        # Two people must have looked at it: the finance user who recorded it, or a first approver.
        if not receipt.recorded_by.startswith("staff:") and receipt.approved_by is None:
            if not _move(session, receipt, ("pending",), status="approved", approved_by=actor, approved_at=now):
                return confirm_receipt(
                    session, receipt_id, actor=actor, four_eyes_threshold=four_eyes_threshold, documents_root=documents_root, today=today
                )
            audit.record(session, actor, "approve_receipt", "receipt", str(receipt.id))
            return Confirmation(receipt, credited=False, already=False, invoice=None, balance=receipt.account.balance)
    if not _move(session, receipt, ("pending", "approved"), status="confirmed", confirmed_by=actor, confirmed_at=now):
        # Someone else moved it between our read and our update: answer as they left it.
        if receipt.status == "confirmed":
            return confirm_receipt(
                session, receipt_id, actor=actor, four_eyes_threshold=four_eyes_threshold, documents_root=documents_root, today=today
            )
        _refuse_state(receipt, "确认入账")
    account = receipt.account
    was_awaiting = account.status == "awaiting_payment"
    today = today or local_today()
    # Booked on the day it is confirmed (when the credit becomes spendable); the bank's value
    # date stays on the receipt. Back-dating would contradict balance assertions already written.
    event = credit_receipt(
        session,
        account_code=account.code,
        amount=receipt.amount,
        bank=receipt.bank,
        bank_ref=receipt.bank_reference,
        received_on=today,
        actor=actor,
        receipt_id=receipt.id,
    )
    receipt.ledger_event_id = event.event_id
    session.flush()  # the status change credit_receipt made, before re-reading the columns it bumped
    session.refresh(account)
    settled = Decimal(event.payload.get("settles_receivable", "0"))  # as credit_receipt read it, under its lock
    touched = invoices.invoices_for_receipt(session, receipt, settled=settled, documents_root=documents_root, today=today)
    invoice = touched[-1]  # the one issued for it, else the contract's it paid towards
    owed = invoices.amounts_owed(session, [i for i in touched if i.status == "unpaid"])
    notifications.receipt_confirmed(session, receipt, touched, owed, activated=was_awaiting and account.status == "active")
    audit.record(session, actor, "confirm_receipt", "receipt", str(receipt.id), amount=format_money(receipt.amount), invoice=invoice.number)
    return Confirmation(receipt, credited=True, already=False, invoice=invoice, balance=account.balance)


def reject_receipt(session: Session, receipt_id: int | str, *, reason: str | None, actor: str) -> Receipt:
    """Refuse a recorded transfer (e.g. the money never arrived); the customer sees the reason."""
    from backoffice.services import notifications

    text = audit.reason_text(reason)
    receipt = get_receipt(session, receipt_id)
    if not _move(
        session, receipt, ("pending", "approved"), status="rejected", rejected_by=actor, rejected_at=utcnow(), rejection_reason=text
    ):
        _refuse_state(receipt, "驳回")
    _free_statement_line(session, receipt)
    notifications.receipt_rejected(session, receipt)
    audit.record(session, actor, "reject_receipt", "receipt", str(receipt.id), reason=text)
    return receipt


def reverse_receipt(
    session: Session, receipt_id: int | str, *, reason: str | None, actor: str, documents_root: Path, today: date | None = None
) -> Reversal:
    """Undo a confirmed receipt by a reversing entry (nothing is edited or deleted). Refused when
    the customer has already spent part of the credit (the balance never goes below zero)."""
    from backoffice.services import invoices, notifications

    # Checked against the reversal's ledger event (it keeps fewer characters than the receipt)
    # before anything changes: PostgreSQL refused a longer one only at the flush (found by a review).
    text = audit.reason_text(reason, limit=REVERSAL_REASON_LENGTH)
    receipt = get_receipt(session, receipt_id)
    if not _move(session, receipt, ("confirmed",), status="reversed", reversed_by=actor, reversed_at=utcnow(), reversal_reason=text):
        if receipt.status in ("pending", "approved"):
            raise Conflict(f"到账记录 {receipt.id} 尚未确认入账，无需冲销；如款项未到，请驳回")
        _refuse_state(receipt, "冲销")
    assert receipt.ledger_event_id is not None
    today = today or local_today()
    reverse_event(session, receipt.ledger_event_id, reason=text, on=today, actor=actor)
    session.flush()
    account = receipt.account
    session.refresh(account)
    reopened = account.status == "active" and account.balance == 0 and account.contracted_credit > 0
    if reopened:
        account.status = "awaiting_payment"  # the payment that opened it is undone
    changed = invoices.void_for_receipt(session, receipt, documents_root=documents_root, today=today)
    _free_statement_line(session, receipt)
    owed = invoices.amounts_owed(session, changed)
    notifications.receipt_reversed(session, receipt, changed, owed, account_reopened=reopened)
    audit.record(session, actor, "reverse_receipt", "receipt", str(receipt.id), reason=text)
    return Reversal(
        receipt,
        voided=[i.number for i in changed if i.status == "void"],
        owed_again=[(i.number, i.unpaid_name(owed[i.id]), owed[i.id]) for i in changed if i.status == "unpaid"],
        account_reopened=reopened,
    )


def _free_statement_line(session: Session, receipt: Receipt) -> None:
    """A rejected or reversed receipt lets go of the bank statement line it was matched to: the
    line is to be matched again (to the receipt that enters the transfer correctly). The receipt
    keeps `statement_line_id`, the record of what it was matched to."""
    session.execute(
        sa.update(StatementLine)
        .where(StatementLine.receipt_id == receipt.id)
        .values(receipt_id=None)
        .execution_options(synchronize_session="fetch")
    )


def receipt_queue(session: Session, statuses: tuple[str, ...] = ("pending", "approved")) -> list[Receipt]:
    return list(session.scalars(sa.select(Receipt).where(Receipt.status.in_(statuses)).order_by(Receipt.recorded_at, Receipt.id)))


def receipts_of(session: Session, account_code: str) -> list[Receipt]:
    account = get_account(session, account_code)
    return list(session.scalars(sa.select(Receipt).where(Receipt.account_id == account.id).order_by(Receipt.id.desc())))
