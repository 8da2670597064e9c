"""The dispatcher worker's database side: it drains the durable queue through one SMPP bind
(`dispatch.smpp_link.SmppLink`) and records what the SMSC answers, receipts and replies included.

What a crash (kill -9 at any instant) can and cannot do, and why (DESIGN.md invariant 5):
- A message is leased (`claim_batch`) before any of its parts is prepared; its status stays
  queued/scheduled until every part has an OK submit_sm_resp recorded, so a dead worker's
  messages go back to the queue when the lease runs out (at once for a worker restarted under the
  same name, which takes its own leases back first).
- A part's `message_parts` row is committed before the part is handed to the link (submit_status
  NULL = "possibly sent"); its submit_sm_resp is recorded on that row. A part with an OK response
  recorded is never sent again, so a message whose parts all have one is never resent.
- The resend budget: at most `window` part rows of this worker have a NULL submit_status at any
  moment — prepared, on the wire, or answered but not yet committed — because new parts are
  prepared only when earlier ones are recorded. After a crash or a dropped link, exactly those
  parts are sent again, each flagged `resent = True` with a send-log line: never more than the window.
  A part lost in flight more than `resend_limit` times (in sessions that answered something) is not
  sent again: its message is refunded.
- Leases are renewed before the link sends more; one found taken (this worker stalled past the
  lease and another claimed the message) stops the worker (`LeaseLost`), whose restart goes by
  the database.
- Money moves only at the end of a transaction (`_log`: refunds of parts the SMSC refused, of
  validity passed before submission and of TD-cancelled messages, and charges moved to a
  reported carrier), every account it changes locked first in the order of their ids, the
  send log last; every status is one of accepted = sent + queued + refused + refunded at every
  commit.
- Several workers (PostgreSQL): a delivery that has to wait for a lock another worker holds (a
  long message's row, to read its parts' receipts; a long reply's lock, to see its other parts)
  first commits what its batch did so far (`_commit_so_far`), so it waits holding nothing, and
  for at most `LOCK_WAIT_SECONDS` (then the SMSC delivers it again); a batch takes its receipts in
  the order of their ids and its replies by sender, so two binds lock parts and unsubscribe rows
  in one order; a TD's refund of waiting messages skips rows another transaction holds
  (`cancel_waiting`); rows every receipt may touch (accounts, usage, ported numbers, the send-log
  head) are written at the end of the transaction, each kind in a fixed order.

Database writes are grouped, on one connection held for the worker's life: one transaction per
turn of the link loop records every response that arrived, refunds messages, claims more and
prepares the next parts; messages it completed are marked submitted, with their send-log lines,
in a second transaction while the next window is on its way (SUBMITTED_BATCH). Receipts and
replies are committed before the link acknowledges them (the link sends deliver_sm_resp after the
callback returns), so an acknowledged receipt is never lost; on SQLite the worker's own connections
use `synchronous=NORMAL` (WAL: durable across a process crash, only an OS crash can undo the last
commits), which makes those small commits cheap (`DISPATCH_SQLITE_SYNCHRONOUS`); on PostgreSQL
they commit with `synchronous_commit=off` for the same reason (`DISPATCH_PG_SYNCHRONOUS_COMMIT`:
a crash of the worker loses nothing; one of the database server or its machine can undo the
last ~0.6 s of commits, each whole, as an OS crash can on SQLite: receipts acknowledged in that
time are lost, and messages sent in it can go out again).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import math
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from backoffice.clock import local_today, utcnow
from backoffice.config import ConfigError, sources_apart
from backoffice.models import (
    DispatchWorker,
    EnterpriseAccount,
    Message,
    MessagePart,
    Notification,
    ReplyFragment,
    SendRequest,
    SubAccount,
    Unsubscribe,
)
from backoffice.models.accounts import codes_nesting_with
from backoffice.models.messaging import CLAIMABLE, NOTICE_CHARGE_KIND, SENT, STOPPED_SENDING, UNSUBSCRIBED_REFUSAL
from backoffice.services.bulk import Prepared
from backoffice.services.credit import lock_accounts
from backoffice.services.message_queue import (
    ClaimedMessage,
    claim_due,
    defer,
    give_back,
    give_back_starts,
    mark_failed,
    release,
    release_worker,
    renew_leases,
    sending_refusals,
    starts_available,
    take_starts,
)
from backoffice.services.messaging import (
    NOTICE_CLIENT_REF,
    SendingSettings,
    add_unsubscribe,
    record_reply,
    record_reported_carrier,
    unsubscribed,
)
from backoffice.services.send_log import LogEntry, append_send_log
from backoffice.services.sql import synchronous_commit_level
from backoffice.services.usage import move_usage_carrier
from dispatch.numbers import InvalidNumber, default_prefix_table, national_address, normalise_mobile
from dispatch.rules import UNSUBSCRIBE_WORDS, signature_of
from dispatch.segments import MAX_PARTS_IN_UDH, Segmentation, encode_segments
from dispatch.smpp_link import (
    ESME_RINVBNDSTS,
    ESME_ROK,
    ESME_RTHROTTLED,
    RECEIPT_ID_FORMATS,
    TEMPORARY_STATUSES,
    BindRefused,
    LinkConfig,
    MobileOriginated,
    OutgoingPart,
    Receipt,
    SmppLink,
    SubmitResult,
    describe_status,
    doubling_delay,
    normalise_message_id,
    parse_command_statuses,
    receipt_id_keys,
)

log = logging.getLogger(__name__)

#: A part answered so was not taken and goes again later, after `throttle_requeue` (ESME_RTHROTTLED:
#: out of the link's retries; ESME_RINVBNDSTS: after the link binds again). A part answered with
#: one of the temporary statuses (`DispatchSettings.temporary_statuses`) goes again too, after a
#: wait of its own that grows with each such answer.
RETRYABLE: Final = frozenset({ESME_RTHROTTLED, ESME_RINVBNDSTS})
#: Final receipt states and the message status each gives; ENROUTE / ACCEPTD are not final.
FINAL_STATS: Final[Mapping[str, str]] = {
    "DELIVRD": "delivered",
    "UNDELIV": "undeliverable",
    "EXPIRED": "expired",
    "REJECTD": "rejected",
    "DELETED": "undeliverable",
    "UNKNOWN": "undeliverable",
}
INTERMEDIATE_STATS: Final = frozenset({"ENROUTE", "ACCEPTD", "SCHEDULED", ""})
# Carrier names SMSCs put in receipts (`carrier:`, `network:`, `operator:`), MCC-MNC included.
_CARRIER_FIELD = re.compile(r"\b(?:carrier|network|operator|net)\s*[:=]\s*([^\s,;]+)", re.IGNORECASE)
_CARRIER_ALIASES: Final[Mapping[str, str]] = {
    **{code: code for code in ("cmcc", "cucc", "ctcc", "cbn")},
    **{name: "cmcc" for name in ("中国移动", "移动", "chinamobile", "46000", "46002", "46004", "46007", "46008", "46013")},
    **{name: "cucc" for name in ("中国联通", "联通", "chinaunicom", "46001", "46006", "46009", "46010")},
    **{name: "ctcc" for name in ("中国电信", "电信", "chinatelecom", "46003", "46005", "46011", "46012")},
    **{name: "cbn" for name in ("中国广电", "广电", "46015")},
}
NOTICE_SIGNATURE: Final = "短信平台"
_STOPPED_REASONS = frozenset(STOPPED_SENDING.values())  # refunds counted apart: nothing was attempted
LOST_TOO_OFTEN: Final = "第 {seq}/{total} 条提交时与运营商网关的连接已中断 {times} 次，始终未得到应答，不再重发，已退款"


def _usage_stays(message_id: int, carrier: str, day: date, charged_to: str) -> None:
    log.info("message %s: carrier %s reported after the day of its charge (%s); usage stays under %s", message_id, carrier, day, charged_to)


def reported_carrier(raw_receipt: str) -> str | None:
    """The carrier a receipt names (number portability: it wins over the prefix), or None."""
    found = _CARRIER_FIELD.search(raw_receipt)
    if not found:
        return None
    return _CARRIER_ALIASES.get(found.group(1).strip().lower().replace("-", "").replace("_", ""))


def message_status_of(stats: Sequence[str | None]) -> str | None:
    """The final status of a message from its parts' receipt stats, or None while one is missing
    or not final. Any part not delivered decides (the first by part number)."""
    if not stats or any(s is None or s not in FINAL_STATS and s in INTERMEDIATE_STATS for s in stats):
        return None
    for stat in stats:
        assert stat is not None
        if stat != "DELIVRD":
            return FINAL_STATS.get(stat, "undeliverable")  # a gateway's own code (MK:0005, DB:0008 …)
    return "delivered"


class LeaseLost(RuntimeError):
    """Messages this worker holds were taken over by another (its lease ran out while it stalled)."""


class LinkDownTooLong(RuntimeError):
    """The link stayed down `release_after_link_down` seconds while the worker held messages: it
    stops as on SIGTERM (the held messages go back to the queue) and `run_worker` starts afresh,
    claiming nothing until it is bound again."""


class WorkerNameInUse(RuntimeError):
    """Another live process runs a worker under this name: two would take each other's leases
    (they are by name) and send the same messages, unflagged. `run_worker` tries again later."""


def _process_alive(pid: int, since: datetime) -> bool:
    """Whether process `pid` of this host runs and has run since `since` (the worker row's start):
    a zombie (killed, not yet reaped) does not, nor a process that started later with the dead
    worker's pid (pids are reused: after a reboot, or in a container, where `make run` starts its
    processes in the same order each time; found by a review)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: its /proc entry is still readable
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()  # (the name before it may hold spaces)
        if fields[0] == "Z":
            return False
        with open("/proc/stat", encoding="ascii") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start, in ticks since boot
    except (OSError, IndexError, ValueError, StopIteration):
        return True  # cannot tell: taken for alive (the start is refused, and tried again)
    return started <= since.timestamp() + 2.0  # (ticks and clocks: a little slack)


class RedeliverLater(Exception):
    """Raised from a deliver_sm callback: the link answers ESME_RX_T_APPN and the SMSC delivers it again."""


def _not_marked_yet(receipt: Receipt, message_id: int) -> RedeliverLater:
    """A receipt that settles a message (its final status, or its first reported carrier) whose
    every part is accepted and recorded and which its worker has not marked submitted yet
    (SUBMITTED_BATCH): its part's stat stays recorded, the message's comes when the SMSC delivers
    the receipt again."""
    return RedeliverLater(f"receipt {receipt.message_id!r}: message {message_id} not marked submitted yet, please deliver it again")


# =================================================================================================
# Settings and counters
# =================================================================================================


