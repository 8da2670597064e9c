"""Messages on their way out: API keys, send requests, the durable queue of charged messages and
their SMPP parts, forbidden keywords, unsubscribes, replies (MO) and the hash-chained send log.

The queue contract for the dispatcher worker (see `backoffice.services.message_queue`):
a message is claimable when `status in CLAIMABLE` and `next_attempt_at <= now` and it is not
leased (`claimed_by IS NULL` or `claimed_at` older than the lease). The worker records each
part it submits in `message_parts` (one row per SMS part, `seq` 1..`total`); a part whose
`submit_status` is not NULL had its submit_sm_resp recorded and is never sent again.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.clock import utcnow
from backoffice.models.accounts import EnterpriseAccount, SubAccount
from backoffice.models.base import Base, Money, UTCDateTime

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for the big tables.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# queued / scheduled: charged, waiting for the worker (scheduled = held until send_at);
# submitted: every part has its submit_sm_resp; delivered / undeliverable / expired / rejected:
# the delivery receipt's final state (charged); refused: content refused at intake, never sent
# (the contracts' fee may have been charged); refunded: the SMSC refused it on submit or its
# validity ran out before it could be submitted, or it was not sent at all (its account stopped
# sending, STOPPED_SENDING; a TD reply), and the charge was given back;
# unsubscribed: the recipient unsubscribed, not sent and not charged.
MESSAGE_STATUSES = {
    "queued": "排队中",
    "scheduled": "定时发送",
    "submitted": "已提交运营商",
    "delivered": "已送达",
    "undeliverable": "无法送达",
    "expired": "已过期",
    "rejected": "被运营商拒绝",
    "refused": "内容违规，拒发",
    "refunded": "发送失败，已退款",
    "unsubscribed": "对方已退订，未发送",
}
#: Why a waiting message of an account that may not send (suspended, blacklisted, closed, not yet
#: paid) was refunded without being sent: its `error`, by what stopped the account. Written by
#: `services.message_queue` (the dispatcher at the claim, the closing at once).
STOPPED_SENDING = {
    "suspended": "账户已暂停发送：未发送，已退款",
    "blacklisted": "账户已列入黑名单：未发送，已退款",
    "closed": "账户已关闭：未发送，费用退回后与余额一并不予退还",
    "awaiting_payment": "账户未开通（待付款）：未发送，已退款",
}
#: What such a message's status reads instead of 发送失败，已退款: nothing was attempted (a customer
#: told 发送失败 looked for a fault with the number or the carrier).
STOPPED_STATUS_NAMES = {
    "suspended": "未发送，已退款（账户已暂停发送）",
    "blacklisted": "未发送，已退款（账户已列入黑名单）",
    "closed": "未发送（账户已关闭，费用随余额不予退还）",
    "awaiting_payment": "未发送，已退款（账户未开通，待付款）",
}
# Recognised by the words before "：", so a reason worded otherwise before is still recognised
# (a closed account's read "账户已关闭：未发送，已退款" until 3b2ce53); no other refund's reason
# starts with them (the dispatcher's speak of the carrier's gateway, the validity, a TD reply).
_STOPPED_PREFIXES = tuple((why, text.partition("：")[0] + "：") for why, text in STOPPED_SENDING.items())
#: Why a message to a number that unsubscribed (a TD reply) while it waited was refunded unsent:
#: the queue's cancel at the reply (`messaging.add_unsubscribe`), and the dispatcher's for one it
#: held then. Its status reads UNSUBSCRIBED_STATUS_NAME, not 发送失败.
UNSUBSCRIBED_IN_QUEUE = "收件人已回复退订：未发送，已退款"
UNSUBSCRIBED_REFUSAL = "对方已回复退订，未发送，已退款"
UNSUBSCRIBED_STATUS_NAME = "未发送，已退款（对方已回复退订）"
#: Why a scheduled message the customer took back before its time (portal 发送记录, POST
#: /api/v1/requests/<id>/cancel) was refunded unsent; its status reads CANCELLED_STATUS_NAME.
CANCELLED_BY_CUSTOMER = "客户已取消定时发送：未发送，已退款"
CANCELLED_STATUS_NAME = "已取消，已退款"
CLAIMABLE = ("queued", "scheduled")
SENT = ("submitted", "delivered", "undeliverable", "expired", "rejected")
UNSUBSCRIBE_SOURCES = ("mo", "text", "admin")


class ApiKey(Base):
    """A bearer key of a sub-account; only its SHA-256 is stored, plus a prefix to recognise it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    sub_account_id: Mapped[int] = mapped_column(sa.ForeignKey("sub_accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    label: Mapped[str] = mapped_column(sa.String(80), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(80))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    sub_account: Mapped[SubAccount] = relationship()


class SendRequest(Base):
    """One submission (API call, portal form or CSV upload) and the answer it got, so a retry
    with the same `client_ref` gets that answer again instead of sending and charging twice."""

    __tablename__ = "send_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"))
    sub_account_id: Mapped[int] = mapped_column(sa.ForeignKey("sub_accounts.id"))
    client_ref: Mapped[str | None] = mapped_column(sa.String(64))
    fingerprint: Mapped[str] = mapped_column(sa.String(64))  # SHA-256 of recipients + content + send_at
    source: Mapped[str] = mapped_column(sa.String(8))  # api / portal / csv
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Messages taken on (queued, scheduled or refused): the left side of
    # accepted = sent + queued + refused + refunded, counted apart from the messages' statuses.
    accepted_count: Mapped[int] = mapped_column(default=0)
    charged: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    http_status: Mapped[int] = mapped_column(default=202)
    response: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)

    __table_args__ = (
        sa.UniqueConstraint("account_id", "client_ref", name="uq_send_requests_client_ref"),
        sa.Index("ix_send_requests_account_id_id", "account_id", "id"),
    )


