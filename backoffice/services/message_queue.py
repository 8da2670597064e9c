"""The durable queue of charged messages, as the dispatcher worker sees it.

Contract (see also `backoffice.models.messaging`):
- claim: `claim_batch` leases up to N due messages (`status in ('queued', 'scheduled')`,
  `next_attempt_at <= now`, not leased or lease older than `lease_seconds`) by setting
  `claimed_by`/`claimed_at` and bumping `attempts`; commit right after claiming. Status stays
  queued/scheduled while leased, so a crashed worker's lease simply runs out.
- parts: one `message_parts` row per SMS part (`seq` 1..`total`), written before the part is
  sent; `submit_status` (the submit_sm_resp command_status) and `smsc_message_id` when its
  response arrives. A part with a recorded `submit_status` is never sent again; one resent after
  a crash without a recorded response gets `resent = True` (and a send-log line).
- outcome: `status = 'submitted'` (+ `submitted_at`) when every part has an OK response;
  delivery receipts then set delivered / undeliverable / expired / rejected (+ `done_at`).
  Every status change sets `updated_at` (the customers' status reports read it) and clears
  the lease. Retry later: `release(..., retry_at=…)` sets `next_attempt_at`.
- refund: `refund_messages_failed` for a message the SMSC refused on submit or whose
  `valid_until` passed before it was submitted: status 'refunded', charge given back, books
  follow (usage running total of kind 'refund'), send-log line.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import local_today, utcnow
from backoffice.models import EnterpriseAccount, Message
from backoffice.models.messaging import CLAIMABLE
from backoffice.services.send_log import LogEntry, append_send_log
from backoffice.services.sql import is_postgresql
from backoffice.services.usage import refund_messages


def _due(now: datetime, lease_seconds: int) -> sa.ColumnElement[bool]:
    stale = now - timedelta(seconds=lease_seconds)
    return sa.and_(
        Message.status.in_(CLAIMABLE),
        Message.next_attempt_at <= now,
        sa.or_(Message.claimed_by.is_(None), Message.claimed_at < stale),
    )


def claim_batch(session: Session, *, worker: str, limit: int, now: datetime | None = None, lease_seconds: int = 300) -> list[Message]:
    """Lease up to `limit` due messages to `worker`, oldest due first. Safe with several workers:
    the UPDATE re-checks the lease condition, PostgreSQL skips rows another worker is locking."""
    now = now or utcnow()
    candidates = sa.select(Message.id).where(_due(now, lease_seconds)).order_by(Message.next_attempt_at, Message.id).limit(limit)
    if is_postgresql(session):
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(session.scalars(candidates))
    if not ids:
        return []
    table = Message.__table__
    session.execute(
        sa.update(table)
        .where(table.c.id.in_(ids), _due(now, lease_seconds))
        .values(claimed_by=worker, claimed_at=now, attempts=table.c.attempts + 1)
    )
    query = sa.select(Message).where(Message.id.in_(ids), Message.claimed_by == worker, Message.claimed_at == now).order_by(Message.id)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def release(session: Session, message_ids: Sequence[int], *, worker: str, retry_at: datetime | None = None) -> int:
    """Give leased messages back to the queue, optionally not before `retry_at`."""
    table = Message.__table__
    values: dict[str, object] = {"claimed_by": None, "claimed_at": None}
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    return session.execute(
        sa.update(table).where(table.c.id.in_(list(message_ids)), table.c.claimed_by == worker).values(**values)
    ).rowcount


def refund_messages_failed(session: Session, messages: Sequence[Message], *, reason: str) -> int:
    """Refund messages the platform could not send: each once (a refunded message is skipped)."""
    now, today = utcnow(), local_today()
    refunded: list[Message] = []
    for message in messages:
        if message.status == "refunded" or message.status not in (*CLAIMABLE, "submitted"):
            continue
        message.status, message.error, message.updated_at, message.done_at = "refunded", reason[:300], now, now
        message.claimed_by = message.claimed_at = message.next_attempt_at = None
        if message.charge > 0:
            refund_messages(session, message.account_id, today, message.carrier.upper(), 1, message.charge)
        refunded.append(message)
    if refunded:
        rows = session.execute(
            sa.select(EnterpriseAccount.id, EnterpriseAccount.code, EnterpriseAccount.service_code).where(
                EnterpriseAccount.id.in_({m.account_id for m in refunded})
            )
        )
        codes = {account_id: (code, service_code) for account_id, code, service_code in rows}
        entries = [
            LogEntry(codes[m.account_id][0], codes[m.account_id][1], m.recipient, m.content, f"refunded: {reason}", m.id) for m in refunded
        ]
        append_send_log(session, entries, at=now)
    return len(refunded)