@dataclass(frozen=True)
class DispatchSettings:
    """How the worker works the queue (configuration names in brackets)."""

    batch: int = 200  # messages claimed at a time (DISPATCH_BATCH)
    default_source: str = "10690000"  # source address of accounts without a service code (SMSC_DEFAULT_SOURCE)
    # The platform's own notices go from here (SMSC_NOTICE_SOURCE): a reply to it is no customer's.
    notice_source: str = "10690001"
    lease_seconds: int = 300  # a dead worker's messages return to the queue after this (DISPATCH_LEASE_SECONDS)
    idle_poll: float = 0.25  # how often an idle worker looks for due messages
    throttle_requeue: float = 5.0  # a part out of throttling retries waits this long before the next try
    receipt_grace: float = 5.0  # how long a receipt for an unknown id may wait for its submit_sm_resp
    receipt_id_format: str = "auto"  # how receipt ids relate to submit ids (SMSC_RECEIPT_ID_FORMAT; smpp_link.RECEIPT_ID_FORMATS)
    resend_limit: int = 3  # a part lost in flight more often than this: its message is refunded (DISPATCH_RESEND_LIMIT)
    # A worker whose link stays down this long gives the messages it holds back to the queue
    # (DISPATCH_RELEASE_AFTER_LINK_DOWN_SECONDS): workers with a link send them, and a message
    # whose validity passes meanwhile is refunded by whoever claims it, never sent late.
    release_after_link_down: float = 60.0
    sqlite_synchronous: str | None = "NORMAL"  # (DISPATCH_SQLITE_SYNCHRONOUS; empty: SQLite's default)
    pg_synchronous_commit: str | None = "off"  # PostgreSQL (DISPATCH_PG_SYNCHRONOUS_COMMIT; empty: the server's setting)
    unsubscribe_words: tuple[str, ...] = UNSUBSCRIBE_WORDS  # (UNSUBSCRIBE_WORDS)
    # submit_sm_resp statuses after which a part goes again later rather than its message being
    # refunded (DISPATCH_TEMPORARY_STATUSES; smpp_link.TEMPORARY_STATUSES): the first wait is
    # throttle_requeue, each next one twice the last, at most temporary_retry_max
    # (DISPATCH_TEMPORARY_RETRY_MAX_SECONDS), never past the message's validity (then it is refunded).
    temporary_statuses: frozenset[int] = TEMPORARY_STATUSES
    temporary_retry_max: float = 600.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> DispatchSettings:
        sending = SendingSettings.from_config(config)
        values: dict[str, Any] = {
            "batch": int(config.get("DISPATCH_BATCH", cls.batch)),
            "default_source": str(config.get("SMSC_DEFAULT_SOURCE", cls.default_source)),
            "notice_source": str(config.get("SMSC_NOTICE_SOURCE") or cls.notice_source),
            "lease_seconds": int(config.get("DISPATCH_LEASE_SECONDS", cls.lease_seconds)),
            "resend_limit": int(config.get("DISPATCH_RESEND_LIMIT", cls.resend_limit)),
            "release_after_link_down": float(config.get("DISPATCH_RELEASE_AFTER_LINK_DOWN_SECONDS", cls.release_after_link_down)),
            "receipt_id_format": str(config.get("SMSC_RECEIPT_ID_FORMAT", cls.receipt_id_format) or cls.receipt_id_format).lower(),
            "sqlite_synchronous": str(config.get("DISPATCH_SQLITE_SYNCHRONOUS", cls.sqlite_synchronous) or "") or None,
            "pg_synchronous_commit": synchronous_commit_level(config.get("DISPATCH_PG_SYNCHRONOUS_COMMIT", cls.pg_synchronous_commit)),
            "unsubscribe_words": sending.unsubscribe_words,
            "temporary_statuses": _temporary_statuses(config.get("DISPATCH_TEMPORARY_STATUSES", cls.temporary_statuses)),
            "temporary_retry_max": float(config.get("DISPATCH_TEMPORARY_RETRY_MAX_SECONDS", cls.temporary_retry_max)),
        }
        values.update(overrides)
        sources_apart(values["default_source"], values["notice_source"])  # (also when set after the Config was made)
        if values["receipt_id_format"] not in RECEIPT_ID_FORMATS:
            raise ValueError(f"SMSC_RECEIPT_ID_FORMAT 只能是 {'、'.join(RECEIPT_ID_FORMATS)} 之一（现为 {values['receipt_id_format']!r}）")
        return cls(**values)


def _temporary_statuses(value: Any) -> frozenset[int]:
    """DISPATCH_TEMPORARY_STATUSES as the config holds it: parsed (Config) or text (an override)."""
    if not isinstance(value, str):
        return frozenset(int(status) for status in value)
    if not value.strip():
        return TEMPORARY_STATUSES
    try:
        return parse_command_statuses(value)
    except ValueError as refused:
        raise ConfigError(f"DISPATCH_TEMPORARY_STATUSES={value!r}：{refused}") from None


@dataclass
class DispatchStats:
    """Counters since the worker started (logged once a minute and at the end)."""

    claimed: int = 0
    deferred: int = 0  # given back to the queue: over the account's rate
    parts_sent: int = 0
    parts_accepted: int = 0
    parts_refused: int = 0
    parts_throttled_out: int = 0
    parts_deferred: int = 0  # answered with a temporary status: sent again after a wait of their own
    submitted: int = 0
    refunded: int = 0
    refunded_unsent: int = 0  # of which not sent at all: the account may not send (STOPPED_SENDING)
    resent: int = 0
    receipts: int = 0
    receipts_unknown: int = 0
    finished: int = 0
    mobile_originated: int = 0
    unsubscribes: int = 0
    links_down: int = 0
    commits: int = 0
    lock_waits_given_up: int = 0  # deliveries handed back to the SMSC after LOCK_WAIT_SECONDS


# =================================================================================================
# The worker
# =================================================================================================

_INSERT, _RESEND, _RETRY = "insert", "resend", "retry"  # how a part's row is prepared
#: Resends are bounded by the window, so responses are recorded once every part on the wire has
#: answered (the whole window in one transaction), or at the latest this long after the first.
RECORD_DELAY = 0.002
#: A message whose every part has its OK submit_sm_resp recorded is not marked submitted (nor
#: given its send-log line) in the turn that recorded its last response, but in a transaction of
#: its own while the next window is on its way (`_meanwhile`), when the worker would otherwise wait
#: for the SMSC: the turns between the SMSC's answers write only the parts' rows. Without a window
#: on its way, after this many or this long after the first, they are marked in the turn. Safe at
#: any instant: the recorded responses are what a restart goes by (a complete message is only
#: marked, never sent again), and a receipt another worker gets before the mark is asked for again.
SUBMITTED_BATCH = 200
SUBMITTED_DELAY = 0.05
#: Each account's messages go out at most at its rate (`rate_limit_per_second`, 004 §2.2(1): the
#: flow of the gateway the customer may use), shared by every worker (`message_queue.take_starts`:
#: an idle account may start one second of it at once). When a claim
#: brings a worker more of an account's messages than its rate lets out now, the worker keeps this
#: many seconds of its rate (at most half a batch) and gives the rest back to the queue, each due
#: when the rate reaches it; messages waiting for their account's rate do not count against new
#: claims. So one account's burst (a big request, or the 08:05 release of deferred messages) does
#: not keep other accounts' messages waiting behind it, and an account whose rate the link cannot
#: reach is never given back (no churn).
RATE_HOLD_SECONDS = 1.0
#: An account whose rate granted nothing is asked again after 1/rate s (at most 0.1 s), but not sooner than this.
RATE_POLL_SECONDS = 0.005
#: However many wait for their account's rate, a worker holds at most this many batches.
HELD_BATCHES = 2
#: Account settings the worker keeps (service code, rate) are read again after this many seconds.
ACCOUNTS_REFRESH = 30.0
#: A worker looks for numbers newly on an unsubscribe list (a TD another worker received, an
#: administrator's entry) this often, to refund what it holds for them and has not begun to send.
UNSUBSCRIBE_POLL = 0.1
#: … including entries made up to this long before its last look (transactions that committed late).
UNSUBSCRIBE_LAG = timedelta(seconds=30)
#: Seconds between the worker's rows in `dispatch_workers` (the operations page, `dispatch status`).
HEARTBEAT = 10.0
#: A row of another host not written for this long is a stopped worker's: its name may be taken.
NAME_IN_USE_SECONDS = 3 * HEARTBEAT
#: A long reply whose other parts have not come this long after a part is stored as far as it
#: arrived; workers look for such fragments this often.
REPLY_PARTS_WAIT = timedelta(seconds=60)
REPLY_PARTS_SWEEP = 5.0
#: (PostgreSQL) A delivery waits at most this long for a lock another transaction holds (a long
#: message's row, a long reply's lock); past it, the deliver_sm is handed back to the SMSC to be
#: delivered again (`RedeliverLater`), so a transaction that never ends (a stopped process, a
#: forgotten psql session) cannot stop the worker's link: it goes on sending and acknowledging.
LOCK_WAIT_SECONDS = 5.0
#: … and a lock it gave up on is not waited for again this long (its deliveries handed back at once).
LOCK_GIVEN_UP_SECONDS = 60.0

# The statements of the hot path, built once (building them costs more than running them).
_PARTS = MessagePart.__table__
_MESSAGES = Message.__table__
_PART = (_PARTS.c.message_id == sa.bindparam("m"), _PARTS.c.seq == sa.bindparam("q"))
_RECORD_RESPONSE = Prepared(
    sa.update(_PARTS)
    .where(*_PART)
    .values(submit_status=sa.bindparam("status"), smsc_message_id=sa.bindparam("smsc"), submitted_at=sa.bindparam("at"))
)
_INSERT_PART = Prepared(sa.insert(_PARTS).values({name: sa.bindparam(name) for name in ("message_id", "seq", "total", "resent")}))
_FLAG_RESENT = Prepared(sa.update(_PARTS).where(*_PART).values(resent=True))
_CLEAR_THROTTLED = Prepared(sa.update(_PARTS).where(*_PART).values(submit_status=None, smsc_message_id=None, submitted_at=None))
_DELETE_UNSENT = Prepared(sa.delete(_PARTS).where(*_PART, _PARTS.c.submit_status.is_(None)))
_RESTORE_THROTTLED = Prepared(sa.update(_PARTS).where(*_PART, _PARTS.c.submit_status.is_(None)).values(submit_status=ESME_RTHROTTLED))
_SUBMITTED = Prepared(
    sa.update(_MESSAGES)
    .where(_MESSAGES.c.id == sa.bindparam("mid"), sa.or_(*(_MESSAGES.c.status == status for status in CLAIMABLE)))
    .values(status="submitted", submitted_at=sa.bindparam("at"), updated_at=sa.bindparam("at"), claimed_by=None, claimed_at=None)
)
# A part's first final receipt stays: a duplicate, or a stale or contradicting one after it (an
# UNDELIV after DELIVRD, an ENROUTE arriving late), changes nothing.
_FINAL_KEPT = sa.and_(  # constants in the text: the statement's only parameters are the receipt's
    _PARTS.c.receipt_stat.is_not(None), *(_PARTS.c.receipt_stat != sa.literal_column(f"'{stat}'") for stat in sorted(INTERMEDIATE_STATS))
)


def _unless_final(column: sa.Column[Any], parameter: str) -> sa.Case[Any]:
    """The receipt's value for `column`, or the one it holds if its part has a final receipt
    (typed as the column, so a time is stored as every other: in UTC)."""
    return sa.case((_FINAL_KEPT, column), else_=sa.bindparam(parameter, type_=column.type))