#: The charge kind of the platform's own free notices to a customer's contact (invoices, renewal,
#: expiry), kept as messages of the customer's account for the dispatcher: not the customer's
#: sends, so left out of the customer's lists and of replies' attribution.
NOTICE_CHARGE_KIND = "notice"


class Message(Base):
    """One SMS to one recipient, charged at acceptance; the durable queue the worker drains."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("send_requests.id"), index=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"))
    sub_account_id: Mapped[int] = mapped_column(sa.ForeignKey("sub_accounts.id"))
    recipient: Mapped[str] = mapped_column(sa.String(11))  # normalised national number
    carrier: Mapped[str] = mapped_column(sa.String(4))  # cmcc / cucc / ctcc / cbn, from the prefix
    reported_carrier: Mapped[str | None] = mapped_column(sa.String(4))  # as the SMSC reports it (portability)
    content: Mapped[str] = mapped_column(sa.Text)  # as sent, signature included
    encoding: Mapped[str] = mapped_column(sa.String(8))  # gsm7 / ucs2
    segments: Mapped[int]
    price_per_message: Mapped[Decimal] = mapped_column(Money)  # the account's price at acceptance
    charge: Mapped[Decimal] = mapped_column(Money)  # segments x price, or 0 when not charged
    charge_kind: Mapped[str | None] = mapped_column(sa.String(24))  # usage / refused_content_fee / notice (NOTICE_CHARGE_KIND)
    charged_on: Mapped[date | None]  # business day (Beijing) of the charge
    status: Mapped[str] = mapped_column(sa.String(16))
    duplicate: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(sa.String(300))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    send_at: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)  # last status change: status reports
    # Worker fields: claim (lease), retry schedule, submission and final state.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    parts: Mapped[list[MessagePart]] = relationship(back_populates="message", order_by="MessagePart.seq")

    __table_args__ = (
        sa.Index("ix_messages_queue", "status", "next_attempt_at"),
        sa.Index("ix_messages_reports", "account_id", "updated_at", "id"),
        # The recipient first: an account's messages to a number (the same-content check since a
        # time, an unsubscribe's refunds) and every account's, for the account that last sent to
        # the number a reply comes from.
        sa.Index("ix_messages_recipient_account", "recipient", "account_id", "accepted_at"),
        # The portal's pages of an account's (or a 子号's) messages, newest first: one index walk
        # of a page, not a sort of every message the account ever sent.
        sa.Index("ix_messages_account_id_id", "account_id", "id"),
        sa.Index("ix_messages_sub_account_id_id", "sub_account_id", "id"),
        sa.CheckConstraint("charge >= 0 and segments >= 1", name="charge_segments"),
        sa.CheckConstraint(f"status in ({', '.join(repr(s) for s in MESSAGE_STATUSES)})", name="status"),
    )

    @property
    def stopped_reason(self) -> str | None:
        """Why the message was refunded unsent, when its account may not send (a key of
        STOPPED_SENDING: suspended, blacklisted, closed, awaiting_payment); None for every other
        message, a refund after the SMSC refused it or its validity ran out included."""
        if self.status != "refunded" or not self.error:
            return None
        return next((why for why, prefix in _STOPPED_PREFIXES if self.error.startswith(prefix)), None)

    @property
    def status_name(self) -> str:
        stopped = self.stopped_reason
        if stopped:
            return STOPPED_STATUS_NAMES[stopped]
        if self.status == "refunded" and self.error in (UNSUBSCRIBED_IN_QUEUE, UNSUBSCRIBED_REFUSAL):
            return UNSUBSCRIBED_STATUS_NAME
        if self.status == "refunded" and self.error == CANCELLED_BY_CUSTOMER:
            return CANCELLED_STATUS_NAME
        return MESSAGE_STATUSES.get(self.status, self.status)

    @property
    def refunded(self) -> Decimal:
        """What was given back: a refunded message's whole charge (`charge` stays what was taken
        at acceptance, so the books' usage and refund lines both still read from it)."""
        return self.charge if self.status == "refunded" else Decimal(0)

    @property
    def net_charge(self) -> Decimal:
        """What the message costs the customer in the end: its charge less what was given back."""
        return self.charge - self.refunded


