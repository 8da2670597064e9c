"""The durable queue of charged messages, as the dispatcher worker sees it.

Contract (see also `backoffice.models.messaging`):
- claim: `claim_batch` leases up to N due messages (`status in ('queued', 'scheduled')`,
  `next_attempt_at <= now`, not leased or lease older than `lease_seconds`) by setting
  `claimed_by`/`claimed_at` and bumping `attempts`; commit right after claiming. Status stays
  queued/scheduled while leased, so a crashed worker's lease simply runs out.
- parts: one `message_parts` row per SMS part (`seq` 1..`total`), written before the part is
  sent; `submit_status` (the submit_sm_resp command_status) and `smsc_message_id` when its
  response arrives. A part with a recorded OK `submit_status` is never sent again; one resent after
  a crash without a recorded response gets `resent = True` (and a send-log line). A recorded
  throttling status (ESME_RTHROTTLED after the link's retries) or temporary one (the dispatcher's
  `temporary_statuses`: ESME_RSYSERR, ESME_RMSGQFUL, ESME_RX_T_APPN) means the SMSC did not take
  the part: it is sent again later, not flagged.
- outcome: `status = 'submitted'` (+ `submitted_at`) when every part has an OK response;
  delivery receipts then set delivered / undeliverable / expired / rejected (+ `done_at`).
  Every status change sets `updated_at` (the customers' status reports read it) and clears
  the lease. Retry later: `release(..., retry_at=…)` sets `next_attempt_at`. A worker holding
  messages longer than a third of the lease renews it (`renew_leases`); a worker restarted under
  the same name takes its own leases back at once (`release_worker`).
- refund: `refund_messages_failed` for a message the SMSC refused on submit or whose
  `valid_until` passed before it was submitted: status 'refunded', charge given back, books
  follow (usage running total of kind 'refund'), send-log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import local_today, utcnow
from backoffice.errors import Conflict, NotFound
from backoffice.models import DispatchRate, EnterpriseAccount, Message, MessagePart
from backoffice.models.messaging import CANCELLED_BY_CUSTOMER, CLAIMABLE, STOPPED_SENDING
from backoffice.services.bulk import Prepared
from backoffice.services.credit import forfeit_late_refund, lock_accounts
from backoffice.services.send_log import LogEntry, append_send_log
from backoffice.services.sql import CLOCK_STEP_US, epoch_us, insert_ignoring_conflict, is_postgresql
from backoffice.services.usage import refund_messages

_M = Message.__table__
_PARTS = MessagePart.__table__
_NOW = sa.bindparam("now", type_=_M.c.next_attempt_at.type)
_STALE = sa.bindparam("stale", type_=_M.c.claimed_at.type)  # now - the lease: a lease taken before it has run out
_LIMIT = sa.bindparam("limit", type_=sa.Integer)
_LEASE_OPEN = sa.or_(_M.c.claimed_by.is_(None), _M.c.claimed_at < _STALE)
_DUE = sa.and_(_M.c.status.in_(CLAIMABLE), _M.c.next_attempt_at <= _NOW, _LEASE_OPEN)
# `_DUE` for re-checking rows already picked by id. The status test goes through a function so
# SQLite looks the rows up by id: without statistics it prefers ix_messages_queue and scans every
# due row, which makes a claim cost the length of the queue.
_STILL_DUE = sa.and_(
    sa.or_(*(sa.func.coalesce(_M.c.status, "") == status for status in CLAIMABLE)), _M.c.next_attempt_at <= _NOW, _LEASE_OPEN
)
# SQLite sorts every due row for `status IN (…) ORDER BY next_attempt_at` (a temporary B-tree: a
# claim would cost the length of the queue); one index walk per status stops after `limit` rows,
# the walks merged in SQL, only ids coming back. Prepared: run on the driver (see services.bulk).
_DUE_BY_STATUS = [
    sa.select(_M.c.next_attempt_at, _M.c.id)
    .where(_M.c.status == status, _M.c.next_attempt_at <= _NOW, _LEASE_OPEN)
    .order_by(_M.c.next_attempt_at, _M.c.id)
    .limit(_LIMIT)
    .subquery()
    for status in CLAIMABLE
]
_MERGED = sa.union_all(*(sa.select(due.c.next_attempt_at, due.c.id) for due in _DUE_BY_STATUS)).subquery()
_SQLITE_CANDIDATES = Prepared(sa.select(_MERGED.c.id).order_by(_MERGED.c.next_attempt_at, _MERGED.c.id).limit(_LIMIT))
_PG_CANDIDATES = sa.select(_M.c.id).where(_DUE).order_by(_M.c.next_attempt_at, _M.c.id).limit(_LIMIT).with_for_update(skip_locked=True)


def _due_params(now: datetime, lease_seconds: int, limit: int) -> dict[str, Any]:
    return {"now": now, "stale": now - timedelta(seconds=lease_seconds), "limit": limit}


def _candidates(session: Session, params: dict[str, Any]) -> list[int]:
    """Ids of up to `limit` due messages, oldest due first (PostgreSQL skips rows another worker is locking)."""
    if is_postgresql(session):
        return list(session.scalars(_PG_CANDIDATES, params))
    return [message_id for (message_id,) in _SQLITE_CANDIDATES.rows(session, params)]


def _lease(ids: list[int], worker: str) -> sa.Update:
    """The lease of the messages `ids` that are still due, for the candidates' parameters."""
    return sa.update(_M).where(_M.c.id.in_(ids), _STILL_DUE).values(claimed_by=worker, claimed_at=_NOW, attempts=_M.c.attempts + 1)