# The parts with that SMSC id of the latest message that has it (ids are reused after a while).
# Usually one part; every part of a long message where the SMSC answers all its parts with one id
# (some gateways do, and send one receipt for the whole, or one per part): found by a review, only
# the last part took the receipts, and the message never settled.
_LATEST = _PARTS.alias("latest")
_LATEST_WITH_ID = sa.select(_LATEST.c.message_id).where(
    _LATEST.c.id == sa.select(sa.func.max(_PARTS.c.id)).where(_PARTS.c.smsc_message_id == sa.bindparam("key")).scalar_subquery()
)
_RECEIPTED = Prepared(
    sa.update(_PARTS)
    .where(_PARTS.c.smsc_message_id == sa.bindparam("key"), _PARTS.c.message_id == _LATEST_WITH_ID.scalar_subquery())
    .values(
        receipt_stat=_unless_final(_PARTS.c.receipt_stat, "stat"),
        receipt_err=_unless_final(_PARTS.c.receipt_err, "err"),
        receipt_at=_unless_final(_PARTS.c.receipt_at, "at"),
    )
    .returning(_PARTS.c.message_id, _PARTS.c.total, _PARTS.c.receipt_stat)
)
# Transaction-level advisory locks on a name (PostgreSQL): a worker's name at its start, a long reply's parts.
_TRY_NAME_LOCK = sa.text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))")
_NAME_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))")
# A part prepared or on the wire, its response not recorded: a part without a response of a
# message still to be sent (found by a review: the rows a refunded message leaves, lost in flight
# too often or resent after a crash and then expired, kept every bind bouncing unknown receipts
# for the whole grace, for ever). Read through ix_message_parts_unanswered (only such rows), each
# one's message by its key: the status in a subquery, so no planner starts from the messages
# waiting in the queue (a backlog of any length) instead.
_STATUS_OF_PART = sa.select(_MESSAGES.c.status).where(_MESSAGES.c.id == _PARTS.c.message_id).scalar_subquery()
_ANY_UNANSWERED = sa.select(_PARTS.c.message_id).where(_PARTS.c.submit_status.is_(None), _STATUS_OF_PART.in_(CLAIMABLE)).limit(1)
_STATUS = Prepared(sa.select(_MESSAGES.c.status).where(_MESSAGES.c.id == sa.bindparam("mid")))
_ACCEPTED_PARTS = Prepared(
    sa.select(sa.func.count()).select_from(_PARTS).where(_PARTS.c.message_id == sa.bindparam("mid"), _PARTS.c.submit_status == ESME_ROK)
)
_PART_STATS = Prepared(sa.select(_PARTS.c.seq, _PARTS.c.receipt_stat).where(_PARTS.c.message_id == sa.bindparam("mid")))
# Before reading a long message's part stats (PostgreSQL; SQLite has one writer): two parts' final
# receipts taken at once on two binds would each miss the other's and leave the message unsettled,
# so the second waits for the first's commit and reads its part (READ COMMITTED: a fresh snapshot).
# It waits holding nothing (`_commit_so_far`), after the row was found taken.
_THE_MESSAGE = sa.select(_MESSAGES.c.id).where(_MESSAGES.c.id == sa.bindparam("mid"))
_LOCK_MESSAGE = Prepared(_THE_MESSAGE.with_for_update(skip_locked=True))
_WAIT_FOR_MESSAGE = Prepared(_THE_MESSAGE.with_for_update())
_SENT_MESSAGE = (_MESSAGES.c.id == sa.bindparam("mid"), sa.or_(*(_MESSAGES.c.status == status for status in SENT)))
_FINISHED = Prepared(  # once: a message settled stays settled
    sa.update(_MESSAGES)
    .where(_MESSAGES.c.id == sa.bindparam("mid"), _MESSAGES.c.status == "submitted")
    .values(
        status=sa.bindparam("b_status"),
        done_at=sa.bindparam("at"),
        updated_at=sa.bindparam("at"),
        reported_carrier=sa.func.coalesce(_MESSAGES.c.reported_carrier, sa.bindparam("b_carrier", type_=sa.String)),  # the first wins
    )
)
_CARRIER_OF = sa.select(
    _MESSAGES.c.recipient,
    _MESSAGES.c.status,
    _MESSAGES.c.account_id,
    _MESSAGES.c.carrier,
    _MESSAGES.c.reported_carrier,
    _MESSAGES.c.charge,
    _MESSAGES.c.charge_kind,
    _MESSAGES.c.charged_on,
).where(_MESSAGES.c.id == sa.bindparam("mid"))
_UNSUBSCRIBES = Unsubscribe.__table__
_WORKERS = DispatchWorker.__table__
# Entries by when they were made, looking back UNSUBSCRIBE_LAG: on PostgreSQL ids are taken when a
# row is inserted and transactions commit in any order, so "ids above the last seen" could skip a
# row a slower transaction commits later.
_NEW_UNSUBSCRIBES = Prepared(
    sa.select(_UNSUBSCRIBES.c.id, _UNSUBSCRIBES.c.account_id, _UNSUBSCRIBES.c.number, _UNSUBSCRIBES.c.created_at)
    .where(_UNSUBSCRIBES.c.created_at >= sa.bindparam("since", type_=_UNSUBSCRIBES.c.created_at.type))
    .order_by(_UNSUBSCRIBES.c.id)
)
# A reply to the shared source address (SMSC_DEFAULT_SOURCE) belongs to the account that last
# sent to the number from that address: the newest of the number's messages sent by an account
# without a service code of its own, found through ix_messages_recipient_account. An account with
# its own code never sends from the shared address, so a reply there is not its (found by a review:
# a competitor that texted the number later got the reply and the TD). OFFSET 0 keeps the number's
# rows a subquery of their own, so PostgreSQL does not walk the primary key backwards for the first
# match instead (it did, on a small table, for the ORDER BY … LIMIT 1).
_ACCOUNTS = EnterpriseAccount.__table__
# The platform's own notices (charge_kind notice) are not among them: they go from an address of
# their own (SMSC_NOTICE_SOURCE), whose replies are no account's (`record_reply`). While notices
# went from the shared address, a notice newer than a customer's message there took the reply from
# the customer (found by an exploratory test: the TD was kept under no account, and the customer
# went on texting, and charging, the person); left out of the ranking, its reply went to another
# customer (a review). Notices sent from the shared address before the change are left out too.
_NUMBERS_MESSAGES = (
    sa.select(_MESSAGES.c.account_id, _MESSAGES.c.id)
    .where(
        _MESSAGES.c.recipient == sa.bindparam("number"),
        _MESSAGES.c.status.in_(SENT),
        _MESSAGES.c.charge_kind.is_distinct_from(NOTICE_CHARGE_KIND),
    )
    .offset(0)
    .subquery()
)
_LAST_SENDER = (
    sa.select(_NUMBERS_MESSAGES.c.account_id)
    .join(_ACCOUNTS, _ACCOUNTS.c.id == _NUMBERS_MESSAGES.c.account_id)
    .where(sa.func.coalesce(_ACCOUNTS.c.service_code, "") == "")  # sends from the shared address
    .order_by(_NUMBERS_MESSAGES.c.id.desc())
    .limit(1)
)
_FRAGMENTS = ReplyFragment.__table__
_FRAGMENT_COLUMNS = (_FRAGMENTS.c.sender, _FRAGMENTS.c.destination, _FRAGMENTS.c.reference, _FRAGMENTS.c.total)  # a reply's key
_FRAGMENT_KEY = tuple(column == sa.bindparam(f"b_{column.name}") for column in _FRAGMENT_COLUMNS)
_CARRIER_REPORTED = Prepared(
    sa.update(_MESSAGES).where(*_SENT_MESSAGE, _MESSAGES.c.reported_carrier.is_(None)).values(reported_carrier=sa.bindparam("b_carrier"))
)


@dataclass(eq=False, slots=True)
class _Work:
    """A claimed message while this worker holds it."""

    id: int
    account_id: int
    recipient: str
    content: str
    total: int
    valid_until: datetime
    todo: deque[tuple[OutgoingPart, str]]  # parts still to prepare, with how
    accepted: dict[int, str] = field(default_factory=dict)  # seq -> SMSC message id (OK responses recorded)
    live: int = 0  # parts prepared and not yet recorded
    refusal: str | None = None  # why it is being refunded
    done: bool = False  # submitted or refunded: nothing more to send
    started: bool = False  # a part was prepared (now or by an earlier attempt): past the account's rate
    notice: bool = False  # a free platform notice to the customer: the customer's recipients' unsubscribes do not stop it
    lost: dict[int, int] | None = None  # seq -> times the part was on the wire when the link dropped
    deferred: dict[int, int] | None = None  # seq -> temporary statuses the part was answered with


Factory = Callable[[], Session]