class MessagePart(Base):
    """One SMS part as submitted over SMPP, with its submit_sm_resp and delivery receipt."""

    __tablename__ = "message_parts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(sa.ForeignKey("messages.id"))
    seq: Mapped[int]  # 1..total
    total: Mapped[int]
    smsc_message_id: Mapped[str | None] = mapped_column(sa.String(64))  # lower-case as the SMSC gave it
    submit_status: Mapped[int | None]  # command_status of submit_sm_resp; NULL = no response recorded
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    receipt_stat: Mapped[str | None] = mapped_column(sa.String(16))  # DELIVRD / UNDELIV / EXPIRED / REJECTD ...
    receipt_err: Mapped[str | None] = mapped_column(sa.String(16))
    receipt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resent: Mapped[bool] = mapped_column(default=False)  # sent again after a crash without a recorded response

    message: Mapped[Message] = relationship(back_populates="parts")

    __table_args__ = (
        sa.UniqueConstraint("message_id", "seq", name="uq_message_parts_message_seq"),
        # A receipt finds the latest part with its SMSC id (ids are reused after a while):
        # max(id) for one smsc_message_id is the index's last entry for it. With the id column
        # alone, PostgreSQL walked the primary key backwards through every newer part instead.
        sa.Index("ix_message_parts_smsc_message_id_id", "smsc_message_id", "id"),
        # Parts whose submit_sm_resp is not recorded (prepared, on the wire, or left so by a
        # refunded message): the few rows the workers' look for anything in flight reads
        # (`dispatcher._ANY_UNANSWERED`), not every part an SMSC ever refused.
        sa.Index(
            "ix_message_parts_unanswered",
            "message_id",
            sqlite_where=sa.text("submit_status IS NULL"),
            postgresql_where=sa.text("submit_status IS NULL"),
        ),
    )


class ForbiddenKeyword(Base):
    """The administrators' list of forbidden words (003 §3.3). Every change to it counts in
    `forbidden_keywords_version` (triggers), which intake reads to know its compiled list is current."""

    __tablename__ = "forbidden_keywords"

    id: Mapped[int] = mapped_column(primary_key=True)
    word: Mapped[str] = mapped_column(sa.String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(80))

    __table_args__ = {"sqlite_autoincrement": True}


class KeywordListVersion(Base):
    """One row: how many changes the forbidden keyword list has had, counted by the database's own
    triggers on `forbidden_keywords` (whoever makes the change). Intake reads it with the sender
    to know whether its compiled matcher is current: found by a benchmark, the COUNT over the list
    that did this before cost every request 0.4 ms at 10,000 keywords, a quarter of a single
    request's time."""

    __tablename__ = "forbidden_keywords_version"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    changes: Mapped[int] = mapped_column(sa.BigInteger, default=0)


