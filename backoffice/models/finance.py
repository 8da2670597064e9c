"""Money coming in and documents going out: bank-transfer receipts, imported bank statements,
invoices, and the outbox of notifications to customers."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.clock import utcnow
from backoffice.models.accounts import EnterpriseAccount
from backoffice.models.base import EVENT_ID_LENGTH, Base, Money, UTCDateTime

# pending: recorded, waiting for finance; approved: first of two finance approvals given
# (four-eyes); confirmed: credited; rejected: refused with a reason the customer sees;
# reversed: credited, then undone by a reversing entry with a reason.
RECEIPT_STATUSES = {
    "pending": "待确认",
    "approved": "已初审，待复核",
    "confirmed": "已确认入账",
    "rejected": "已驳回",
    "reversed": "已冲销",
}

INVOICE_STATUSES = {"unpaid": "待付款", "paid": "已付款", "void": "已作废"}
# Shown, not stored: an unpaid contract invoice some instalments of which were paid (the status
# stays unpaid until nothing is owed; what is, services.invoices.amounts_owed works out).
PART_PAID = "部分付款"


LIVE_RECEIPT = ("pending", "approved", "confirmed")
LIVE_RECEIPT_SQL = "status IN ('pending', 'approved', 'confirmed')"


class Receipt(Base):
    """A bank transfer a customer says they made (or finance saw arrive), with its voucher."""

    __tablename__ = "receipts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    paid_on: Mapped[date]
    payer_name: Mapped[str] = mapped_column(sa.String(200))
    bank: Mapped[str] = mapped_column(sa.String(16))  # the provider's receiving bank (books account)
    bank_reference: Mapped[str] = mapped_column(sa.String(64))
    voucher_file: Mapped[str | None] = mapped_column(sa.String(300))
    voucher_name: Mapped[str | None] = mapped_column(sa.String(200))
    voucher_type: Mapped[str | None] = mapped_column(sa.String(40))
    voucher_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    recorded_by: Mapped[str] = mapped_column(sa.String(80))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_by: Mapped[str | None] = mapped_column(sa.String(80))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_by: Mapped[str | None] = mapped_column(sa.String(80))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rejected_by: Mapped[str | None] = mapped_column(sa.String(80))
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rejection_reason: Mapped[str | None] = mapped_column(sa.String(500))
    reversed_by: Mapped[str | None] = mapped_column(sa.String(80))
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reversal_reason: Mapped[str | None] = mapped_column(sa.String(500))
    ledger_event_id: Mapped[str | None] = mapped_column(sa.String(EVENT_ID_LENGTH))
    statement_line_id: Mapped[int | None] = mapped_column(sa.ForeignKey("statement_lines.id"))

    account: Mapped[EnterpriseAccount] = relationship()

    __table_args__ = (
        # A bank reference belongs to at most one live receipt: the same transfer is never
        # entered (and so never credited) twice, whichever receiving bank a form assumed for the
        # account. A rejected or reversed receipt frees it, so the transfer can be entered again
        # as it really was (the amount mistyped, confirmed to the wrong account).
        sa.Index(
            "uq_receipts_live_bank_reference",
            "bank_reference",
            unique=True,
            sqlite_where=sa.text(LIVE_RECEIPT_SQL),
            postgresql_where=sa.text(LIVE_RECEIPT_SQL),
        ),  # fmt: skip
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("status in ('pending', 'approved', 'confirmed', 'rejected', 'reversed')", name="status"),
    )

    @property
    def status_name(self) -> str:
        return RECEIPT_STATUSES.get(self.status, self.status)

    @property
    def by_customer(self) -> bool:
        """Recorded by the customer in the portal (a sub-account's login), not by finance."""
        return self.recorded_by.startswith("sub:")


class StatementImport(Base):
    """One bank statement file imported by finance (all its lines, or none)."""

    __tablename__ = "statement_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    file_name: Mapped[str] = mapped_column(sa.String(200))
    file_sha256: Mapped[str] = mapped_column(sa.String(64))
    layout: Mapped[str] = mapped_column(sa.String(40))
    imported_by: Mapped[str] = mapped_column(sa.String(80))
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    line_count: Mapped[int] = mapped_column(default=0)
    skipped_debits: Mapped[int] = mapped_column(default=0)
    duplicate_lines: Mapped[int] = mapped_column(default=0)

    lines: Mapped[list[StatementLine]] = relationship(back_populates="statement", order_by="StatementLine.line_no")


class StatementLine(Base):
    """A credit on the provider's bank account, as the bank reports it."""

    __tablename__ = "statement_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    statement_id: Mapped[int] = mapped_column(sa.ForeignKey("statement_imports.id"), index=True)
    line_no: Mapped[int]
    booked_on: Mapped[date]
    amount: Mapped[Decimal] = mapped_column(Money)
    payer_name: Mapped[str] = mapped_column(sa.String(200))
    payer_account: Mapped[str | None] = mapped_column(sa.String(64))
    reference: Mapped[str] = mapped_column(sa.String(64))
    memo: Mapped[str] = mapped_column(sa.String(500), default="")
    receipt_id: Mapped[int | None] = mapped_column(sa.ForeignKey("receipts.id", use_alter=True), unique=True)
    # Set aside by finance with a reason (not a customer's money: interest, a refund, a transfer
    # between the provider's own accounts; or one finance settled by hand): off the queue, kept.
    ignored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ignored_by: Mapped[str | None] = mapped_column(sa.String(80))
    ignore_reason: Mapped[str | None] = mapped_column(sa.String(500))

    statement: Mapped[StatementImport] = relationship(back_populates="lines")

    __table_args__ = (
        # The same bank transaction in two overlapping exports is imported once.
        sa.UniqueConstraint("reference", "booked_on", "amount", name="bank_transaction"),
    )


class Invoice(Base):
    """The provider's invoice to a customer: for a confirmed recharge (paid), or issued at signing
    under an invoice-first contract (unpaid until the money arrives, due in N working days)."""

    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(sa.String(32), unique=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"), index=True)
    contract_id: Mapped[int | None] = mapped_column(sa.ForeignKey("contracts.id"))
    receipt_id: Mapped[int | None] = mapped_column(sa.ForeignKey("receipts.id"))
    issued_on: Mapped[date]
    due_on: Mapped[date | None]
    amount: Mapped[Decimal] = mapped_column(Money)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(16), default="unpaid", index=True)
    paid_on: Mapped[date | None]
    pdf_file: Mapped[str] = mapped_column(sa.String(300))
    pdf_sha256: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    account: Mapped[EnterpriseAccount] = relationship()

    __table_args__ = (sa.CheckConstraint("status in ('unpaid', 'paid', 'void')", name="status"),)

    def is_overdue(self, today: date) -> bool:
        return self.status == "unpaid" and self.due_on is not None and today > self.due_on

    def is_part_paid(self, owed: Decimal | None) -> bool:
        """Unpaid, and paid in part: `owed`, what is still owed on it (invoices.amounts_owed), is
        less than its amount and more than nothing."""
        return self.status == "unpaid" and owed is not None and 0 < owed < self.amount

    def status_name(self, today: date, owed: Decimal | None = None) -> str:
        """The status as people read it: 已逾期 past the due date (paid in part or not), 部分付款
        when `owed` (from invoices.amounts_owed) says some of it was paid, else the stored one.
        Found by an exploratory test: an invoice paid in instalments showed 待付款 everywhere."""
        if self.is_overdue(today):
            return "已逾期"
        return PART_PAID if self.is_part_paid(owed) else INVOICE_STATUSES.get(self.status, self.status)

    def unpaid_name(self, owed: Decimal | None) -> str:
        """An unpaid invoice's status without the date: 部分付款 or 待付款 (a message about what is owed)."""
        return PART_PAID if self.is_part_paid(owed) else INVOICE_STATUSES["unpaid"]


class WorkingDayOverride(Base):
    """The official calendar for years the calendar library does not cover yet (maintained by an
    administrator from the State Council's notice): a holiday, or a make-up working day."""

    __tablename__ = "working_day_overrides"

    day: Mapped[date] = mapped_column(primary_key=True)
    is_working_day: Mapped[bool]
    note: Mapped[str] = mapped_column(sa.String(100), default="")


class Notification(Base):
    """One message to a customer in the outbox: sent by a job, with retries, exactly once per key."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(120), unique=True)  # what it is about: sent once per key
    channel: Mapped[str] = mapped_column(sa.String(8))  # email | sms
    account_id: Mapped[int | None] = mapped_column(sa.ForeignKey("enterprise_accounts.id"), index=True)
    recipient: Mapped[str] = mapped_column(sa.String(200))
    subject: Mapped[str] = mapped_column(sa.String(200), default="")
    body: Mapped[str] = mapped_column(sa.Text)
    attachments: Mapped[list[str]] = mapped_column(sa.JSON, default=list)  # paths under DOCUMENTS_PATH
    # pending -> sending -> sent (over SMTP / the dispatcher) or written (outbox folder);
    # failed after the last attempt.
    status: Mapped[str] = mapped_column(sa.String(12), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_to: Mapped[str | None] = mapped_column(sa.String(300))  # SMTP host or outbox file

    account: Mapped[EnterpriseAccount | None] = relationship()

    __table_args__ = (
        sa.CheckConstraint("channel in ('email', 'sms')", name="channel"),
        sa.CheckConstraint("status in ('pending', 'sending', 'sent', 'written', 'failed')", name="status"),
    )
