"""The customer's enterprise account (企业号), which holds the prepaid balance, and its sub-accounts (子号)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.clock import utcnow
from backoffice.models.base import Base, Money, UTCDateTime

# awaiting_payment: opened with the contract, credit not yet paid (not spendable);
# active: credit spendable; suspended / closed: no sending.
ACCOUNT_STATUSES = {
    "awaiting_payment": "待付款开通",
    "active": "正常",
    "suspended": "暂停",
    "closed": "已关闭",
}
#: An account in one of these has ended for good: no receipt is recorded on it. (A suspended
#: account keeps its balance for a renewal, which the customer pays: it is not ended.)
ENDED_ACCOUNT_STATUSES = ("closed",)


class EnterpriseAccount(Base):
    __tablename__ = "enterprise_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    customer_name: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(24), default="awaiting_payment")
    # Spendable prepaid credit; equals Liabilities:Prepaid:<code> in the books.
    balance: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    # Credit contracted but not yet paid (not spendable) and what the customer owes for it.
    # The database's default of 0 dates from 1af4d809f59b, which added them to existing rows; the
    # model says it too, so that create_all builds what the migrations do (a raw INSERT owes nothing).
    contracted_credit: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), server_default="0")
    receivable: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), server_default="0")
    price_per_message: Mapped[Decimal] = mapped_column(Money)
    sms_signature: Mapped[str | None] = mapped_column(sa.String(32))
    service_code: Mapped[str | None] = mapped_column(sa.String(32))
    reserved_mobile: Mapped[str | None] = mapped_column(sa.String(20))
    contact_email: Mapped[str | None] = mapped_column(sa.String(200))
    contact_phone: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Sending settings (004 §2.2(1): the provider may throttle; 000 §8: blacklist after violations).
    rate_limit_per_second: Mapped[int] = mapped_column(default=100, server_default="100")
    add_signature: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    violation_count: Mapped[int] = mapped_column(default=0, server_default="0")
    blacklisted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    sub_accounts: Mapped[list[SubAccount]] = relationship(back_populates="account", order_by="SubAccount.id", cascade="all, delete-orphan")

    __table_args__ = (
        sa.CheckConstraint("balance >= 0", name="balance_not_negative"),
        sa.CheckConstraint("contracted_credit >= 0", name="contracted_not_negative"),
        sa.CheckConstraint("receivable >= 0", name="receivable_not_negative"),
        sa.CheckConstraint("status in ('awaiting_payment', 'active', 'suspended', 'closed')", name="status"),
    )

    @property
    def status_name(self) -> str:
        return ACCOUNT_STATUSES.get(self.status, self.status)


class SubAccount(Base):
    """A login under the enterprise account; the primary one carries the enterprise number itself."""

    __tablename__ = "sub_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"), index=True)
    login: Mapped[str] = mapped_column(sa.String(40), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(256))
    is_primary: Mapped[bool] = mapped_column(default=False)
    must_change_password: Mapped[bool] = mapped_column(default=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # See backoffice.auth. Deferred, with no Python default: rows are written and read without it
    # by code that predates it (a database at an older revision, as the migration tests make).
    session_nonce: Mapped[str] = mapped_column(sa.String(32), server_default="", deferred=True)
    __mapper_args__ = {"eager_defaults": False}  # session_nonce is read when needed, not RETURNING at insert

    account: Mapped[EnterpriseAccount] = relationship(back_populates="sub_accounts")


def codes_nesting_with(service_code: str) -> sa.Select[tuple[str, str, str]]:
    """The live (not closed) accounts whose service code is `service_code`, begins it, or begins
    with it, oldest first: (account code, customer name, service code). Replies go to the longest
    code their address begins with (`messaging.record_reply`), so such codes cannot be told apart."""
    column = EnterpriseAccount.service_code
    return (
        sa.select(EnterpriseAccount.code, EnterpriseAccount.customer_name, column)
        .where(
            column.is_not(None),
            column != "",
            EnterpriseAccount.status != "closed",
            sa.or_(
                column == service_code,
                sa.func.substr(sa.literal(service_code), 1, sa.func.length(column)) == column,  # theirs begins it
                sa.func.substr(column, 1, len(service_code)) == service_code,  # it begins theirs
            ),
        )
        .order_by(EnterpriseAccount.id)
    )
