"""Contracts issued from templates, their gapless numbering, and the renewal jobs they arm."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.clock import utcnow
from backoffice.models.accounts import EnterpriseAccount
from backoffice.models.base import Base, Money, UTCDateTime

#: Where a contract stands as an agreement. `issued`: generated and signed by both sides, in force
#: (all five texts: effective once both sides have signed and sealed), paid or not; a renewal makes
#: it `renewed`, its end `expired` or `terminated`. Whether it is being performed (paid, the account
#: open: 004 §3, 003 §4.2) is the account's status (待付款开通 → 正常), shown beside it on the
#: contract page, the register and the portal. There was an `active` (履行中) for that, which no code
#: ever set: kept on the contract it would be a second copy of the account's status to keep in step
#: on every payment, reversal (back to awaiting payment), suspension and renewal, a renewed contract
#: could not be both, and `status` in `account show --json` (`contract_status`) and `contract
#: renew|stop-renewal --json` would change under the scripts reading it (DESIGN: stable interfaces).
CONTRACT_STATUSES = {
    "issued": "已签署（生效）",
    "renewed": "已续签",
    "expired": "已到期",
    "terminated": "已终止",
}

#: A contract in one of these has ended: it no longer lets its account send.
ENDED_CONTRACT_STATUSES = ("expired", "terminated")

RENEWAL_RULES = {
    "fixed_term": "固定期限",
    "long_term": "长期有效",
    "until_used_up": "余额用完为止（零余额保留1个月）",
    "yearly_auto_extend": "12个月，无书面异议自动顺延一年",
}

#: A contract job's kind as staff read it (`ContractJob.kind` keeps the code the scheduler runs by).
JOB_KINDS = {
    "renewal_notice": "续约提醒",
    "expire": "到期（暂停账户发送）",
    "auto_extend": "自动顺延一年",
}


class DocumentSequence(Base):
    """Last number handed out per series and year. Taken with an atomic UPDATE inside the
    business transaction, so a rolled-back issue gives its number back: gapless."""

    __tablename__ = "document_sequences"

    series: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    year: Mapped[int] = mapped_column(primary_key=True)
    last_value: Mapped[int] = mapped_column(default=0)


class Contract(Base):
    __tablename__ = "contracts"

    id: Mapped[int] = mapped_column(primary_key=True)
    contract_no: Mapped[str] = mapped_column(sa.String(32), unique=True)
    template_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="issued")
    submission_key: Mapped[str] = mapped_column(sa.String(64), unique=True)
    customer_name: Mapped[str] = mapped_column(sa.String(200), index=True)
    fields: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    terms: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    price_per_message: Mapped[Decimal] = mapped_column(Money)
    initial_messages: Mapped[int]
    initial_amount: Mapped[Decimal] = mapped_column(Money)
    opening_fee: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    term_start: Mapped[date | None]
    term_end: Mapped[date | None]
    renewal_rule: Mapped[str] = mapped_column(sa.String(24))
    customer_signer: Mapped[str] = mapped_column(sa.String(64))
    customer_signed_on: Mapped[date]
    provider_signer: Mapped[str] = mapped_column(sa.String(64))
    provider_signed_on: Mapped[date]
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issued_by: Mapped[str] = mapped_column(sa.String(80))
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"), index=True)
    pdf_file: Mapped[str] = mapped_column(sa.String(255))
    pdf_sha256: Mapped[str] = mapped_column(sa.String(64))
    docx_file: Mapped[str] = mapped_column(sa.String(255))
    docx_sha256: Mapped[str] = mapped_column(sa.String(64))

    account: Mapped[EnterpriseAccount] = relationship()
    jobs: Mapped[list[ContractJob]] = relationship(back_populates="contract", order_by="ContractJob.due_on")

    __table_args__ = (
        sa.CheckConstraint("initial_amount >= 0", name="initial_amount_not_negative"),
        sa.CheckConstraint("term_end IS NULL OR term_start IS NULL OR term_end >= term_start", name="term_order"),
    )

    @property
    def status_name(self) -> str:
        return CONTRACT_STATUSES.get(self.status, self.status)

    @property
    def renewal_rule_name(self) -> str:
        return RENEWAL_RULES.get(self.renewal_rule, self.renewal_rule)


def live_contracts_of(account_id: int, *, besides: int | None = None) -> sa.Select[tuple[int]]:
    """How many of the account's contracts have not ended (expired, terminated), `besides` one."""
    query = (
        sa.select(sa.func.count())
        .select_from(Contract)
        .where(Contract.account_id == account_id, Contract.status.not_in(ENDED_CONTRACT_STATUSES))
    )
    return query.where(Contract.id != besides) if besides is not None else query


class ContractJob(Base):
    """A dated action the contract's renewal rule requires. Written in the issuing transaction
    (so it cannot be lost), then armed in APScheduler's persistent job store under `job_id`."""

    __tablename__ = "contract_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(sa.ForeignKey("contracts.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    due_on: Mapped[date]
    job_id: Mapped[str] = mapped_column(sa.String(96), unique=True)
    armed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(sa.String(200))

    contract: Mapped[Contract] = relationship(back_populates="jobs")

    @property
    def kind_name(self) -> str:
        return JOB_KINDS.get(self.kind, self.kind)