_BUMP_SQLITE = (
    "INSERT INTO forbidden_keywords_version (id, changes) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET changes = forbidden_keywords_version.changes + 1"
)
KEYWORDS_VERSION_TRIGGERS: dict[str, tuple[str, ...]] = {
    "sqlite": tuple(
        f"CREATE TRIGGER forbidden_keywords_{op.lower()}_counted AFTER {op} ON forbidden_keywords BEGIN {_BUMP_SQLITE}; END"
        for op in ("INSERT", "UPDATE", "DELETE")
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION forbidden_keywords_counted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO forbidden_keywords_version (id, changes) VALUES (1, 1) "
        "ON CONFLICT (id) DO UPDATE SET changes = forbidden_keywords_version.changes + 1; RETURN NULL; END $$",
        "CREATE TRIGGER forbidden_keywords_counted AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON forbidden_keywords "
        "FOR EACH STATEMENT EXECUTE FUNCTION forbidden_keywords_counted()",
    ),
}
KEYWORDS_VERSION_UNTRIGGERS: dict[str, tuple[str, ...]] = {
    "sqlite": tuple(f"DROP TRIGGER IF EXISTS forbidden_keywords_{op}_counted" for op in ("insert", "update", "delete")),
    "postgresql": (
        "DROP TRIGGER IF EXISTS forbidden_keywords_counted ON forbidden_keywords",
        "DROP FUNCTION IF EXISTS forbidden_keywords_counted()",
    ),
}
for _dialect, _statements in KEYWORDS_VERSION_TRIGGERS.items():  # with the list's table, as its migration makes them
    for _statement in _statements:
        sa.event.listen(ForbiddenKeyword.__table__, "after_create", sa.DDL(_statement).execute_if(dialect=_dialect))
sa.event.listen(
    ForbiddenKeyword.__table__, "after_drop", sa.DDL(KEYWORDS_VERSION_UNTRIGGERS["postgresql"][-1]).execute_if(dialect="postgresql")
)


class Unsubscribe(Base):
    """A number that asked one account to stop sending to it (TD / 退订 reply, text, administrator)."""

    __tablename__ = "unsubscribes"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"))
    number: Mapped[str] = mapped_column(sa.String(11))
    source: Mapped[str] = mapped_column(sa.String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("account_id", "number", name="uq_unsubscribes_account_number"),
        sa.CheckConstraint("source in ('mo', 'text', 'admin')", name="source"),
        sa.Index("ix_unsubscribes_created_at", "created_at"),  # the dispatcher workers' look for new entries
    )


class MobileOriginated(Base):
    """A reply (MO) from a handset, kept for the customer to read."""

    __tablename__ = "mobile_originated"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int | None] = mapped_column(sa.ForeignKey("enterprise_accounts.id"))
    sender: Mapped[str] = mapped_column(sa.String(24))  # normalised when it is a mainland mobile
    destination: Mapped[str] = mapped_column(sa.String(24))  # the service code it was sent to
    content: Mapped[str] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    smsc_message_id: Mapped[str | None] = mapped_column(sa.String(64))
    unsubscribe: Mapped[bool] = mapped_column(default=False)

    account: Mapped[EnterpriseAccount | None] = relationship()

    __table_args__ = (
        sa.Index("ix_mobile_originated_account_id_id", "account_id", "id"),
        # GET /api/v1/replies pages by (received_at, id) within the account (found by a review:
        # every poll sorted all of the account's replies)
        sa.Index("ix_mobile_originated_account_received", "account_id", "received_at", "id"),
    )