def claim_batch(session: Session, *, worker: str, limit: int, now: datetime | None = None, lease_seconds: int = 300) -> list[Message]:
    """Lease up to `limit` due messages to `worker`, oldest due first. Safe with several workers:
    the UPDATE re-checks the lease condition, PostgreSQL skips rows another worker is locking."""
    now = now or utcnow()
    params = _due_params(now, lease_seconds, limit)
    ids = _candidates(session, params)
    if not ids:
        return []
    session.execute(_lease(ids, worker), params)
    query = sa.select(Message).where(Message.id.in_(ids), Message.claimed_by == worker, Message.claimed_at == now).order_by(Message.id)
    return list(session.scalars(query.execution_options(populate_existing=True)))


CLAIMED_COLUMNS = ("id", "account_id", "recipient", "content", "segments", "valid_until", "attempts", "charge")


class ClaimedMessage(NamedTuple):
    """What the dispatcher needs of a message it leased (CLAIMED_COLUMNS)."""

    id: int
    account_id: int
    recipient: str
    content: str
    segments: int
    valid_until: datetime
    attempts: int
    charge: Decimal  # 0: a free platform notice (`dispatcher.send_notification_sms`)


# SQLite's lease looks the ids up from a JSON array: a statement compiled once (an IN list of
# parameters is rendered anew for every length).
_CLAIMED_IDS = sa.select(sa.func.json_each(sa.bindparam("ids", type_=sa.String)).table_valued("value").c.value)
_SQLITE_CLAIM = Prepared(
    sa.update(_M)
    .where(_M.c.id.in_(_CLAIMED_IDS), _STILL_DUE)
    .values(claimed_by=sa.bindparam("worker"), claimed_at=_NOW, attempts=_M.c.attempts + 1)
    .returning(*(_M.c[name] for name in CLAIMED_COLUMNS))
)


def claim_due(session: Session, *, worker: str, limit: int, now: datetime | None = None, lease_seconds: int = 300) -> list[ClaimedMessage]:
    """`claim_batch` for a worker that wants plain rows rather than ORM objects (the dispatcher's
    hot path): the same lease in one UPDATE … RETURNING, rows in claim order (oldest due first)."""
    params = _due_params(now or utcnow(), lease_seconds, limit)
    ids = _candidates(session, params)
    if not ids:
        return []
    if is_postgresql(session):
        returning = _lease(ids, worker).returning(*(_M.c[name] for name in CLAIMED_COLUMNS))
        rows = [ClaimedMessage(*row) for row in session.execute(returning, params)]
    else:
        rows = [ClaimedMessage(*row) for row in _SQLITE_CLAIM.rows(session, {**params, "ids": json.dumps(ids), "worker": worker})]
    order = {message_id: position for position, message_id in enumerate(ids)}
    return sorted(rows, key=lambda row: order[row.id])