def _session_factory(source: Any, synchronous: str | None, synchronous_commit: str | None = None) -> tuple[Factory, Callable[[], None]]:
    """A session factory on the worker's own engine (a Flask app) or the caller's factory;
    `synchronous` for SQLite, `synchronous_commit` for PostgreSQL (see DispatchSettings), set
    on each new connection (so the URL's and the engine options' own settings stay as given)."""
    if callable(source) and not hasattr(source, "config"):
        return source, lambda: None
    config = source.config
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"], **options)
    if engine.dialect.name == "sqlite" and synchronous:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"not a SQLite synchronous level: {synchronous}")

        @sa.event.listens_for(engine, "connect")
        def _synchronous(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
            cursor.close()

    level = synchronous_commit_level(synchronous_commit)
    if engine.dialect.name == "postgresql" and level:

        @sa.event.listens_for(engine, "connect")
        def _synchronous_commit(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT set_config('synchronous_commit', %s, false)", (level,))
            dbapi_connection.commit()  # the session's setting, not the (implicit) transaction's

    # The worker's one connection: no pool checkout and reset in each turn (a tenth of its time).
    # A connection that breaks fails the turn; `run_worker` starts a fresh Dispatcher.
    try:
        connection = engine.connect()
    except BaseException:
        engine.dispose()
        raise

    def dispose() -> None:
        try:
            connection.close()
        finally:
            engine.dispose()

    return sessionmaker(bind=connection, expire_on_commit=False), dispose


class Dispatcher:
    """Claims due messages, sends their parts through one SMPP bind, records the outcome.

    `source` is the Flask app (the worker gets its own engine) or a callable returning a Session.
    Drive it with `run(stop_event)`, or `step()` in a loop (tests); one thread only.
    """

    def __init__(
        self,
        source: Any,
        link_config: LinkConfig,
        worker_name: str,
        batch: int | None = None,
        *,
        settings: DispatchSettings | None = None,
        link_factory: Callable[..., SmppLink] = SmppLink,
    ) -> None:
        if settings is None:
            settings = DispatchSettings.from_config(source.config) if hasattr(source, "config") else DispatchSettings()
        if batch is not None:
            settings = DispatchSettings(**{**vars(settings), "batch": batch})
        self.settings = settings
        self._temporary = settings.temporary_statuses
        self.worker = worker_name[:64]
        self.window = link_config.window
        self.stats = DispatchStats()
        make_session, self._dispose = _session_factory(source, settings.sqlite_synchronous, settings.pg_synchronous_commit)
        try:
            self._session = make_session()
            self.link = link_factory(
                link_config, on_resp=self._on_resp, on_deliveries=self._on_deliveries, on_link_down=self._on_link_down, wanted=self._wanted
            )
        except BaseException:
            self._dispose()
            raise
        self._reply_settings = SendingSettings(unsubscribe_words=settings.unsubscribe_words)
        self._works: dict[int, _Work] = {}
        self._fresh: deque[_Work] = deque()  # held messages with parts still to prepare, in claim order
        self._ready: deque[tuple[OutgoingPart, str]] = deque()  # rows committed, not yet handed to the link
        self._resps: list[SubmitResult] = []  # answered, not yet recorded
        self._lost: list[tuple[OutgoingPart, bool]] = []  # on the wire when the link dropped (counted?): resend, flagged
        self._deferred: list[tuple[float, int, OutgoingPart]] = []  # throttled out or temporary status: (due, n, part)
        self._deferred_count = 0
        self._early: dict[str, float] = {}  # receipt id -> first seen, for receipts that beat their response
        self._unanswered, self._unanswered_read = False, -math.inf  # (`_unanswered_anywhere`: a yes kept a second)
        self._held_elsewhere: dict[str, float] = {}  # (`_wait_for`) lock -> until when it is not waited for again
        self._batch_gave_up = False  # (`_wait_for`) this delivery batch already waited LOCK_WAIT_SECONDS once
        self._touched: dict[int, _Work] = {}  # works whose outcome may have changed since the last _finish
        self._complete: dict[int, _Work] = {}  # every part accepted and recorded, not yet marked submitted
        self._complete_since = 0.0
        # Settled by _log at the end of the transaction, accounts locked in id order (see lock_accounts):
        self._refusals: dict[str, list[int]] = {}  # message ids to refund, by reason
        self._cancelled: list[Any] = []  # messages a TD reply cancelled (marked; their money not yet given back)
        self._carrier_moves: list[tuple[int, int, date, str, str, Decimal]] = []  # (message, account, day, old, new, charge)
        self._postgresql = self._session.get_bind().dialect.name == "postgresql"
        self._batch_lines: list[LogEntry] | None = None  # the send-log lines of the delivery batch under way
        self._holds_message = False  # (PostgreSQL) the batch's transaction holds a long message's row: see _on_deliveries
        self._ported: dict[str, tuple[int, str]] = {}  # number -> (message, carrier) a receipt reported: by _log
        self._next_fragment_sweep = 0.0
        self._accounts: dict[int, tuple[str, str | None]] = {}  # id -> (code, service_code)
        self._rates: dict[int, int] = {}  # account id -> messages a second
        self._granted: dict[int, int] = {}  # account id -> starts taken from its rate in this turn, not used yet
        self._rate_full: dict[int, float] = {}  # account id -> when to ask its rate again (monotonic), after a grant of none
        self._accounts_read = time.monotonic()
        self._next_slot: dict[int, datetime] = {}  # account id -> when the next message given back is due
        self._over_rate = 0  # held messages the last _prepare found over their account's rate
        self._segmentations: dict[str, Segmentation] = {}  # content -> parts (bulk sends repeat it)
        self._resps_since = 0.0
        self._open = 0  # part rows of this worker with NULL submit_status (the resend budget)
        self._on_wire = 0
        self._stopping = False
        self._failure: BaseException | None = None
        self._next_claim = 0.0
        self._unsubscribes_since: datetime | None = None  # when this worker last looked at the unsubscribe list
        self._unsubscribes_handled: dict[int, datetime] = {}  # entries acted on within the lag -> when made
        self._next_unsubscribe_poll = 0.0
        self._next_renewal = time.monotonic() + settings.lease_seconds / 3
        self._next_report = time.monotonic() + 60.0
        self._next_heartbeat = 0.0
        self._started_at = utcnow()
        self._down_since: datetime | None = self._started_at  # not bound since (None while bound)
        self._problems_seen = 0  # link.problems when the last heartbeat was written
        self._ended_by: BaseException | None = None  # what ended run() or close() outside the worker's transactions
        # For the operations page: what went wrong since the SMSC last accepted a part.
        self._refused_in_a_row = 0  # messages the SMSC refused a part of (any error but throttling)
        self._temporary_in_a_row = 0  # parts answered with a temporary status since one was accepted
        self._last_temporary: str | None = None
        self._refused_texts: set[int] = set()  # their different texts (a content filter refuses one; a broken channel all)
        self._last_refusal = ""
        self._drops_in_a_row = 0  # links dropped with parts on the wire
        self._started = False
        self._unbound_since: float | None = None  # (monotonic) the link not bound since, seen by `step`

    # --- public -----------------------------------------------------------------------------

    @property
    def open_parts(self) -> int:
        """Part rows of this worker whose submit_sm_resp is not recorded (never above the window)."""
        return self._open

    def start(self) -> None:
        """Take back this worker's own leases (a restart under the same name resumes at once),
        unless another live process runs a worker under the name (`WorkerNameInUse`)."""
        if self._started:
            return
        self._refuse_codes_on_the_notice_source()
        self._take_name()
        released = release_worker(self._session, worker=self.worker)
        self._unsubscribes_since = utcnow()  # earlier entries: the claims check them
        self._commit()
        if released:
            log.warning("dispatcher %s: took back %d messages it held before a restart", self.worker, released)
        self._started = True  # (its row was written by `_take_name`)

    def _refuse_codes_on_the_notice_source(self) -> None:
        """A live account whose service code is the platform's notice address, or nests with it,
        would lose its replies and TDs to the platform (`record_reply`) and see the notices go
        from its number: refused at the start, naming the accounts (found by a review: contracts
        refuse such codes, but accounts opened before SMSC_NOTICE_SOURCE existed were not looked at)."""
        notice = self.settings.notice_source
        if not notice:
            return
        clashing = self._session.execute(codes_nesting_with(notice)).all()
        self._session.rollback()
        if clashing:
            named = "、".join(f"{account}（服务代码 {service_code}）" for account, _, service_code in clashing)
            raise ConfigError(
                f"SMSC_NOTICE_SOURCE={notice!r}：平台通知发送号码与账户 {named} 的服务代码相同或互为开头部分，"
                "这些账户收到的回复和退订将无法归属：请把 SMSC_NOTICE_SOURCE 设为不与任何服务代码重叠的号码后再启动"
            )

    def _take_name(self) -> None:
        """Found by a review: a second process started under a running worker's name (the default
        `dispatch@<host>` makes it easy) released that worker's leases and claimed its messages;
        leases are by name, so neither noticed, and both sent them. The name is taken by writing
        the worker's row, after a look at who wrote it last: a process of this host still alive,
        or a row of another host written in the last NAME_IN_USE_SECONDS, refuses the start.
        (PostgreSQL: a lock on the name makes two starts at once take turns.)"""
        if self._postgresql:
            self._session.execute(_NAME_LOCK, {"name": f"worker:{self.worker}"})
        row = self._session.execute(
            sa.select(_WORKERS.c.host, _WORKERS.c.pid, _WORKERS.c.state, _WORKERS.c.started_at, _WORKERS.c.seen_at).where(
                _WORKERS.c.name == self.worker
            )
        ).first()
        host, pid = socket.gethostname()[:128], os.getpid()
        if row is not None and row.state == "running" and (row.host, row.pid) != (host, pid):
            if row.host == host:
                alive = _process_alive(row.pid, row.started_at)
            else:
                alive = utcnow() - row.seen_at < timedelta(seconds=NAME_IN_USE_SECONDS)
            if alive:
                self._session.rollback()
                raise WorkerNameInUse(
                    f"dispatcher {self.worker}: process {row.pid} on {row.host} runs a worker under this name "
                    f"(seen {row.seen_at:%Y-%m-%d %H:%M:%S} UTC); give each worker its own --name"
                )
        self._heartbeat()  # (commits: the name is this process's from now on)

    def step(self, timeout: float | None = None) -> None:
        """One turn: let the link send, wait and read (up to `timeout`), then one transaction."""
        self.start()
        if time.monotonic() >= self._next_renewal:  # before the link sends anything more
            self._renew_leases()
        if timeout is None:
            timeout = 0.05 if (self._ready or self._on_wire or self._fresh) else self.settings.idle_poll
        if self._resps:  # answers are waiting to be recorded: come back for them soon
            timeout = min(timeout, max(0.0, self._resps_since + RECORD_DELAY - time.monotonic()))
        try:
            self.link.run_once(self._provide, timeout=timeout, meanwhile=self._meanwhile)
        except BindRefused as refused:
            log.error("dispatcher %s: %s; retrying later", self.worker, refused)
        if self._failure is not None:
            raise self._failure
        mono = time.monotonic()
        self._give_back_if_down(mono)
        if self._resps and self._on_wire and mono < self._resps_since + RECORD_DELAY and self.link.bound:
            return  # the rest of the window is about to answer: record them together
        if mono >= self._next_renewal:  # (the link's wait or a callback took that long) before preparing more
            self._renew_leases()
        with self._failure_stops():
            self._flush(mono)
        self._report()
        if mono >= self._next_heartbeat:
            self._heartbeat_or_log()

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set, then drain the window, record everything and release the rest."""
        log.info("dispatcher %s: starting (window %d, batch %d)", self.worker, self.window, self.settings.batch)
        try:
            while not stop.is_set():
                self.step()
        except BaseException as exc:
            self._ended_by = exc  # (a failure outside the worker's transactions too: its row says so)
            raise
        finally:
            self.close()

    def _give_back_if_down(self, mono: float) -> None:
        """Found by a review: a worker whose link went down kept its messages leased (renewed
        every lease/3) and its window prepared, so no other worker could send them and none was
        refunded when its validity passed; back up two days later, it sent them late."""
        if self.link.bound:
            self._unbound_since = None
        elif self._unbound_since is None:
            self._unbound_since = mono
        elif mono - self._unbound_since >= self.settings.release_after_link_down and any(not w.done for w in self._works.values()):
            gave_back = LinkDownTooLong(
                f"dispatcher {self.worker}: the link has been down {mono - self._unbound_since:.0f} s; "
                "giving the messages it holds back to the queue"
            )
            self._ended_by = gave_back  # (close() then releases them, and its row says why it stopped)
            raise gave_back

    def run_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Step until `done()` (tests and tools); TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"dispatcher: condition not reached within {timeout} s ({self.stats})")
            self.step(timeout=0.02)

    def close(self) -> None:
        """Stop sending, let the link drain and unbind, record what came back, release the leases."""
        if self._stopping:
            return
        self._stopping = True
        try:
            if self._failure is None:
                self.link.close()  # (the deliveries it takes while draining may fail the worker)
            if self._failure is None:
                self._final_flush()
            else:  # memory and database may disagree: drop the link, leave the rest to the restart
                self.link.__exit__(type(self._failure), self._failure, None)
        except BaseException as exc:
            self._ended_by = self._ended_by or exc
            raise
        finally:
            try:
                if self._started:
                    self._last_heartbeat()
                self._session.close()
            finally:
                self._dispose()
            log.info("dispatcher %s: stopped: %s", self.worker, self.stats)

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- link callbacks (inside link.run_once) -------------------------------------------------

    def _provide(self, count: int) -> list[OutgoingPart]:
        if self._stopping or self._failure is not None or time.monotonic() >= self._next_renewal:
            return []  # (a renewal due: nothing more goes out before `step` has renewed the leases)
        out: list[OutgoingPart] = []
        while self._ready and len(out) < count:
            out.append(self._ready.popleft()[0])
        self._on_wire += len(out)
        self.stats.parts_sent += len(out)
        return out

    def _meanwhile(self) -> None:
        """While the window is on its way: mark the messages completed so far submitted, in a
        transaction of their own (see SUBMITTED_BATCH)."""
        if not self._complete or self._stopping or self._failure is not None:
            return
        with self._failure_stops():
            self._end_transaction(utcnow(), [])

    def _wanted(self, part: OutgoingPart) -> bool:
        """Whether the link is to try a throttled part again now: not if its message was refunded
        meanwhile, nor while the leases are due for renewal (the SMSC did not take the part; its
        throttling is recorded, and it goes again later unless refunded)."""
        if self._stopping or time.monotonic() >= self._next_renewal:  # (closing; or not before the leases are renewed)
            return False  # it goes back to the queue
        work = self._works.get(part.key[0])  # type: ignore[index]
        return work is not None and work.refusal is None

    def _on_resp(self, result: SubmitResult) -> None:
        self._on_wire -= 1
        if not self._resps:
            self._resps_since = time.monotonic()
        self._resps.append(result)

    def _on_link_down(self, parts: list[OutgoingPart], reason: str) -> None:
        if self._down_since is None:
            self._down_since = utcnow()
        if parts and not self._stopping:  # (an idle link an SMSC drops now and then is no sign of trouble)
            self._drops_in_a_row += 1
        self.stats.links_down += 1
        self._on_wire -= len(parts)
        # A loss counts against the part's resend_limit only if the session answered something:
        # found by a review, an SMSC that unbinds or closes right after each bind had every
        # session's window "lost in flight", and the messages refunded as lost too often,
        # though the fault was the link's. (The link then sends one part at a time, after a sign
        # of life, until a submit_sm is answered: a part it drops the link on is still found out.)
        counted = self.link.session_answered
        self._lost.extend((part, counted) for part in parts)
        if parts:
            log.warning("dispatcher %s: link down (%s) with %d parts in flight: they will be resent", self.worker, reason, len(parts))

    def _on_deliveries(self, deliveries: list[Receipt | MobileOriginated]) -> list[bool]:
        """The receipts and replies of one read of the link, committed before the link
        acknowledges them (in one transaction unless a wait cuts it, see `_guarded`); one the
        SMSC is to deliver again (RedeliverLater) is refused alone.

        Receipts are taken in the order of their ids, then replies by their senders (a sender's in
        the order they came): every bind locks the parts it updates, and the unsubscribes a TD
        makes, in one order (PostgreSQL: an SMSC delivering the same receipts again
        on another bind, in another order, had each bind wait for the row the other held). A
        part's own receipts keep their order. Once the batch holds a long message's row (locked
        to read its parts' receipts, `_apply_receipt`), it waits for no other message's row while
        holding it: it takes a one-part message's row as a long one's, and commits first if
        another transaction has it (that transaction, marking messages submitted, could come to
        the long message next); and it commits before the replies."""
        taken = [True] * len(deliveries)

        def order(n: int) -> tuple[int, str, int]:
            delivery = deliveries[n]
            return (0, normalise_message_id(delivery.message_id), n) if isinstance(delivery, Receipt) else (1, delivery.source, n)

        def work(now: datetime) -> None:
            mono = time.monotonic()
            for n in sorted(range(len(deliveries)), key=order):
                delivery = deliveries[n]
                if self._holds_message and not isinstance(delivery, Receipt):  # (replies: see the docstring)
                    self._commit_so_far(now)
                try:
                    if isinstance(delivery, Receipt):
                        self._receipt(delivery, now, mono)
                    else:
                        self.stats.mobile_originated += 1
                        self._reply(delivery, now)
                except RedeliverLater as wait:
                    log.info("dispatcher %s: %s", self.worker, wait)
                    taken[n] = False

        self._guarded(work)
        return taken

    def _on_receipt(self, receipt: Receipt) -> None:
        """One receipt in a transaction of its own (tools and tests; the link hands the worker
        its deliveries in batches, `_on_deliveries`)."""
        self._guarded(lambda now: self._receipt(receipt, now, time.monotonic()))

    def _on_mo(self, mo: MobileOriginated) -> None:
        """One reply in a transaction of its own (as `_on_receipt`)."""
        self.stats.mobile_originated += 1
        self._guarded(lambda now: self._reply(mo, now))

    def _guarded(self, work: Callable[[datetime], object]) -> None:
        """Record pending responses, then do `work`, committed before the link acknowledges the
        deliver_sm. Messages the responses complete or refuse are marked or refunded in a
        transaction of their own first (not held through the work's waits); the work's own
        transaction may be cut short by `_commit_so_far`. A failure is re-raised (the SMSC will
        deliver it again) and stops the worker after this turn: its memory may no longer match
        the database."""
        later = None
        if self._failure is not None:  # (another read of the same turn, after a failure: delivered again)
            raise self._failure
        self._batch_gave_up = False
        with self._failure_stops():
            now = utcnow()
            lines: list[LogEntry] = []
            self._record_responses(now, lines)
            if self._finish(now, lines):  # messages marked or refused: committed before any delivery, not held
                self._end_transaction(now, lines)  # through the batch's waits (two binds' batches waited in a circle)
                lines = []
            self._batch_lines = lines
            try:
                work(now)
            except RedeliverLater as wait:
                later = wait
            finally:
                self._batch_lines = None
            self._end_transaction(now, lines)  # what the work settled (a TD reply's held messages) is settled in its transaction
        if later is not None:
            raise later

    def _commit_so_far(self, now: datetime) -> None:
        """(PostgreSQL) End the delivery batch's transaction here, everything it did so far
        settled and committed as at its end, so that the lock the worker is about to wait for is
        the only one its transaction holds: a waiter holding nothing is in no cycle (two binds
        taking two long messages' receipts, or two long replies' parts, in opposite orders
        deadlocked). The batch goes on in a new transaction; the link acknowledges it at the end."""
        self._end_transaction(now, self._batch_lines if self._batch_lines is not None else [])

    def _end_transaction(self, now: datetime, lines: list[LogEntry]) -> None:
        """Settle what the transaction completed or refused, write its money and send-log lines, commit."""
        self._finish(now, lines)
        self._log(lines, now)
        self._commit()

    @contextmanager
    def _failure_stops(self) -> Iterator[None]:
        """A transaction of the worker: whatever fails in it rolls it back and stops the worker
        (`step` raises it from then on): its memory may no longer match the database."""
        try:
            yield
        except BaseException as exc:
            self._session.rollback()
            self._holds_message = False
            self._failure = exc
            # What the transaction left to its end is gone with it: never applied by a later one.
            self._refusals, self._cancelled, self._carrier_moves, self._ported = {}, [], [], {}
            raise

    # --- the turn's transaction ---------------------------------------------------------------

    def _flush(self, mono: float) -> None:
        now = utcnow()
        lines: list[LogEntry] = []
        wrote = bool(self._resps)
        self._record_responses(now, lines)
        self._finish(now, lines, hold=True)
        wrote |= self._requeue_lost(lines)
        wrote |= self._requeue_deferred(mono)
        if mono >= self._next_unsubscribe_poll:
            self._next_unsubscribe_poll = mono + UNSUBSCRIBE_POLL
            self._poll_unsubscribes(now)
            if self._touched:
                wrote = True
                self._finish(now, lines, hold=True)  # refunded before anything of theirs is prepared
        if not self._stopping and self._wants_claim(mono):
            wrote |= self._claim(now, mono)
        wrote |= self._prepare(now, mono, lines)
        wrote |= self._expire_mo_parts(now, mono)
        if self._touched or self._complete:
            wrote |= self._finish(now, lines, hold=True)  # loaded complete, refused at load, validity passed; complete ones due
        if lines or self._refusals or self._cancelled or self._carrier_moves or self._ported:
            self._log(lines, now)
            wrote = True
        if wrote:
            self._commit()
        else:
            self._session.rollback()  # end the read transaction, if any

    def _renew_leases(self) -> None:
        """Renew the leases of the messages this worker holds, in a transaction of its own; if one
        was lost (the worker stalled past the lease and another took the message over), stop
        before sending anything more: the restart (`run_worker`) goes by what the database says."""
        with self._failure_stops():
            self._next_renewal = time.monotonic() + self.settings.lease_seconds / 3
            held = [w.id for w in self._works.values() if not w.done]
            renewed = renew_leases(self._session, held, worker=self.worker, now=utcnow())
            if renewed < len(held):
                raise LeaseLost(
                    f"dispatcher {self.worker}: the leases of {len(held) - renewed} of the {len(held)} messages it holds "
                    f"ran out and another worker took them; stopping before sending more"
                )
            self._commit()

    def _commit(self) -> None:
        self._session.commit()
        self._holds_message = False
        self.stats.commits += 1

    def _log(self, lines: list[LogEntry], now: datetime) -> None:
        """End the transaction's writes: lock every account it changes in the order of their ids,
        refund what it refused or a TD cancelled, move charges to reported carriers, then append
        its send-log lines. Every balance-changing transaction takes accounts first, in that
        order, and the send log last (`lock_accounts`), so none waits for another in a circle."""
        refunds, self._cancelled = self._cancelled, []
        moves, self._carrier_moves = self._carrier_moves, []
        if self._refusals:
            refusals, self._refusals = self._refusals, {}
            failed = mark_failed(self._session, refusals, worker=self.worker)
            self.stats.refunded += len(failed)
            if not _STOPPED_REASONS.isdisjoint(refusals):  # (refunds only: no cost to a message that is sent)
                self.stats.refunded_unsent += sum(1 for row in failed if row.error in _STOPPED_REASONS)
            refunds += failed
        if moves:  # with the refunds' accounts (give_back locks those itself when alone)
            lock_accounts(self._session, {row.account_id for row in refunds} | {move[1] for move in moves})
        lines.extend(give_back(self._session, refunds, notice_source=self.settings.notice_source))
        for message_id, account_id, day, old, new, charge in moves:
            if not move_usage_carrier(self._session, account_id, day, old, new, charge):
                _usage_stays(message_id, new, day, old)
        if self._ported:  # numbers in order: two binds' receipts for two ported numbers do not wait for each other
            ported, self._ported = self._ported, {}
            for number in sorted(ported):
                message_id, carrier = ported[number]
                record_reported_carrier(self._session, number, carrier, message_id=message_id, now=now)
        if lines:
            append_send_log(self._session, lines, at=now)
            lines.clear()

    def _entry(self, work: _Work, result: str) -> LogEntry:
        code, service_code = self._accounts[work.account_id]
        source = self.settings.notice_source if work.notice else service_code  # as `_load` sent it
        return LogEntry(code, source, work.recipient, work.content, result[:300], work.id)

    def _record_responses(self, now: datetime, lines: list[LogEntry]) -> None:
        """Write every submit_sm_resp that came in; decide which messages are complete or refused."""
        if not self._resps:
            return
        results, self._resps = self._resps, []
        rows = []
        for result in results:
            message_id, seq = result.part.key  # type: ignore[misc]
            status = result.command_status
            smsc_id = normalise_message_id(result.message_id) if status == ESME_ROK and result.message_id else None
            # The column is a signed 32-bit integer: a status past 0x7FFFFFFF (reserved, or an SMSC's
            # own) is kept as its two's-complement reading rather than failing the turn for ever.
            rows.append({"m": message_id, "q": seq, "status": status if status < 2**31 else status - 2**32, "smsc": smsc_id, "at": now})
            self._open -= 1
            work = self._works.get(message_id)
            if work is not None:
                work.live -= 1
                self._touched[work.id] = work
            if status == ESME_ROK:
                self.stats.parts_accepted += 1
                self._refused_in_a_row = self._drops_in_a_row = self._temporary_in_a_row = 0
                self._refused_texts.clear()
                if work is not None:
                    work.accepted[seq] = smsc_id or ""
            elif status in RETRYABLE:  # out of throttling retries: the SMSC did not take it, send later
                self.stats.parts_throttled_out += 1
                if work is not None and work.refusal is None:
                    self._defer(result.part, self.settings.throttle_requeue)
            elif status in self._temporary:  # not taken this time, for a reason that passes: later
                self.stats.parts_deferred += 1
                self._temporary_in_a_row += 1
                self._last_temporary = describe_status(status)
                if work is not None and work.refusal is None:
                    self._defer_temporary(work, result.part, status, now)
            else:
                self.stats.parts_refused += 1
                if work is not None and work.refusal is None:  # (a message counts once, however many parts)
                    self._refused_in_a_row += 1
                    self._last_refusal = describe_status(status)
                    if len(self._refused_texts) < 16:
                        self._refused_texts.add(hash(work.content))
                    work.refusal = f"运营商网关拒绝提交第 {seq}/{work.total} 条（{describe_status(status)}），已退款"
        _RECORD_RESPONSE.executemany(self._session, rows)

    def _defer(self, part: OutgoingPart, delay: float) -> None:
        """The part goes again in `delay` seconds (`_requeue_deferred`), unflagged: the SMSC did not take it."""
        self._deferred_count += 1
        heapq.heappush(self._deferred, (time.monotonic() + delay, self._deferred_count, part))

    def _defer_temporary(self, work: _Work, part: OutgoingPart, status: int, now: datetime) -> None:
        """A part answered with a temporary status (found by a review: ESME_RSYSERR and
        ESME_RX_T_APPN refunded the message, though the next try would have gone through, and
        ESME_RMSGQFUL paused the whole link). It waits throttle_requeue, twice as long after
        each such answer, at most temporary_retry_max, and never past its message's validity:
        then `_prepare` refunds the message. No resend flag, no loss counted, no pause for the
        others."""
        message_id, seq = part.key  # type: ignore[misc]
        if work.deferred is None:
            work.deferred = {}
        times = work.deferred[seq] = work.deferred.get(seq, 0) + 1
        settings = self.settings
        delay = doubling_delay(settings.throttle_requeue, times, settings.temporary_retry_max)
        delay = max(0.0, min(delay, (work.valid_until - now).total_seconds()))
        log.info(
            "dispatcher %s: message %d part %d answered %s (%d in a row): sent again in %.1f s",
            self.worker, message_id, seq, describe_status(status), times, delay,
        )  # fmt: skip
        self._defer(part, delay)

    def _finish(self, now: datetime, lines: list[LogEntry], *, hold: bool = False) -> bool:
        """Refund refused messages and mark complete ones submitted (in the current transaction;
        with `hold`, complete ones wait for SUBMITTED_BATCH / SUBMITTED_DELAY); forget the ones
        with nothing left on the wire. True if it wrote."""
        if not self._touched and not self._complete:
            return False
        touched, self._touched = list(self._touched.values()), {}
        refused = [w for w in touched if not w.done and w.refusal is not None]
        for work in touched:
            if not work.done and work.refusal is None and len(work.accepted) == work.total:
                if not self._complete:
                    self._complete_since = time.monotonic()
                self._complete[work.id] = work
        complete: list[_Work] = []
        if self._complete and not (hold and self._hold_complete()):
            complete = [w for w in self._complete.values() if not w.done]
            touched.extend(self._complete.values())
            self._complete = {}
        if complete:
            _SUBMITTED.executemany(self._session, [{"mid": w.id, "at": now} for w in complete])
            for work in complete:
                work.done = True
                ids = ",".join(work.accepted[seq] for seq in sorted(work.accepted))
                lines.append(self._entry(work, f"submitted: {ids}"))
                self.stats.submitted += 1
        if refused:
            by_reason: dict[str, list[int]] = {}
            for work in refused:
                work.done = True
                by_reason.setdefault(work.refusal or "", []).append(work.id)
                self._drop_unsent(work)
            for reason, message_ids in by_reason.items():
                self._refusals.setdefault(reason, []).extend(message_ids)  # refunded by _log, at the end of the transaction
        for work in touched:
            if work.done and work.live == 0:
                self._works.pop(work.id, None)
        return bool(complete or refused)

    def _hold_complete(self) -> bool:
        """Whether complete messages may wait to be marked submitted with more (see SUBMITTED_BATCH)."""
        if self._stopping or not (self._on_wire or self._ready or self._fresh):
            return False
        return len(self._complete) < SUBMITTED_BATCH and time.monotonic() < self._complete_since + SUBMITTED_DELAY

    def _drop_unsent(self, work: _Work) -> None:
        """A refunded message's parts not yet handed to the link are not sent; rows made for them go
        (its throttled parts waiting in the link for a retry are given up there: `_wanted`)."""
        work.todo.clear()
        kept: deque[tuple[OutgoingPart, str]] = deque()
        dropped = []
        for part, how in self._ready:
            if part.key[0] == work.id:  # type: ignore[index]
                dropped.append((part, how))
            else:
                kept.append((part, how))
        self._ready = kept
        self._open -= len(dropped)
        work.live -= len(dropped)
        self._unprepare(dropped)

    def _unprepare(self, parts: Sequence[tuple[OutgoingPart, str]]) -> None:
        """Undo the preparation of parts that never reached the link: a new row goes, a row of a
        throttled part gets its status back; a resend's row stays (it may have been sent before)."""
        new = [{"m": p.key[0], "q": p.key[1]} for p, how in parts if how == _INSERT]  # type: ignore[index]
        retried = [{"m": p.key[0], "q": p.key[1]} for p, how in parts if how == _RETRY]  # type: ignore[index]
        if new:
            _DELETE_UNSENT.executemany(self._session, new)
        if retried:
            _RESTORE_THROTTLED.executemany(self._session, retried)

    def _requeue_lost(self, lines: list[LogEntry]) -> bool:
        """Parts on the wire when the link dropped go out again, first, flagged as resends; a
        message with a part lost more than `resend_limit` times (in sessions that answered
        something: see `_on_link_down`) is refunded instead (an SMSC that drops the link on it
        would otherwise have it resent without end)."""
        if not self._lost:
            return False
        lost, self._lost = self._lost, []
        for part, counted in lost:
            message_id, seq = part.key  # type: ignore[misc]
            work = self._works.get(message_id)
            if not counted or work is None or work.refusal is not None:
                continue
            if work.lost is None:
                work.lost = {}
            times = work.lost[seq] = work.lost.get(seq, 0) + 1
            if times > self.settings.resend_limit:
                log.error("dispatcher %s: message %d part %d lost in flight %d times: refunded", self.worker, message_id, seq, times)
                work.refusal = LOST_TOO_OFTEN.format(seq=seq, total=work.total, times=times)
        flagged, again = [], []
        for part, _ in lost:
            message_id, seq = part.key  # type: ignore[misc]
            work = self._works.get(message_id)
            if work is None or work.refusal is not None:
                self._open -= 1
                if work is not None:
                    work.live -= 1
                    self._touched[work.id] = work
                continue
            flagged.append({"m": message_id, "q": seq})
            lines.append(self._entry(work, f"resent: part {seq}/{work.total}, no submit_sm_resp before the link dropped"))
            again.append((part, _RESEND))
            self.stats.resent += 1
        self._ready.extendleft(reversed(again))  # first, in the order they went before
        if flagged:
            _FLAG_RESENT.executemany(self._session, flagged)
        return True

    def _requeue_deferred(self, mono: float) -> bool:
        """Deferred parts (throttled out, or answered with a temporary status) whose wait is over
        go back to the front of their message's parts."""
        moved = False
        while self._deferred and self._deferred[0][0] <= mono:
            part = heapq.heappop(self._deferred)[2]
            work = self._works.get(part.key[0])  # type: ignore[index]
            if work is None or work.refusal is not None:
                continue
            work.todo.appendleft((part, _RETRY))
            if work not in self._fresh:
                self._fresh.appendleft(work)
            moved = True
        return moved

    def _claim_room(self) -> int:
        """How many more messages to claim: a batch, not counting those that wait for their
        account's rate (others may be due meanwhile), within HELD_BATCHES batches in all."""
        ready = len(self._fresh) - self._over_rate
        return min(self.settings.batch - ready, HELD_BATCHES * self.settings.batch - len(self._fresh))

    def _wants_claim(self, mono: float) -> bool:
        if self.link.config.bind_mode == "receiver":  # a receipts-only bind sends nothing
            return False
        if not self.link.bound:  # nothing held where it cannot go out (see _give_back_if_down)
            return False
        return self._claim_room() > self.settings.batch // 2 and mono >= self._next_claim

    def _claim(self, now: datetime, mono: float) -> bool:
        """Lease more due messages and load what earlier attempts recorded of their parts."""
        limit = self._claim_room()
        if limit <= 0:
            return False
        messages = claim_due(self._session, worker=self.worker, limit=limit, now=now, lease_seconds=self.settings.lease_seconds)
        if not messages:
            self._next_claim = mono + self.settings.idle_poll
            return False
        self.stats.claimed += len(messages)
        ids = [m.id for m in messages if m.attempts > 1]  # claimed before: parts may have been recorded
        recorded: dict[int, dict[int, tuple[int | None, str | None]]] = {}
        if ids:
            for message_id, seq, status, smsc_id in self._session.execute(
                sa.select(_PARTS.c.message_id, _PARTS.c.seq, _PARTS.c.submit_status, _PARTS.c.smsc_message_id).where(
                    _PARTS.c.message_id.in_(ids)
                )
            ):
                recorded.setdefault(message_id, {})[seq] = (status, smsc_id)
        missing = {m.account_id for m in messages} - self._accounts.keys()
        if mono - self._accounts_read > ACCOUNTS_REFRESH:  # an administrator may have changed a rate: read all again
            missing |= self._accounts.keys()
            self._accounts_read = mono
        if missing:
            rows = self._session.execute(
                sa.select(
                    EnterpriseAccount.id, EnterpriseAccount.code, EnterpriseAccount.service_code, EnterpriseAccount.rate_limit_per_second
                ).where(EnterpriseAccount.id.in_(missing))
            )
            for account_id, code, service_code, rate in rows:
                self._accounts[account_id] = (code, service_code)
                self._rates[account_id] = max(1, int(rate or 1))
        unsubscribed = self._unsubscribed(messages)
        # Read fresh at every claim: what an account suspended, blacklisted or closed has due is
        # refunded here (closing refunds what waits at once, `cancel_account_waiting`).
        stopped = sending_refusals(self._session, {m.account_id for m in messages if m.charge > 0})
        for message in messages:
            work = self._load(message, recorded.get(message.id, {}))
            if not recorded.get(message.id) and work.refusal is None and not work.notice:
                if message.account_id in stopped:
                    work.refusal = stopped[message.account_id]
                    work.todo.clear()
                elif (message.account_id, message.recipient) in unsubscribed:
                    work.refusal = UNSUBSCRIBED_REFUSAL  # a TD that came while another (since dead) worker held it
                    work.todo.clear()
            self._works[work.id] = work
            if work.todo and work.refusal is None:
                self._fresh.append(work)
            else:  # complete or refused already: settled by _finish
                self._touched[work.id] = work
        self._defer_over_rate(now, mono, {m.account_id for m in messages})
        return True

    def _defer_over_rate(self, now: datetime, mono: float, accounts: set[int]) -> None:
        """Give back to the queue what this worker holds of an account beyond RATE_HOLD_SECONDS of
        its rate (messages not begun, the newest first), each due when the account's rate reaches
        it, so the queue stays in the order the accounts' rates let messages out."""
        waiting: dict[int, list[_Work]] = {}
        for work in self._fresh:
            if work.account_id in accounts and not work.started and work.refusal is None:
                waiting.setdefault(work.account_id, []).append(work)
        due: list[tuple[int, datetime]] = []
        for account_id, works in waiting.items():
            rate = self._rates.get(account_id, 1)
            keep = max(1, min(math.ceil(rate * RATE_HOLD_SECONDS), self.settings.batch // 2))
            if len(works) > keep:  # as many as the account's rate (shared by every worker) would let start now
                keep = max(keep, starts_available(self._session, account_id, rate=rate, now=now, hold=RATE_HOLD_SECONDS))
            if len(works) <= keep:
                continue
            slot = max(self._next_slot.get(account_id, now), now + timedelta(seconds=keep / rate))
            for work in works[keep:]:
                due.append((work.id, slot))
                slot += timedelta(seconds=1 / rate)
            self._next_slot[account_id] = slot
        if due:
            defer(self._session, due, worker=self.worker)
            released = {message_id for message_id, _ in due}
            self._fresh = deque(w for w in self._fresh if w.id not in released)
            for message_id in released:
                del self._works[message_id]
            self.stats.deferred += len(released)

    def _admit(self, account_id: int, mono: float, room: int) -> bool:
        """Take one message's start from the account's rate (shared by every worker), or False.
        Starts are taken from the database in one grant per account and turn, of at most what the
        turn can still send of that account's messages; `_give_back` returns the rest."""
        count = self._granted.get(account_id, 0)
        if count <= 0:
            if self._rate_full.get(account_id, 0.0) > mono:
                return False
            rate = self._rates.get(account_id, 1)
            waiting = (w for w in self._fresh if w.account_id == account_id and not w.started and w.refusal is None)
            want = sum(1 for _ in itertools.islice(waiting, room))  # up to the room left: _fresh holds several batches
            # The clock read now, not the turn's `now`: a turn slowed by its claim (a lock wait)
            # would date the grant back and let a second bucket out behind the first.
            count = take_starts(self._session, account_id, rate=rate, want=want, now=utcnow(), hold=RATE_HOLD_SECONDS)
            if count <= 0:
                self._rate_full[account_id] = mono + min(max(1.0 / rate, RATE_POLL_SECONDS), 0.1)  # (or another worker held its row)
                return False
        self._granted[account_id] = count - 1
        return True

    def _give_back(self) -> None:
        """Return to each account's rate the starts this turn took and did not use."""
        granted, self._granted = self._granted, {}
        for account_id, unused in granted.items():
            give_back_starts(self._session, account_id, rate=self._rates.get(account_id, 1), count=unused)

    def _segments(self, content: str) -> Segmentation:
        segmentation = self._segmentations.get(content)
        if segmentation is None:
            if len(self._segmentations) >= 1024:
                self._segmentations.clear()
            segmentation = self._segmentations[content] = encode_segments(content, MAX_PARTS_IN_UDH)
        return segmentation

    def _load(self, message: ClaimedMessage, recorded: Mapping[int, tuple[int | None, str | None]]) -> _Work:
        try:
            segmentation = self._segments(message.content)
        except ValueError as unsendable:  # cannot happen to what intake accepted; never retry it forever
            log.error("message %s cannot be encoded: %s", message.id, unsendable)
            work = _Work(message.id, message.account_id, message.recipient, message.content, message.segments, message.valid_until, deque())
            work.refusal = "短信内容无法编码发送，已退款"
            work.notice = message.charge == 0
            return work
        if segmentation.parts != message.segments:
            log.error("message %s: %d parts now, %d charged at intake", message.id, segmentation.parts, message.segments)
        notice = message.charge == 0  # a free platform notice (`send_notification_sms`)
        # A notice goes from the platform's own notice address (SMSC_NOTICE_SOURCE), never the
        # customer's service code (found by an exploratory test: a TD to the invoice SMS put the
        # customer's own mobile on its unsubscribe list) nor the address customers without a code
        # share (another: the reply and TD of a number a customer had texted from there were lost
        # to a notice sent to it since). Chosen here, at sending: notices queued before go from it too.
        code_source = self.settings.notice_source if notice else (self._accounts[message.account_id][1] or self.settings.default_source)
        source_ton = 5 if not code_source.isdigit() else 0
        work = _Work(message.id, message.account_id, message.recipient, message.content, segmentation.parts, message.valid_until, deque())
        work.started, work.notice = bool(recorded), notice
        for seq, body in enumerate(segmentation.short_messages(message.id & 0xFF), start=1):
            part = OutgoingPart(
                (message.id, seq), code_source, "86" + message.recipient, body,
                data_coding=segmentation.data_coding, esm_class=segmentation.esm_class, registered_delivery=1, source_ton=source_ton,
            )  # fmt: skip
            status, smsc_id = recorded.get(seq, (None, None))
            if seq not in recorded:
                work.todo.append((part, _INSERT))
            elif status is None:
                work.todo.append((part, _RESEND))  # sent before a crash, its response never recorded
            elif status == ESME_ROK:
                work.accepted[seq] = smsc_id or ""
            elif status in RETRYABLE or status % 2**32 in self._temporary:  # (stored as a signed 32-bit integer)
                work.todo.append((part, _RETRY))
            elif work.refusal is None:
                work.refusal = f"运营商网关拒绝提交第 {seq}/{work.total} 条（{describe_status(status)}），已退款"
        return work

    def _prepare(self, now: datetime, mono: float, lines: list[LogEntry]) -> bool:
        """Commit the rows of the next parts, as many as the resend budget (the window) allows."""
        room = self.window - self._open
        if room <= 0 or self._stopping or not self._fresh:
            return False
        new, resend, retry = [], [], []
        expired = False
        self._granted = {}  # grants live for one turn (a turn that failed took none: its transaction was rolled back)
        over_rate: list[_Work] = []  # their account's rate is used up for now: they keep their place
        while room > 0 and self._fresh:
            work = self._fresh[0]
            if not work.todo or work.done:
                self._fresh.popleft()
                continue
            if work.live == 0 and work.valid_until <= now:  # (with parts accepted: refunded in full, as a refused part is)
                work.refusal = (
                    f"超过有效期仍未能提交全部 {work.total} 条（运营商已接收 {len(work.accepted)} 条），已退款"
                    if work.accepted
                    else "超过有效期仍未能提交给运营商，已退款"
                )
                work.todo.clear()
                self._fresh.popleft()
                self._touched[work.id] = work
                expired = True
                continue
            if not work.started:
                if not self._admit(work.account_id, mono, room):
                    over_rate.append(self._fresh.popleft())
                    continue
                work.started = True
            part, how = work.todo.popleft()
            message_id, seq = part.key  # type: ignore[misc]
            if how == _INSERT:
                new.append({"message_id": message_id, "seq": seq, "total": work.total, "resent": False})
            elif how == _RESEND:
                resend.append({"m": message_id, "q": seq})
                lines.append(self._entry(work, f"resent: part {seq}/{work.total}, no submit_sm_resp recorded before a restart"))
                self.stats.resent += 1
            else:
                retry.append({"m": message_id, "q": seq})
            self._ready.append((part, how))
            work.live += 1
            self._open += 1
            room -= 1
            if not work.todo:
                self._fresh.popleft()
        self._fresh.extendleft(reversed(over_rate))
        self._over_rate = len(over_rate)
        self._give_back()
        if new:
            _INSERT_PART.executemany(self._session, new)
        if resend:
            _FLAG_RESENT.executemany(self._session, resend)
        if retry:
            _CLEAR_THROTTLED.executemany(self._session, retry)
        return bool(new or resend or retry or expired)

    def _final_flush(self) -> None:
        """After the link closed: record the last responses, undo unsent preparations, release."""
        now = utcnow()
        lines: list[LogEntry] = []
        self._record_responses(now, lines)
        self._finish(now, lines)
        unsent, self._ready = list(self._ready), deque()
        self._unprepare(unsent)
        held = [w.id for w in self._works.values() if not w.done]
        if held:
            release(self._session, held, worker=self.worker)
        self._log(lines, now)
        self._commit()
        if self._lost:
            log.warning("dispatcher %s: %d parts without a response at shutdown: resent (flagged) next time", self.worker, len(self._lost))

    # --- receipts ---------------------------------------------------------------------------------

    def _receipt(self, receipt: Receipt, now: datetime, mono: float) -> None:
        """Record a receipt. One whose id is not recorded while parts are on the wire (this bind's,
        or any worker's) may have beaten its submit_sm_resp: the SMSC is asked to deliver it again
        (nothing acknowledged is held only in memory); after `receipt_grace`, or with nothing in
        flight, it is logged and counted as unknown, and acknowledged."""
        sure, guessed = receipt_id_keys(receipt.message_id, self.settings.receipt_id_format)
        if self._apply_receipt(receipt, now, sure):
            self.stats.receipts += 1
            self._early.pop(receipt.message_id, None)
            return
        first = self._early.setdefault(receipt.message_id, mono)
        # With parts on this bind's wire, or any worker's part without a recorded response: the
        # SMSC may deliver a receipt on any bind of the account (found by a review: an idle bind
        # took another worker's early receipt for unknown, and its message stayed submitted for
        # ever). Not when nothing is in flight anywhere: a receipt in the other base (`auto`) is
        # then read at once, and an unknown one is not bounced for the whole grace.
        if mono - first < self.settings.receipt_grace and (self._on_wire > 0 or self._unanswered_anywhere(mono)):
            if len(self._early) > 100_000:  # ids the SMSC stopped redelivering
                self._early.clear()
            raise RedeliverLater(f"receipt {receipt.message_id!r} before its submit_sm_resp: please deliver it again")
        self._early.pop(receipt.message_id, None)
        # Its own submit_sm_resp is no longer on its way: the id's other readings (hex/decimal).
        if guessed and self._apply_receipt(receipt, now, guessed):
            self.stats.receipts += 1
            return
        self.stats.receipts_unknown += 1
        log.warning(
            "dispatcher %s: receipt for unknown SMSC message id %r (stat %s): %s",
            self.worker,
            receipt.message_id,
            receipt.stat,
            receipt.raw[:200],
        )

    def _unanswered_anywhere(self, mono: float) -> bool:
        """Whether some worker has a part on the wire without a recorded response. A "yes" is kept
        for a second (it is asked only for receipts not found); a "no" is not kept: found by a
        review, a bind that had just found nothing in flight took the next receipt that beat its
        submit_sm_resp (another worker's part, sent a moment later) for unknown and acknowledged
        it, and its message stayed submitted for ever."""
        if self._unanswered and mono - self._unanswered_read < 1.0:
            return True
        self._unanswered = self._session.execute(_ANY_UNANSWERED).first() is not None
        self._unanswered_read = mono
        return self._unanswered

    def _apply_receipt(self, receipt: Receipt, now: datetime, keys: Sequence[str]) -> bool:
        """Record a receipt on its part (found under the first of `keys` that was stored) and
        settle the message once every part has a final one; False if no part has one of them."""
        stat = receipt.stat.upper()[:16]  # "" (a receipt that does not say) is no final state
        values = {"stat": stat, "err": receipt.err[:16] or None, "at": now}
        part = None
        for key in keys:
            if key and (part := _RECEIPTED.first(self._session, {**values, "key": key})) is not None:
                break
        if part is None:
            return False
        message_id, total, stat = part  # the part's stat now: its first final one, if it had one
        if total == 1:
            if self._holds_message:  # never wait for it holding a long message's row (see _on_deliveries)
                self._lock_message(message_id, now)
            status = message_status_of([stat])
        else:
            self._lock_message(message_id, now)
            self._holds_message = self._postgresql
            stats = dict(_PART_STATS.rows(self._session, {"mid": message_id}))
            status = message_status_of([stats.get(seq) for seq in range(1, total + 1)])
        carrier = reported_carrier(receipt.raw)
        if carrier is not None:
            self._carrier_reported(receipt, message_id, total, carrier)
        if status is not None:  # every part has a final receipt, so every part was accepted
            finished = {"mid": message_id, "b_status": status, "at": now, "b_carrier": carrier}
            if _FINISHED.rowcount(self._session, finished):
                self.stats.finished += 1
            else:
                current = _STATUS.scalar(self._session, {"mid": message_id})
                if current in CLAIMABLE:
                    raise _not_marked_yet(receipt, message_id)
                # PostgreSQL: the worker holding it may have committed the mark between the two
                # statements (each sees the latest commits): settle it now.
                if current in SENT and _FINISHED.rowcount(self._session, finished):
                    self.stats.finished += 1
        return True

    def _lock_message(self, message_id: int, now: datetime) -> None:
        """Lock the message's row; if another transaction has it, commit what the batch did so
        far and wait for it holding nothing (a waiter holding nothing is in no circle)."""
        if _LOCK_MESSAGE.scalar(self._session, {"mid": message_id}) is None:
            self._commit_so_far(now)  # (the part's receipt included)
            self._wait_for(lambda: _WAIT_FOR_MESSAGE.scalar(self._session, {"mid": message_id}), f"message {message_id}")

    def _wait_for(self, lock: Callable[[], object], what: str) -> None:
        """(PostgreSQL) Take a lock another transaction holds, waiting at most `LOCK_WAIT_SECONDS`,
        in a transaction that holds nothing yet (`_commit_so_far` came first); past that it is
        rolled back, nothing lost, and the delivery refused for the SMSC to deliver again.

        The link waits with it, so it waits so long once per delivery batch, and for a lock it
        gave up on, not again for LOCK_GIVEN_UP_SECONDS: then it only tries (1 ms). A review found
        a transaction left open holding ten long messages' rows stall the link 5 s per receipt,
        50 s per read, again at every redelivery."""
        mono = time.monotonic()
        quick = self._batch_gave_up or self._held_elsewhere.get(what, -math.inf) > mono
        timeout = sa.text("SELECT set_config('lock_timeout', :timeout, true)")
        self._session.execute(timeout, {"timeout": "1ms" if quick else f"{round(LOCK_WAIT_SECONDS * 1000)}ms"})
        try:
            lock()
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            self._session.rollback()
            self._holds_message = False
            self.stats.lock_waits_given_up += 1
            self._batch_gave_up = True
            if not quick:
                if len(self._held_elsewhere) > 10_000:
                    self._held_elsewhere.clear()
                self._held_elsewhere[what] = mono + LOCK_GIVEN_UP_SECONDS
            raise RedeliverLater(f"{what} held by another transaction: please deliver it again") from None
        self._held_elsewhere.pop(what, None)
        self._session.execute(timeout, {"timeout": "0"})  # (the session's own setting: none)

    def _carrier_reported(self, receipt: Receipt, message_id: int, total: int, carrier: str) -> None:
        """The first carrier an SMSC reports for a message wins over its prefix (number
        portability): its charge moves to that carrier's usage total of the day it was charged,
        if that day is today. Earlier days are left as they are: the nightly job books them
        (`book_usage`, days before today), and a move while it reads them would be booked twice."""
        row = self._session.execute(_CARRIER_OF, {"mid": message_id}).first()
        if row is None or row.reported_carrier is not None:
            return
        if row.status in CLAIMABLE and _ACCEPTED_PARTS.scalar(self._session, {"mid": message_id}) == total:
            raise _not_marked_yet(receipt, message_id)  # complete, its mark to come: the move needs it
        if message_id >= self._ported.get(row.recipient, (0, ""))[0]:  # its next messages start there (by _log, in number order)
            self._ported[row.recipient] = (message_id, carrier)
        if row.status not in SENT:
            return
        # Claimed by one guarded UPDATE (settled or not), so its charge moves once: a duplicate
        # receipt, or another bind's at the same moment (PostgreSQL: it waits for this row), finds
        # the carrier reported already.
        if not _CARRIER_REPORTED.rowcount(self._session, {"mid": message_id, "b_carrier": carrier}) or row.carrier == carrier:
            return
        if row.charge <= 0 or row.charge_kind != "usage" or row.charged_on is None:
            return
        day = row.charged_on
        if day != local_today():
            _usage_stays(message_id, carrier, day, row.carrier)
            return
        self._carrier_moves.append((message_id, row.account_id, day, row.carrier, carrier, row.charge))  # by _log

    # --- replies (MO) ------------------------------------------------------------------------------

    def _reply(self, mo: MobileOriginated, now: datetime) -> None:
        text: str | None = mo.text
        if mo.concat is not None:
            text = self._assemble(mo, now)
            if text is None:
                return
        self._store_reply(mo.source, mo.destination, text, now)

    def _assemble(self, mo: MobileOriginated, now: datetime) -> str | None:
        """Keep a part of a long reply (`ReplyFragment`, in the delivery's transaction); the whole
        reply once this part completes it, else None. A part delivered again (the same text) is
        kept once, and makes no second reply once its reply was stored."""
        assert mo.concat is not None
        reference, total, seq = mo.concat
        values = {"sender": mo.source[:24], "destination": mo.destination[:24], "reference": reference, "total": total}
        key = {f"b_{name}": value for name, value in values.items()}
        if self._postgresql:  # two binds' parts of one reply at once: the second waits for the first's, holding nothing
            name = {"name": "reply:{sender}:{destination}:{reference}:{total}".format(**values)}
            if not self._session.scalar(_TRY_NAME_LOCK, name):
                self._commit_so_far(now)
                self._wait_for(lambda: self._session.execute(_NAME_LOCK, name), f"long reply {name['name']}")
        row = {**values, "seq": seq, "content": mo.text, "received_at": now, "stored": False}
        insert = (pg_insert if self._postgresql else sqlite_insert)(_FRAGMENTS)
        self._session.execute(insert.on_conflict_do_nothing(), row)  # (on SQLite, the write lock first)
        held = {
            n: (content, stored)
            for n, content, stored in self._session.execute(
                sa.select(_FRAGMENTS.c.seq, _FRAGMENTS.c.content, _FRAGMENTS.c.stored).where(*_FRAGMENT_KEY), key
            )
        }
        if held[seq][0] != mo.text:
            # Another text under a part number already held: a new reply (handsets reuse the 8-bit
            # reference; some send 0 every time). What the earlier one left is stored first.
            self._session.execute(sa.delete(_FRAGMENTS).where(*_FRAGMENT_KEY), key)
            if not any(stored for _, stored in held.values()):
                self._store_reply(mo.source, mo.destination, "".join(held[n][0] for n in sorted(held)), now)
            self._session.execute(sa.insert(_FRAGMENTS), row)
            held = {seq: (mo.text, False)}
        if len(held) < total or any(stored for _, stored in held.values()):  # (stored: this part came again)
            return None
        self._session.execute(sa.update(_FRAGMENTS).where(*_FRAGMENT_KEY).values(stored=True), key)
        return "".join(held[n][0] for n in sorted(held))

    def _expire_mo_parts(self, now: datetime, mono: float) -> bool:
        """The fragments of replies whose first part came REPLY_PARTS_WAIT ago go; a reply still
        incomplete is stored as far as it came (each taken by one worker: DELETE … RETURNING)."""
        if mono < self._next_fragment_sweep:
            return False
        self._next_fragment_sweep = mono + REPLY_PARTS_SWEEP
        old = (
            sa.select(*_FRAGMENT_COLUMNS)
            .group_by(*_FRAGMENT_COLUMNS)
            .having(sa.func.min(_FRAGMENTS.c.received_at) < sa.bindparam("cutoff", type_=_FRAGMENTS.c.received_at.type))
        )
        rows = self._session.execute(
            sa.delete(_FRAGMENTS)
            .where(sa.tuple_(*_FRAGMENT_COLUMNS).in_(old))
            .returning(*_FRAGMENT_COLUMNS, _FRAGMENTS.c.seq, _FRAGMENTS.c.content, _FRAGMENTS.c.stored),
            {"cutoff": now - REPLY_PARTS_WAIT},
        ).all()
        replies: dict[tuple[str, str, int, int], dict[int, str]] = {}
        stored = set()
        for sender, destination, reference, total, seq, content, done in rows:
            replies.setdefault((sender, destination, reference, total), {})[seq] = content
            if done:
                stored.add((sender, destination, reference, total))
        for key, pieces in replies.items():
            if key not in stored:
                log.info(
                    "dispatcher %s: a long reply from %s came in part (%d of %d): stored as it is", self.worker, key[0], len(pieces), key[3]
                )
                self._store_reply(key[0], key[1], "".join(pieces[n] for n in sorted(pieces)), now)
        return bool(rows)

    def _store_reply(self, sender: str, destination: str, text: str, now: datetime) -> None:
        """Store a reply under the account its service code names, else, when it went to the shared
        source address (or an extension of it), the account without a code of its own that last
        sent to that number; TD/退订/… puts the number on that account's unsubscribe list. A reply
        to an address nobody sends from, or to the platform's notice address (or an extension of
        it), is kept under no account and unsubscribes the number from nobody."""
        reply = record_reply(
            self._session, sender=sender, destination=destination, content=text, received_at=now, settings=self._reply_settings,
            pending=self._cancelled, platform_source=self.settings.notice_source,
        )  # fmt: skip
        if reply.account_id is None and national_address(destination).startswith(self.settings.default_source):
            try:
                number = normalise_mobile(sender)
            except InvalidNumber:
                number = None
            if number is not None:
                last = self._session.scalar(_LAST_SENDER, {"number": number})
                if last is not None:
                    reply.account_id = last
                    if reply.unsubscribe:
                        add_unsubscribe(self._session, last, number, source="mo", pending=self._cancelled)
        if reply.unsubscribe and reply.account_id is not None:
            self.stats.unsubscribes += 1
            self._cancel_held(reply.account_id, reply.sender)
        self._session.flush()
        self._session.expunge(reply)

    def _unsubscribed(self, messages: Sequence[ClaimedMessage]) -> set[tuple[int, str]]:
        """(account, number) of the claimed messages whose number is on the account's unsubscribe list."""
        by_account: dict[int, set[str]] = {}
        for message in messages:
            by_account.setdefault(message.account_id, set()).add(message.recipient)
        return {
            (account_id, number)
            for account_id, numbers in by_account.items()
            for number in unsubscribed(self._session, account_id, numbers)
        }

    def _poll_unsubscribes(self, now: datetime) -> None:
        """Refund what this worker holds for numbers put on an unsubscribe list since it last looked."""
        since = (self._unsubscribes_since or now) - UNSUBSCRIBE_LAG
        for entry_id, account_id, number, made in _NEW_UNSUBSCRIBES.rows(self._session, {"since": since}):
            if entry_id not in self._unsubscribes_handled:
                self._unsubscribes_handled[entry_id] = made
                self._cancel_held(account_id, number)
        self._unsubscribes_since = now
        self._unsubscribes_handled = {k: made for k, made in self._unsubscribes_handled.items() if made >= since}

    def _cancel_held(self, account_id: int, number: str) -> None:
        """An unsubscribe reply: the messages to that number this worker holds and has not begun
        to send are refunded, not sent (`add_unsubscribe` cancels those still in the queue; a
        message with a part that may have gone out, before a crash included, is sent in full)."""
        for work in self._works.values():
            if work.account_id != account_id or work.recipient != number or work.done or work.refusal is not None or work.accepted:
                continue
            if work.notice:  # the platform's notice to the customer's own contact, not the customer's send
                continue
            waiting = [how for part, how in self._ready if part.key[0] == work.id]  # type: ignore[index]
            # Every live part still waits for the link (none on the wire), and no part was ever sent.
            untouched = len(waiting) == work.live and all(how == _INSERT for how in (*waiting, *(how for _, how in work.todo)))
            if untouched and len(work.todo) + work.live == work.total:
                work.refusal = UNSUBSCRIBED_REFUSAL
                self._touched[work.id] = work

    # --- housekeeping ------------------------------------------------------------------------------

    def _heartbeat(self, state: str = "running", problem: str | None = None) -> None:
        """Write this worker's row in `dispatch_workers`, in a transaction of its own between turns:
        alive, bound or since when not, the link's latest problem, its counters."""
        self._next_heartbeat = time.monotonic() + HEARTBEAT
        now = utcnow()
        link = self.link
        if link.bound:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        if problem is None and link.problems != self._problems_seen and link.problem:
            problem = link.problem
        self._problems_seen = link.problems
        config = link.config
        values: dict[str, Any] = {
            "host": socket.gethostname()[:128],
            "pid": os.getpid(),
            "smsc": f"{config.host}:{config.port} {config.system_id} ({config.bind_mode})"[:200],
            "state": state,
            "started_at": self._started_at,
            "seen_at": now,
            "bound": link.bound,
            "down_since": self._down_since,
            "rebinds": link.rebinds_in_a_row,
            "throttled_pauses": link.throttled_in_a_row,
            "held": sum(1 for work in self._works.values() if not work.done),
            "counters": {
                **asdict(self.stats),
                **{f"link_{k}": v for k, v in asdict(link.stats).items()},
                "refused_in_a_row": self._refused_in_a_row,
                "refused_texts": len(self._refused_texts),
                "last_refusal": self._last_refusal,
                "temporary_in_a_row": self._temporary_in_a_row,
                "last_temporary": self._last_temporary,
                "drops_in_a_row": self._drops_in_a_row,
            },
        }
        if problem is not None:  # an earlier problem stays shown until there is a newer one (a restart keeps its cause)
            values |= {"problem": problem[:2000], "problem_at": now}
        insert = (pg_insert if self._postgresql else sqlite_insert)(_WORKERS).values(name=self.worker, **values)
        self._session.execute(insert.on_conflict_do_update(index_elements=[_WORKERS.c.name], set_=values))
        self._commit()

    def _heartbeat_or_log(self) -> None:
        """The row while the worker runs: a failure to write it is logged, not the worker's end
        (the next turn finds out whether the database itself is failing)."""
        try:
            self._heartbeat()
        except Exception:
            self._session.rollback()
            log.warning("dispatcher %s: could not write its row in dispatch_workers", self.worker, exc_info=True)

    def _last_heartbeat(self) -> None:
        """The worker's row at its end: stopped, or failed and why (never hides the failure itself)."""
        failure = self._failure or self._ended_by
        try:
            self._session.rollback()
            if failure is None:
                self._heartbeat("stopped")
            elif isinstance(failure, LinkDownTooLong):  # not a failure of the worker: the link's problem stays shown
                self._heartbeat("stopped", str(failure))
            else:
                self._heartbeat("failed", f"worker failed: {type(failure).__name__}: {failure}")
        except Exception:  # the database may be what failed
            self._session.rollback()
            log.exception("dispatcher %s: could not record that it stopped", self.worker)

    def _report(self) -> None:
        mono = time.monotonic()
        if mono >= self._next_report:
            self._next_report = mono + 60.0
            log.info("dispatcher %s: %s (open parts %d, held messages %d)", self.worker, self.stats, self._open, len(self._works))


# =================================================================================================
# SMS notifications (issue #4) through the same queue
# =================================================================================================


def send_notification_sms(
    session: Session,
    note: Notification,
    *,
    signature: str = NOTICE_SIGNATURE,
    validity_hours: int = 48,
    source: str = DispatchSettings.notice_source,
) -> str:
    """Queue a notification as a free message (charge 0, charge_kind notice) of the customer's
    account, request source 'notice', for the dispatcher to send from the platform's own address
    `source` (SMSC_NOTICE_SOURCE, logged as such: the dispatcher sends it from its own setting), not
    the customer's service code nor the customers' shared address; the provider's 【signature】
    is added when the text has none. It is not among the customer's messages (`GET /messages`,
    the portal) and a reply to it unsubscribes nobody from the customer. Sending the same
    notification twice queues it once. The caller commits."""
    account = note.account if note.account is not None else session.get(EnterpriseAccount, note.account_id)
    if account is None:
        raise ValueError(f"SMS notification {note.key} has no account to send it from")
    table = default_prefix_table()
    number = normalise_mobile(note.recipient, table)
    # In a namespace of the platform's own (customers' client_refs may not start with it), and
    # found by its source too: a customer's request can neither stand in for a notice nor block it.
    client_ref = f"{NOTICE_CLIENT_REF}{note.id}"
    existing = session.scalar(
        sa.select(Message.id)
        .join(SendRequest, SendRequest.id == Message.request_id)
        .where(
            SendRequest.account_id == account.id,
            SendRequest.source == "notice",
            SendRequest.client_ref.in_([client_ref, f"notice-{note.id}"]),  # the name before 2026-12
        )
    )
    if existing is not None:
        return f"dispatcher: message {existing}"
    text = note.body.strip()
    if signature_of(text) is None:
        text = f"【{signature.strip('【】')}】{text}"
    segmentation = encode_segments(text, MAX_PARTS_IN_UDH)
    sub_account_id = session.scalar(
        sa.select(SubAccount.id).where(SubAccount.account_id == account.id).order_by(SubAccount.is_primary.desc(), SubAccount.id).limit(1)
    )
    if sub_account_id is None:
        raise ValueError(f"account {account.code} has no login to send from")
    now = utcnow()
    request = SendRequest(
        account_id=account.id, sub_account_id=sub_account_id, client_ref=client_ref,
        fingerprint=hashlib.sha256(f"{number}\n{text}".encode()).hexdigest(), source="notice", created_at=now,
        accepted_count=1, charged=0, http_status=202, response={"notification": note.key},
    )  # fmt: skip
    session.add(request)
    session.flush()
    message = Message(
        request_id=request.id, account_id=account.id, sub_account_id=sub_account_id, recipient=number,
        carrier=table.carrier_of(number), content=text, encoding=segmentation.encoding, segments=segmentation.parts,
        price_per_message=account.price_per_message, charge=0, charge_kind=NOTICE_CHARGE_KIND, status="queued", accepted_at=now, send_at=now,
        valid_until=now + timedelta(hours=validity_hours), updated_at=now, next_attempt_at=now,
    )  # fmt: skip
    session.add(message)
    session.flush()
    append_send_log(session, [LogEntry(account.code, source, number, text, "accepted: notice (free)", message.id)], at=now)
    return f"dispatcher: message {message.id}"


def notification_sender(config: Mapping[str, Any]) -> Callable[[Session, Notification], str]:
    """`send_notification_sms` with the configured signature and validity, for app.extensions."""
    signature = str(config.get("NOTICE_SMS_SIGNATURE") or NOTICE_SIGNATURE)
    validity = int(config.get("MESSAGE_VALIDITY_HOURS", 48))
    source = str(config.get("SMSC_NOTICE_SOURCE") or DispatchSettings.notice_source)

    def send(session: Session, note: Notification) -> str:
        return send_notification_sms(session, note, signature=signature, validity_hours=validity, source=source)

    return send


def run_worker(
    app: Any, link_config: LinkConfig, worker_name: str, stop: threading.Event, *, batch: int | None = None, restart_after: float = 5.0
) -> None:
    """The worker process: a Dispatcher until `stop`; after an unexpected error a fresh one takes
    over (the same recovery as after a crash: own leases back, unanswered parts resent, flagged)."""
    while not stop.is_set():
        try:
            Dispatcher(app, link_config, worker_name, batch).run(stop)  # connects first: the database may be down too
        except LinkDownTooLong as gave_back:  # its messages are back in the queue; the next binds again at once
            log.warning("%s; starting afresh", gave_back)
        except WorkerNameInUse as taken:  # (it takes over once that process stops)
            log.error("%s; trying again in %.0f s", taken, restart_after)
            stop.wait(restart_after)
        except ConfigError as wrong:  # a code on the notice address: it starts once that is put right
            log.error("dispatcher %s: %s; trying again in %.0f s", worker_name, wrong, restart_after)
            stop.wait(restart_after)
        except Exception:
            log.exception("dispatcher %s failed; starting again in %.0f s", worker_name, restart_after)
            stop.wait(restart_after)


__all__: Sequence[str] = [
    "DispatchSettings",
    "DispatchStats",
    "Dispatcher",
    "LeaseLost",
    "LinkDownTooLong",
    "WorkerNameInUse",
    "message_status_of",
    "notification_sender",
    "reported_carrier",
    "run_worker",
    "send_notification_sms",
]
