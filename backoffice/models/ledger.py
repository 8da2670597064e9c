"""The ledger outbox: money events recorded in the same transaction as the business change,
posted to the beancount books by `ledger/` afterwards (and replayable from here)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.clock import utcnow
from backoffice.models.base import EVENT_ID_LENGTH, Base, UTCDateTime

#: The longest reason a reversal's ledger event keeps (the receipt's own column takes 500): the
#: services refuse a longer one before anything changes, rather than PostgreSQL at the flush.
REVERSAL_REASON_LENGTH = 200


class LedgerEvent(Base):
    __tablename__ = "ledger_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(EVENT_ID_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    occurred_on: Mapped[date]
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # Order in which the books received it (rebuilding replays in this order: identical files).
    posted_seq: Mapped[int | None] = mapped_column(unique=True)
    # A reversal names the event it reverses; an event can be reversed once.
    reverses: Mapped[str | None] = mapped_column(sa.String(EVENT_ID_LENGTH), unique=True)
    reason: Mapped[str | None] = mapped_column(sa.String(REVERSAL_REASON_LENGTH))
    actor: Mapped[str | None] = mapped_column(sa.String(80))