def release(session: Session, message_ids: Sequence[int], *, worker: str, retry_at: datetime | None = None) -> int:
    """Give leased messages back to the queue, optionally not before `retry_at`."""
    table = Message.__table__
    values: dict[str, object] = {"claimed_by": None, "claimed_at": None}
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    return session.execute(
        sa.update(table).where(table.c.id.in_(list(message_ids)), table.c.claimed_by == worker).values(**values)
    ).rowcount


_DEFER = (
    sa.update(Message.__table__)
    .where(Message.__table__.c.id == sa.bindparam("b_id"), Message.__table__.c.claimed_by == sa.bindparam("b_worker"))
    .values(claimed_by=None, claimed_at=None, next_attempt_at=sa.bindparam("b_at"))
)


def defer(session: Session, due: Sequence[tuple[int, datetime]], *, worker: str) -> None:
    """Give leased messages back to the queue, each not before its own time (message id, due)."""
    if due:
        session.execute(_DEFER, [{"b_id": message_id, "b_at": at, "b_worker": worker} for message_id, at in due])


def release_worker(session: Session, *, worker: str) -> int:
    """Give back every message `worker` still leases (a restarted worker resumes its own at once)."""
    table = Message.__table__
    return session.execute(
        sa.update(table).where(table.c.claimed_by == worker, table.c.status.in_(CLAIMABLE)).values(claimed_by=None, claimed_at=None)
    ).rowcount


def renew_leases(session: Session, message_ids: Sequence[int], *, worker: str, now: datetime | None = None) -> int:
    """Keep the leases of messages `worker` is still working on from running out."""
    if not message_ids:
        return 0
    table = Message.__table__
    renewed = 0
    ids = list(message_ids)
    for start in range(0, len(ids), 500):
        renewed += session.execute(
            sa.update(table)
            .where(table.c.id.in_(ids[start : start + 500]), table.c.claimed_by == worker, table.c.status.in_(CLAIMABLE))
            .values(claimed_at=now or utcnow())
        ).rowcount
    return renewed


def cancel_waiting(session: Session, account_id: int, recipient: str, *, reason: str, pending: list[Any] | None = None) -> int:
    """Refund the account's messages to `recipient` that no worker has taken yet and no part of
    which went out (a message released after a crash with parts sent goes in full), in one
    conditional UPDATE: a message a worker claims (or holds the row of) meanwhile is left to it. Returns how many. The platform's
    free notices to the customer (charge 0) stay: they are not the customer's sends. With
    `pending`, the messages are only marked and added to it: the caller gives the money back
    (`give_back`) at the end of its transaction, with its other refunds."""
    return _cancel_unclaimed(session, sa.and_(_M.c.account_id == account_id, _M.c.recipient == recipient), reason, pending)


def _cancel_unclaimed(session: Session, which: sa.ColumnElement[bool], reason: str, pending: list[Any] | None = None) -> int:
    """Refund the messages `which` selects that still wait with no worker holding them, no part
    sent and a charge (not a free notice); `pending` as for `cancel_waiting`."""
    which = sa.and_(
        which,
        _M.c.status.in_(CLAIMABLE),
        _M.c.claimed_by.is_(None),
        _M.c.charge > 0,
        ~sa.exists().where(_PARTS.c.message_id == _M.c.id),  # none of its parts went out (before a crash, say): it goes in full
    )
    # A row another transaction holds (a worker claiming it just now) is skipped, not waited for:
    # the worker's own look at the list (at the claim, and every 0.1 s) refunds it. Waiting could
    # close a lock cycle with a worker whose turn goes on to a message this transaction holds.
    free = sa.select(_M.c.id).where(which).with_for_update(skip_locked=True)
    rows = _mark_refunded(session, sa.and_(_M.c.id.in_(free.scalar_subquery()), which), reason)
    if pending is not None:
        pending.extend(rows)
    elif rows:
        append_send_log(session, give_back(session, rows), at=utcnow())
    return len(rows)


class Cancelled(NamedTuple):
    count: int  # messages taken back
    refunded: Decimal  # their charges, given back