class ReplyFragment(Base):
    """A part of a long reply (concatenated MO) while the rest has not come: kept here, not in a
    worker's memory, so a restart loses none and the parts of one reply that come on different
    binds meet. The part that completes a reply stores it (`MobileOriginated`) and marks its
    fragments `stored`, so a part the SMSC delivers again is not taken for a new reply; a while
    after a reply's first part, its fragments go, and a reply still incomplete is stored as far as
    it came."""

    __tablename__ = "reply_fragments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sender: Mapped[str] = mapped_column(sa.String(24))
    destination: Mapped[str] = mapped_column(sa.String(24))
    reference: Mapped[int] = mapped_column(sa.Integer)
    total: Mapped[int] = mapped_column(sa.SmallInteger)
    seq: Mapped[int] = mapped_column(sa.SmallInteger)
    content: Mapped[str] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    stored: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (sa.UniqueConstraint("sender", "destination", "reference", "total", "seq", name="uq_reply_fragments_part"),)


class SendLog(Base):
    """The send log for the authorities (000 §6(6)): append-only and hash-chained; row `seq`
    carries SHA-256(previous hash + its own canonical content)."""

    __tablename__ = "send_log"

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    account_code: Mapped[str] = mapped_column(sa.String(32), index=True)
    service_code: Mapped[str | None] = mapped_column(sa.String(32))
    recipient: Mapped[str] = mapped_column(sa.String(24))
    content: Mapped[str] = mapped_column(sa.Text)
    result: Mapped[str] = mapped_column(sa.String(300))
    message_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


#: The law's minimum (000 §6(6)): the database refuses to delete a send log row younger than this,
#: by its own clock, whatever the application's setting (SEND_LOG_KEEP_MONTHS, which may be more).
#: Written out as "6 months" in the triggers below (a test holds them together).
KEEP_MONTHS_AT_LEAST = 6
#: Six calendar months before now (UTC) in SQLite, capped at the month's end as PostgreSQL's
#: interval and `send_log.keep_from` are: SQLite's own '-6 months' rolls 31 August over to 3 March
#: (found by a review: the guard was three days looser there).
SQLITE_SIX_MONTHS_AGO = "min(datetime('now', '-6 months'), date('now', 'start of month', '-5 months', '-1 day') || ' ' || time('now'))"

# The database itself refuses to change or remove a send log row (invariant 6: append-only),
# whoever the client, except a row both recorded as archived in `send_log_archives` (whose own
# trigger takes only the next part of the log, six months old: `dispatch archive-log`) and six
# months old by the database's clock; the hash chain then only has to reveal what bypasses the
# database (a restored file, a dropped trigger). Created with the table by `create_all` (tests) and by the
# migration from these same statements. SQLite's DROP TABLE fires no trigger, so a batch
# migration that rebuilds send_log must create them again.
SEND_LOG_GUARD: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "CREATE TRIGGER send_log_no_update BEFORE UPDATE ON send_log BEGIN SELECT RAISE(ABORT, 'send_log is append-only'); END",
        "CREATE TRIGGER send_log_no_delete BEFORE DELETE ON send_log "  # noqa: S608 (constants only)
        "WHEN OLD.seq > (SELECT COALESCE(MAX(last_seq), 0) FROM send_log_archives) "
        "OR OLD.logged_at >= " + SQLITE_SIX_MONTHS_AGO + " "
        "BEGIN SELECT RAISE(ABORT, 'send_log is append-only'); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION send_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'DELETE' AND OLD.seq <= (SELECT COALESCE(MAX(last_seq), 0) FROM send_log_archives) "
        "AND OLD.logged_at < (now() AT TIME ZONE 'UTC') - interval '6 months' THEN RETURN OLD; END IF; "
        "RAISE EXCEPTION 'send_log is append-only' USING ERRCODE = 'restrict_violation'; END $$",
        "CREATE TRIGGER send_log_no_update_or_delete BEFORE UPDATE OR DELETE ON send_log "
        "FOR EACH ROW EXECUTE FUNCTION send_log_append_only()",
        "CREATE TRIGGER send_log_no_truncate BEFORE TRUNCATE ON send_log FOR EACH STATEMENT EXECUTE FUNCTION send_log_append_only()",
    ),
}
SEND_LOG_UNGUARD: dict[str, tuple[str, ...]] = {
    "sqlite": ("DROP TRIGGER IF EXISTS send_log_no_update", "DROP TRIGGER IF EXISTS send_log_no_delete"),
    "postgresql": (
        "DROP TRIGGER IF EXISTS send_log_no_update_or_delete ON send_log",
        "DROP TRIGGER IF EXISTS send_log_no_truncate ON send_log",
        "DROP FUNCTION IF EXISTS send_log_append_only()",
    ),
}


