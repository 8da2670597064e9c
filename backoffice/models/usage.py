"""The day's charges per account, carrier and kind, accumulated as messages are accepted and
booked to the ledger as one transaction per day (usage is never booked per message)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.models.base import EVENT_ID_LENGTH, Base, Money

USAGE_KINDS = ("usage", "refund", "refused_content_fee")


class UsageDay(Base):
    __tablename__ = "usage_days"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"), index=True)
    carrier: Mapped[str] = mapped_column(sa.String(8))
    kind: Mapped[str] = mapped_column(sa.String(24))
    messages: Mapped[int] = mapped_column(default=0)
    amount: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    # The ledger event that booked this row; NULL while the day is still open. A charge that
    # arrives after its day was booked opens a new row, booked by a second event for that day.
    event_id: Mapped[str | None] = mapped_column(sa.String(EVENT_ID_LENGTH), index=True)

    __table_args__ = (
        sa.Index(
            "uq_usage_days_open",
            "day",
            "account_id",
            "carrier",
            "kind",
            unique=True,
            sqlite_where=sa.text("event_id IS NULL"),
            postgresql_where=sa.text("event_id IS NULL"),
        ),  # fmt: skip
        sa.CheckConstraint("kind in ('usage', 'refund', 'refused_content_fee')", name="kind"),
        sa.CheckConstraint("amount >= 0 and messages >= 0", name="not_negative"),
    )