def cancel_scheduled(session: Session, account_id: int, request_id: int, *, sub_account_id: int | None = None) -> Cancelled:
    """The customer takes back a scheduled send (found by an exploratory test: a batch scheduled
    with a mistake could only be left to go out, and be paid for): every message of request
    `request_id` still waiting for its time, no worker holding it and no part sent, is refunded
    unsent in one conditional UPDATE, its charge given back and a send-log line written. The
    request must be the account's, and the sub-account's when `sub_account_id` is given (a 子号
    cancels only its own sends); one with nothing left to cancel is refused, naming why."""
    owned = sa.and_(_M.c.account_id == account_id, _M.c.request_id == request_id, _M.c.charge > 0)
    if sub_account_id is not None:
        owned = sa.and_(owned, _M.c.sub_account_id == sub_account_id)
    if session.scalar(sa.select(_M.c.id).where(owned).limit(1)) is None:
        raise NotFound(f"发送批次 {request_id} 不存在")
    rows: list[Any] = []
    _cancel_unclaimed(session, sa.and_(owned, _M.c.status == "scheduled"), CANCELLED_BY_CUSTOMER, rows)
    if not rows:
        raise Conflict(f"发送批次 {request_id} 没有可取消的定时短信：已发出、正在发送或已取消，未做任何更改")
    append_send_log(session, give_back(session, rows), at=utcnow())
    return Cancelled(len(rows), sum((row.charge for row in rows), Decimal(0)))


def cancel_account_waiting(session: Session, account_id: int, *, why: str) -> int:
    """Refund every message of the account waiting to go out (queued or scheduled, no worker
    holding it, no part sent) now, in the transaction that closes the account (`why`, a key of
    STOPPED_SENDING), so that the money comes back before the balance is forfeited, not onto a
    closed account on the day each was due. (A suspended or blacklisted account's messages wait
    for their time: the dispatcher refunds them then if the account still may not send,
    `sending_refusals`, and sends them if it was let send again meanwhile.) A message a worker
    holds at that moment is the worker's to settle; one with parts already out goes in full.
    The platform's free notices (charge 0) stay. Returns how many."""
    return _cancel_unclaimed(session, _M.c.account_id == account_id, STOPPED_SENDING[why])


_A = EnterpriseAccount.__table__
_MAY_NOT_SEND = sa.or_(_A.c.status != "active", _A.c.blacklisted_at.is_not(None))
# On the driver, the ids as a JSON array (as the claim's): run at every claim, SQLAlchemy's own
# execution of an IN list cost as much as the claim itself (a tenth of the worker's time).
_SQLITE_STANDING = Prepared(sa.select(_A.c.id, _A.c.status, _A.c.blacklisted_at).where(_A.c.id.in_(_CLAIMED_IDS), _MAY_NOT_SEND))


def sending_refusals(session: Session, account_ids: set[int]) -> dict[int, str]:
    """The accounts among `account_ids` that may not send now (suspended, blacklisted, closed,
    not yet paid), each with the reason its messages are refunded for. The dispatcher reads it
    fresh at every claim: found by an exploratory test, a message scheduled before a suspension
    went out after it, and stayed charged."""
    if not account_ids:
        return {}
    if is_postgresql(session):
        select = sa.select(_A.c.id, _A.c.status, _A.c.blacklisted_at).where(_A.c.id.in_(sorted(account_ids)), _MAY_NOT_SEND)
        rows: Any = session.execute(select)
    else:
        rows = _SQLITE_STANDING.rows(session, {"ids": json.dumps(sorted(account_ids))})
    return {
        account_id: STOPPED_SENDING["blacklisted" if blacklisted_at is not None else status if status in STOPPED_SENDING else "suspended"]
        for account_id, status, blacklisted_at in rows
    }