def _guarded_by(table: sa.Table, guard: dict[str, tuple[str, ...]], unguard: dict[str, tuple[str, ...]]) -> None:
    """`create_all` makes a table's triggers as its migration does; `drop_all` takes away the
    PostgreSQL trigger function too (the last statement of `unguard`: it outlives the table)."""
    for dialect, statements in guard.items():
        for statement in statements:
            sa.event.listen(table, "after_create", sa.DDL(statement).execute_if(dialect=dialect))
    sa.event.listen(table, "after_drop", sa.DDL(unguard["postgresql"][-1]).execute_if(dialect="postgresql"))


_guarded_by(SendLog.__table__, SEND_LOG_GUARD, SEND_LOG_UNGUARD)


# SQLite's INSERT OR REPLACE removes the row a new one clashes with without firing its DELETE
# triggers (recursive triggers are off), and fires no UPDATE trigger: found by a review, a row of
# any age could be rewritten, the head moved back, an archive record removed. These refuse an
# insert whose key is taken (the head's ignores it: its first append inserts it if absent).
# PostgreSQL's ON CONFLICT DO UPDATE fires the UPDATE triggers.
SQLITE_NO_REPLACE: tuple[str, ...] = (
    "CREATE TRIGGER send_log_no_replace BEFORE INSERT ON send_log WHEN EXISTS (SELECT 1 FROM send_log WHERE seq = NEW.seq) "
    "BEGIN SELECT RAISE(ABORT, 'send_log is append-only'); END",
    "CREATE TRIGGER send_log_head_no_replace BEFORE INSERT ON send_log_head "
    "WHEN EXISTS (SELECT 1 FROM send_log_head WHERE id = NEW.id) BEGIN SELECT RAISE(IGNORE); END",
    "CREATE TRIGGER send_log_archives_no_replace BEFORE INSERT ON send_log_archives WHEN EXISTS "
    "(SELECT 1 FROM send_log_archives WHERE id = NEW.id OR first_seq = NEW.first_seq OR last_seq = NEW.last_seq) "
    "BEGIN SELECT RAISE(ABORT, 'send_log_archives is append-only'); END",
)
SQLITE_NO_REPLACE_UNDO: tuple[str, ...] = tuple(
    f"DROP TRIGGER IF EXISTS {name}" for name in ("send_log_no_replace", "send_log_head_no_replace", "send_log_archives_no_replace")
)


class SendLogHead(Base):
    """The one row that names the end of the send log's chain; appenders lock it in turn."""

    __tablename__ = "send_log_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(sa.String(64))


# The head row only moves forward: deleting it (the log's length with it) would hide rows cut off
# the end, and the next append would reuse their numbers and fail every send.
SEND_LOG_HEAD_GUARD: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "CREATE TRIGGER send_log_head_no_delete BEFORE DELETE ON send_log_head "
        "BEGIN SELECT RAISE(ABORT, 'send_log_head only moves forward'); END",
        "CREATE TRIGGER send_log_head_forward BEFORE UPDATE ON send_log_head "
        "WHEN NEW.last_seq < OLD.last_seq OR NEW.id <> OLD.id BEGIN SELECT RAISE(ABORT, 'send_log_head only moves forward'); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION send_log_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP IN ('DELETE', 'TRUNCATE') THEN "
        "RAISE EXCEPTION 'send_log_head only moves forward' USING ERRCODE = 'restrict_violation'; END IF; "
        "IF NEW.last_seq < OLD.last_seq OR NEW.id <> OLD.id THEN "
        "RAISE EXCEPTION 'send_log_head only moves forward' USING ERRCODE = 'restrict_violation'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER send_log_head_forward BEFORE UPDATE OR DELETE ON send_log_head "
        "FOR EACH ROW EXECUTE FUNCTION send_log_head_forward()",
        "CREATE TRIGGER send_log_head_no_truncate BEFORE TRUNCATE ON send_log_head "
        "FOR EACH STATEMENT EXECUTE FUNCTION send_log_head_forward()",
    ),
}
SEND_LOG_HEAD_UNGUARD: dict[str, tuple[str, ...]] = {
    "sqlite": ("DROP TRIGGER IF EXISTS send_log_head_no_delete", "DROP TRIGGER IF EXISTS send_log_head_forward"),
    "postgresql": (
        "DROP TRIGGER IF EXISTS send_log_head_forward ON send_log_head",
        "DROP TRIGGER IF EXISTS send_log_head_no_truncate ON send_log_head",
        "DROP FUNCTION IF EXISTS send_log_head_forward()",
    ),
}
_guarded_by(SendLogHead.__table__, SEND_LOG_HEAD_GUARD, SEND_LOG_HEAD_UNGUARD)