def refund_messages_failed(
    session: Session, refusals: Mapping[str, Sequence[int]], *, worker: str, lines: list[LogEntry] | None = None
) -> int:
    """Refund messages `worker` could not send (refused on submit, validity passed, a TD while
    it held them), `refusals` being message ids by the reason each is refunded for: each once,
    and only while `worker` still holds it (`mark_failed`, then `give_back`). The send-log lines
    go to `lines` when given, else to the log at once. Returns how many were refunded."""
    rows = mark_failed(session, refusals, worker=worker)
    entries = give_back(session, rows)
    if lines is None:
        append_send_log(session, entries, at=utcnow())
    else:
        lines.extend(entries)
    return len(rows)


def mark_failed(session: Session, refusals: Mapping[str, Sequence[int]], *, worker: str) -> list[Any]:
    """Mark refunded the messages `worker` could not send, by reason, while it still holds them:
    a message whose lease ran out and another worker took, or that was submitted meanwhile, is
    left alone (one conditional UPDATE decides). The rows marked, for `give_back`."""
    rows: list[Any] = []
    for reason, message_ids in refusals.items():
        ids = list(message_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows += _mark_refunded(session, sa.and_(_M.c.id.in_(chunk), _M.c.status.in_(CLAIMABLE), _M.c.claimed_by == worker), reason)
    return rows


_REFUNDED = (_M.c.id, _M.c.account_id, _M.c.recipient, _M.c.carrier, _M.c.charge, _M.c.content, _M.c.error)


def _mark_refunded(session: Session, which: sa.ColumnElement[bool], reason: str) -> list[Any]:
    """Mark the messages `which` selects refunded (status, reason, lease cleared), in one
    conditional UPDATE; the rows it changed."""
    now = utcnow()
    return list(
        session.execute(
            sa.update(_M)
            .where(which)
            .values(
                status="refunded", error=reason[:300], updated_at=now, done_at=now, next_attempt_at=None, claimed_by=None, claimed_at=None
            )
            .returning(*_REFUNDED)
        ).all()
    )


def give_back(session: Session, rows: Sequence[Any], *, notice_source: str | None = None) -> list[LogEntry]:
    """Give back the charge of messages `_mark_refunded` marked (usage of kind 'refund' on today's
    date), account by account in the order of their ids; their send-log lines, for the caller
    to append at the end of its transaction. `notice_source`: the platform's address (the
    dispatcher's SMSC_NOTICE_SOURCE) its free notices (charge 0) went from, for their lines."""
    if not rows:
        return []
    lock_accounts(session, {row.account_id for row in rows})
    today = local_today()
    for row in sorted(rows, key=lambda r: (r.account_id, r.id)):
        if row.charge > 0:
            refund_messages(session, row.account_id, today, row.carrier.upper(), 1, row.charge)
    codes: dict[int, tuple[str, str | None]] = {}
    for account_id, code, service_code, status in session.execute(
        sa.select(EnterpriseAccount.id, EnterpriseAccount.code, EnterpriseAccount.service_code, EnterpriseAccount.status).where(
            EnterpriseAccount.id.in_({row.account_id for row in rows})
        )
    ):
        codes[account_id] = (code, service_code)
        if status == "closed":  # refunded after the closing: forfeited with the rest (a review)
            mine = [row for row in rows if row.account_id == account_id]
            total = sum((row.charge for row in mine), Decimal(0))
            forfeit_late_refund(session, account_id, total, on=today, key=str(min(row.id for row in mine)))
    return [
        LogEntry(
            codes[row.account_id][0],
            notice_source if notice_source is not None and row.charge == 0 else codes[row.account_id][1],
            row.recipient,
            row.content,
            f"refunded: {row.error}",
            row.id,
        )
        for row in sorted(rows)
    ]


# --- each account's rate, shared by every worker ------------------------------------------------
#
# A GCRA per account in `dispatch_rates`: `tat_us` is when the account's timeline of message
# starts (one every 1/rate s) reaches; a worker may start messages while that stays within `hold`
# seconds ahead of now, so an idle account can start up to a second's worth at once (hold = 1 s)
# and then goes at its rate, however many workers share it. A worker takes starts for its turn in
# grants, one conditional UPDATE each, in the turn's transaction, and gives back at the end of
# the turn what it did not use (for a clock that stepped back, see CLOCK_STEP_US).
# On PostgreSQL the row of an account another worker is taking from is skipped (no grant this
# time, asked again a few milliseconds later), so workers never wait on each other's rows in
# their turns, whatever order they meet their accounts in.

_RATES = DispatchRate.__table__
MAX_RATE = 1_000_000  # starts a second: each advances the timeline by at least 1 us


def _rate(rate: int) -> int:
    return min(max(1, rate), MAX_RATE)


_NOW_US = sa.bindparam("now_us", type_=sa.BigInteger)
_HOLD_US = sa.bindparam("hold_us", type_=sa.BigInteger)
_RATE = sa.bindparam("rate", type_=sa.BigInteger)
_WANT = sa.bindparam("want", type_=sa.BigInteger)
_START = sa.case(
    (_RATES.c.tat_us > _NOW_US + _HOLD_US + CLOCK_STEP_US, _NOW_US),  # a clock that stepped back: start again from now
    (_RATES.c.tat_us > _NOW_US, _RATES.c.tat_us),
    else_=_NOW_US,
)
_AHEAD_US = _NOW_US + _HOLD_US - _START  # how much of the hold the account's timeline leaves
_FITS = _AHEAD_US * _RATE // 1_000_000  # whole starts that fit in it
_GRANT = sa.case((_FITS < _WANT, _FITS), else_=_WANT)
_OTHER = _RATES.alias("unlocked")
_UNLOCKED = sa.select(_OTHER.c.account_id).where(_OTHER.c.account_id == sa.bindparam("account_id"))
_TAKE_STARTS = Prepared(
    sa.update(_RATES)
    .where(
        _RATES.c.account_id == _UNLOCKED.with_for_update(skip_locked=True).scalar_subquery(),  # PostgreSQL; SQLite has one writer
        _AHEAD_US * _RATE >= 1_000_000,
    )
    .values(granted=_GRANT, tat_us=_START + _GRANT * 1_000_000 // _RATE)  # SET reads the old row
    .returning(_RATES.c.granted)
)
_GIVE_BACK = Prepared(
    sa.update(_RATES).where(_RATES.c.account_id == sa.bindparam("account_id")).values(tat_us=_RATES.c.tat_us - sa.bindparam("back_us"))
)
_TIMELINE = Prepared(sa.select(_RATES.c.tat_us).where(_RATES.c.account_id == sa.bindparam("account_id")))


def take_starts(session: Session, account_id: int, *, rate: int, want: int, now: datetime, hold: float = 1.0) -> int:
    """Take up to `want` message starts from the account's rate (shared by every worker), in the
    session's transaction; how many were granted (0: none before its timeline moves on)."""
    if want <= 0:
        return 0
    params = {"account_id": account_id, "now_us": epoch_us(now), "hold_us": int(hold * 1_000_000), "rate": _rate(rate), "want": want}
    granted = _TAKE_STARTS.scalar(session, params)
    if granted is None and _TIMELINE.first(session, {"account_id": account_id}) is None:  # the account's first start
        row = insert_ignoring_conflict(session, _RATES, {"account_id": account_id, "tat_us": 0, "granted": 0}, ["account_id"])
        if is_postgresql(session):  # committed at once: a concurrent first insert would otherwise hold this turn's
            with session.get_bind().engine.begin() as connection:
                connection.execute(row)
        else:  # SQLite: one writer, and this transaction may hold the write lock already
            session.execute(row)
        granted = _TAKE_STARTS.scalar(session, params)
    return int(granted or 0)


def give_back_starts(session: Session, account_id: int, *, rate: int, count: int) -> None:
    """Return `count` starts taken with `take_starts` in this transaction and not used."""
    if count > 0:
        _GIVE_BACK.rowcount(session, {"account_id": account_id, "back_us": count * 1_000_000 // _rate(rate)})


def starts_available(session: Session, account_id: int, *, rate: int, now: datetime, hold: float = 1.0) -> int:
    """How many starts the account's rate would grant now (reads only)."""
    tat, now_us, hold_us = _TIMELINE.scalar(session, {"account_id": account_id}) or 0, epoch_us(now), int(hold * 1_000_000)
    start = now_us if tat > now_us + hold_us + CLOCK_STEP_US else max(tat, now_us)
    return max(0, (now_us + hold_us - start) * _rate(rate) // 1_000_000)