class SendLogArchive(Base):
    """Rows first_seq..last_seq of the send log, moved to a file (`dispatch archive-log`): the file's
    name and SHA-256, and the chain's hashes at both ends, so the log left in the database goes
    on verifying from `last_hash`, and the file can be verified on its own. Rows are only
    added: each archive starts where the one before ended (one chain, from genesis)."""

    __tablename__ = "send_log_archives"

    id: Mapped[int] = mapped_column(primary_key=True)
    first_seq: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    first_prev_hash: Mapped[str] = mapped_column(sa.String(64))
    last_hash: Mapped[str] = mapped_column(sa.String(64))
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    # The earliest and latest times among its rows: times are taken before the log's lock, so a later
    # row can carry an earlier time than the one before it (found by a review: an export ending at
    # an archive's first row's day left out an earlier-timed row of that archive).
    earliest_logged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    latest_logged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    before_day: Mapped[date]  # the rows logged before this day (Beijing) were archived
    file_name: Mapped[str] = mapped_column(sa.String(200))
    file_sha256: Mapped[str] = mapped_column(sa.String(64))
    archived_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived_by: Mapped[str] = mapped_column(sa.String(100))

    __table_args__ = (sa.CheckConstraint("first_seq >= 1 AND last_seq >= first_seq", name="seq_range"),)


# An archive's record is what lets its rows go from send_log and where the chain now starts:
# never changed or removed.
SEND_LOG_ARCHIVES_GUARD: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "CREATE TRIGGER send_log_archives_no_update BEFORE UPDATE ON send_log_archives "
        "BEGIN SELECT RAISE(ABORT, 'send_log_archives is append-only'); END",
        "CREATE TRIGGER send_log_archives_no_delete BEFORE DELETE ON send_log_archives "
        "BEGIN SELECT RAISE(ABORT, 'send_log_archives is append-only'); END",
        # Found by a review: without it, one INSERT of a record naming a far seq let every row go.
        "CREATE TRIGGER send_log_archives_next_part BEFORE INSERT ON send_log_archives "  # noqa: S608 (constants only)
        "WHEN NEW.first_seq <> (SELECT COALESCE(MAX(last_seq), 0) FROM send_log_archives) + 1 "
        "OR NEW.first_prev_hash <> COALESCE((SELECT last_hash FROM send_log_archives ORDER BY last_seq DESC LIMIT 1), "
        "'0000000000000000000000000000000000000000000000000000000000000000') "
        "OR NOT EXISTS (SELECT 1 FROM send_log WHERE seq = NEW.last_seq AND hash = NEW.last_hash "
        "AND logged_at < " + SQLITE_SIX_MONTHS_AGO + ") "
        "BEGIN SELECT RAISE(ABORT, 'send_log_archives: not the next part of the log six months old'); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION send_log_archives_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'INSERT' THEN "
        "IF NEW.first_seq = (SELECT COALESCE(MAX(last_seq), 0) FROM send_log_archives) + 1 "
        "AND NEW.first_prev_hash = COALESCE((SELECT last_hash FROM send_log_archives ORDER BY last_seq DESC LIMIT 1), "
        "'0000000000000000000000000000000000000000000000000000000000000000') "
        "AND EXISTS (SELECT 1 FROM send_log WHERE seq = NEW.last_seq AND hash = NEW.last_hash "
        "AND logged_at < (now() AT TIME ZONE 'UTC') - interval '6 months') THEN RETURN NEW; END IF; "
        "RAISE EXCEPTION 'send_log_archives: not the next part of the log six months old' USING ERRCODE = 'restrict_violation'; "
        "END IF; "
        "RAISE EXCEPTION 'send_log_archives is append-only' USING ERRCODE = 'restrict_violation'; END $$",
        "CREATE TRIGGER send_log_archives_guard BEFORE INSERT OR UPDATE OR DELETE ON send_log_archives "
        "FOR EACH ROW EXECUTE FUNCTION send_log_archives_append_only()",
        "CREATE TRIGGER send_log_archives_no_truncate BEFORE TRUNCATE ON send_log_archives "
        "FOR EACH STATEMENT EXECUTE FUNCTION send_log_archives_append_only()",
    ),
}
SEND_LOG_ARCHIVES_UNGUARD: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "DROP TRIGGER IF EXISTS send_log_archives_no_update",
        "DROP TRIGGER IF EXISTS send_log_archives_no_delete",
        "DROP TRIGGER IF EXISTS send_log_archives_next_part",
    ),
    "postgresql": (
        "DROP TRIGGER IF EXISTS send_log_archives_guard ON send_log_archives",
        "DROP TRIGGER IF EXISTS send_log_archives_no_truncate ON send_log_archives",
        "DROP FUNCTION IF EXISTS send_log_archives_append_only()",
    ),
}
_guarded_by(SendLogArchive.__table__, SEND_LOG_ARCHIVES_GUARD, SEND_LOG_ARCHIVES_UNGUARD)
for _table, _statement in zip((SendLog.__table__, SendLogHead.__table__, SendLogArchive.__table__), SQLITE_NO_REPLACE, strict=True):
    sa.event.listen(_table, "after_create", sa.DDL(_statement).execute_if(dialect="sqlite"))


class PortedNumber(Base):
    """A number an SMSC reported on another carrier than its prefix names (number portability):
    intake prices, counts and checks the contract's networks by this carrier from then on."""

    __tablename__ = "ported_numbers"

    number: Mapped[str] = mapped_column(sa.String(11), primary_key=True)
    carrier: Mapped[str] = mapped_column(sa.String(8))  # the prefix's own after it was ported back
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message_id: Mapped[int] = mapped_column(sa.BigInteger)  # the message reported on: a later receipt of an older one changes nothing


class DispatchRate(Base):
    """Per-account send rate state shared by every dispatcher worker: the GCRA's theoretical
    arrival time of the account's next message start (microseconds since the epoch), and the
    number of starts the last grant gave (read back by the granting UPDATE's RETURNING)."""

    __tablename__ = "dispatch_rates"

    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"), primary_key=True, autoincrement=False)
    tat_us: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    granted: Mapped[int] = mapped_column(default=0)


class SendRate(Base):
    """Per-account rate limiter state shared by every web process: the GCRA's theoretical
    arrival time, in microseconds since the epoch."""

    __tablename__ = "send_rates"

    account_id: Mapped[int] = mapped_column(sa.ForeignKey("enterprise_accounts.id"), primary_key=True, autoincrement=False)
    tat_us: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class DispatchWorker(Base):
    """A dispatcher worker as it last said it was (`Dispatcher._heartbeat`, every few seconds):
    what the operations page and `dispatch status` read to tell a stopped worker, a link that
    stays down or an SMSC that keeps refusing from a working one."""

    __tablename__ = "dispatch_workers"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(128))
    pid: Mapped[int] = mapped_column()
    smsc: Mapped[str] = mapped_column(sa.String(200))  # host:port, system id, bind mode
    state: Mapped[str] = mapped_column(sa.String(16))  # running / stopped / failed
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    bound: Mapped[bool] = mapped_column(default=False)
    down_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # not bound since (None while bound)
    problem: Mapped[str | None] = mapped_column(sa.Text)  # the latest thing that went wrong with the link or the worker
    problem_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rebinds: Mapped[int] = mapped_column(default=0)  # sessions in a row the SMSC took for unbound
    throttled_pauses: Mapped[int] = mapped_column(default=0)  # throttled pauses in a row
    held: Mapped[int] = mapped_column(default=0)  # messages the worker holds (claimed, not yet submitted)
    # DispatchStats and the link's counters since it started; refused_in_a_row, last_refusal and
    # drops_in_a_row since the SMSC last accepted a part
    counters: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
