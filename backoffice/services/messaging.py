"""Intake of messages: from a request (API, portal form, CSV upload) to charged messages waiting
in the durable queue, with every check the contracts and the issue ask for, each refusal with a
reason in Chinese.

Order of the work in `accept_messages`, and why:
1. what the request says, on its own (`read_request`, no database): its shape (400), numbers
   (per recipient) and number ranges (422);
2. the request row is inserted first (`INSERT … ON CONFLICT DO NOTHING`): it is the first write
   of the transaction, so concurrent retries of one `client_ref` queue behind each other, and on
   SQLite everything read afterwards is read under the write lock (PostgreSQL: the account row
   is read `FOR UPDATE`). When the `client_ref` was used before, the retry gets the first answer
   back, whatever happened since (not charged again);
3. one read of what may have changed since the last request: the account (status, settings,
   balance), the sub-account, the API key (so a revoked key cannot send, whatever the API's key
   cache says), the latest contract's id and the version of the keyword list; then the clock,
   under the lock, for the time and the day of every charge;
4. the account may send (403), signature (422), parts (422), forbidden keywords (422, with the
   contracts' fee, violation count, blacklist and penalty), unsubscribed recipients (skipped,
   free), 10-hour duplicates (flagged), the sending window (deferred), the account's rate (429);
5. one atomic conditional debit for the whole request (402 changes nothing), the messages,
   the send log, the answer stored on the request row.
The caller commits (or rolls back on any DomainError).

Per process, three things are cached because they only change by getting a new identity: a
contract's terms (written once, when the contract is issued; the latest contract's id is read
on every request), the compiled keyword matcher (keyed by the list's version, read on every
request) and the statements themselves (built once, so SQLAlchemy compiles them once).
"""

from __future__ import annotations

import codecs
import csv
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from time import monotonic
from types import MappingProxyType
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, aliased, scoped_session
from sqlalchemy.pool import Pool

from backoffice.clock import SHANGHAI, to_local, utcnow
from backoffice.config import ConfigError
from backoffice.errors import Conflict, DomainError, ValidationFailed
from backoffice.models import (
    ApiKey,
    Contract,
    EnterpriseAccount,
    ForbiddenKeyword,
    KeywordListVersion,
    Message,
    MobileOriginated,
    PortedNumber,
    SendRate,
    SendRequest,
    SubAccount,
    Unsubscribe,
)
from backoffice.models.accounts import ACCOUNT_STATUSES
from backoffice.models.contracts import ENDED_CONTRACT_STATUSES
from backoffice.models.messaging import CLAIMABLE, NOTICE_CHARGE_KIND, SENT, UNSUBSCRIBED_IN_QUEUE
from backoffice.money import format_price
from backoffice.services import audit
from backoffice.services.api_keys import KEY_REFUSED, Unauthorized
from backoffice.services.bulk import Prepared, insert_rows
from backoffice.services.credit import InsufficientBalance, charge_penalty
from backoffice.services.send_log import LogEntry, append_send_log
from backoffice.services.sql import (
    CLOCK_STEP_US,
    epoch_us,
    insert_ignoring_conflict,
    inserted_if_absent,
    synchronous_commit_level,
    upsert,
)
from backoffice.services.usage import charge_messages
from dispatch.keywords import KeywordMatcher, fold_keyword
from dispatch.numbers import CARRIER_NAMES, InvalidNumber, default_prefix_table, mobile_or_none, national_address, normalise_mobile
from dispatch.rules import (
    UNSUBSCRIBE_WORDS,
    MissingSignature,
    apply_signature,
    consecutive_runs,
    is_unsubscribe,
    next_send_time,
    signature_of,
    without_signatures,
)
from dispatch.segments import MAX_PARTS_IN_UDH, UCS2_PART, UCS2_SINGLE, TooLong, encode_segments

log = logging.getLogger(__name__)

BLOCKED_STATUSES = {
    "awaiting_payment": "账户尚未开通（预付款未到账），暂不能发送短信",
    "suspended": "账户已暂停，不能发送短信，请联系客服",
    "closed": "账户已关闭，不能发送短信",
}
SOURCES = ("api", "portal", "csv")
#: Answer statuses of a recipient given a number but not taken on: no message, no charge, no parts.
NOT_TAKEN = ("repeated", "network_not_opened")
CLIENT_REF_MAX = 64
NOTICE_CLIENT_REF = "platform-notice:"  # the platform's own notices (tariff, renewal, invoice); refused from customers
MAX_SCHEDULE_AHEAD = timedelta(days=30)
#: A send_at this far in the past is refused, not sent at once (found by a review: a mistyped
#: year was sent at once, silently); closer, it is a clock a little behind or a slow form: now.
MAX_SCHEDULE_BEHIND = timedelta(minutes=10)
CHECKPOINT_EVERY_SECONDS = 0.25  # intake copies the WAL into the database at most this often per process (after its turn)
MOBILE_HEADERS = {"mobile", "phone", "手机", "手机号", "手机号码", "号码", "电话"}


class SendingForbidden(DomainError):
    status = 403
    code = "sending_forbidden"


class ContentRefused(DomainError):
    """The whole request is refused as it stands (422); `code` says which rule."""

    status = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientRefConflict(Conflict):
    code = "client_ref_conflict"


def _commit_level(name: str, value: str | None) -> str | None:
    try:
        return synchronous_commit_level(value)
    except ValueError as refused:
        raise ConfigError(f"{name}={value!r}：{refused}") from None


@dataclass(frozen=True)
class SendingSettings:
    """The configurable limits of intake (config names in brackets)."""

    max_segments: int = 6  # MAX_SEGMENTS
    max_recipients: int = 1000  # MAX_RECIPIENTS
    max_consecutive_numbers: int = 10  # MAX_CONSECUTIVE_NUMBERS
    blacklist_after_violations: int = 3  # BLACKLIST_AFTER_VIOLATIONS
    rate_burst_seconds: int = 10  # RATE_BURST_SECONDS
    validity_hours: int = 48  # MESSAGE_VALIDITY_HOURS
    unsubscribe_words: tuple[str, ...] = UNSUBSCRIBE_WORDS  # UNSUBSCRIBE_WORDS (comma-separated)
    pg_synchronous_commit: str | None = "off"  # PostgreSQL intake commits (INTAKE_PG_SYNCHRONOUS_COMMIT; empty: the server's)

    def __post_init__(self) -> None:
        """A limit that cannot work stops the start (create_app reads the config once), not every request."""
        ranges = {
            "MAX_SEGMENTS": (self.max_segments, 1, MAX_PARTS_IN_UDH),
            "MAX_RECIPIENTS": (self.max_recipients, 1, 100_000),
            "MAX_CONSECUTIVE_NUMBERS": (self.max_consecutive_numbers, 1, 100_000),
            "BLACKLIST_AFTER_VIOLATIONS": (self.blacklist_after_violations, 1, 10_000),
            "RATE_BURST_SECONDS": (self.rate_burst_seconds, 1, 3_600),
            "MESSAGE_VALIDITY_HOURS": (self.validity_hours, 1, 24 * 30),
        }
        for name, (value, low, high) in ranges.items():
            if not low <= value <= high:
                raise ConfigError(f"{name}={value!r}：应为 {low} 到 {high} 之间的整数")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SendingSettings:
        words = config.get("UNSUBSCRIBE_WORDS")
        return cls(
            max_segments=int(config.get("MAX_SEGMENTS", cls.max_segments)),
            max_recipients=int(config.get("MAX_RECIPIENTS", cls.max_recipients)),
            max_consecutive_numbers=int(config.get("MAX_CONSECUTIVE_NUMBERS", cls.max_consecutive_numbers)),
            blacklist_after_violations=int(config.get("BLACKLIST_AFTER_VIOLATIONS", cls.blacklist_after_violations)),
            rate_burst_seconds=int(config.get("RATE_BURST_SECONDS", cls.rate_burst_seconds)),
            validity_hours=int(config.get("MESSAGE_VALIDITY_HOURS", cls.validity_hours)),
            unsubscribe_words=tuple(w.strip() for w in str(words).split(",") if w.strip()) if words else UNSUBSCRIBE_WORDS,
            pg_synchronous_commit=_commit_level(
                "INTAKE_PG_SYNCHRONOUS_COMMIT", config.get("INTAKE_PG_SYNCHRONOUS_COMMIT", cls.pg_synchronous_commit)
            ),
        )


@dataclass(frozen=True)
class AcceptResult:
    """The answer to a request: `body` is what the API returns (and what a retry gets back)."""

    request_id: int
    http_status: int  # 202, or 422 when the content was refused (the contracts' fee still charged)
    body: dict[str, Any]
    replayed: bool = False
    booked_ledger_events: bool = False  # a penalty was booked: post the outbox after commit

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body["messages"])

    @property
    def balance(self) -> Decimal:
        return Decimal(self.body["balance"])


@dataclass
class _Recipient:
    given: str
    number: str | None = None
    carrier: str | None = None
    reason: str | None = None
    status: str = "invalid"
    duplicate: bool = False
    charge: Decimal = Decimal(0)
    message_id: int | None = None


# --- the request as given ---------------------------------------------------------------------


_NUMBER_SEPARATORS = re.compile(r"[,，;；]")


def _recipient_list(recipients: Sequence[str] | str, settings: SendingSettings) -> list[str]:
    # A string may hold several numbers separated by commas, as other providers' APIs take them
    # (found by an exploratory test: "13800138000,13900139000" was refused as one bad number).
    given = _NUMBER_SEPARATORS.split(recipients) if isinstance(recipients, str) else recipients
    if not isinstance(given, list | tuple) or not all(isinstance(r, str) for r in given):
        raise ValidationFailed({"to": "收件人应为手机号码字符串，或手机号码字符串的列表"})
    given = [r for r in given if r.strip()]
    if not given:
        raise ValidationFailed({"to": "请至少填写一个手机号码"})
    if len(given) > settings.max_recipients:
        raise ValidationFailed({"to": f"每次最多发送给 {settings.max_recipients} 个号码，本次有 {len(given)} 个，请分批发送"})
    return list(given)


_OFFSET_AS_SPACE = re.compile(r"(?:(?<=\d:\d\d)|(?<=\d\d\d\d)) (\d{2}(?::?\d{2})?)$")  # after a time: never "2026-12-01 09"


def parse_send_at(value: str | datetime | None, *, field: str = "send_at") -> datetime | None:
    """An ISO 8601 time; without a time zone it is Beijing time. None: send now. A refusal
    names `field` (the status reports' `since` is read the same way)."""
    what = "定时发送时间" if field == "send_at" else f"{field} 时间"
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        # "+08:00" typed into a URL arrives as " 08:00" (a '+' in a query string is a space): read
        # it as the offset it was (found by a review: the very example the refusal gives was refused).
        text = _OFFSET_AS_SPACE.sub(r"+\1", value.strip())
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationFailed({field: f"{what}格式不对（应为 ISO 8601，如 2026-12-01T09:30:00+08:00）：{value[:40]}"}) from None
    else:
        raise ValidationFailed({field: f"{what}应为 ISO 8601 字符串"})
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01 in Beijing, 9999-12-31 west of Greenwich
        raise ValidationFailed({field: f"{what}超出范围：{str(value)[:40]}"}) from None


def _client_ref(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > CLIENT_REF_MAX or not value.strip().isprintable():
        raise ValidationFailed({"client_ref": f"client_ref 应为 1–{CLIENT_REF_MAX} 个可打印字符"})
    if value.strip().lower().startswith(NOTICE_CLIENT_REF):
        raise ValidationFailed({"client_ref": f"client_ref 不能以 {NOTICE_CLIENT_REF} 开头（平台通知保留）"})
    return value.strip()


def _fingerprint(recipients: list[str], content: str, send_at: datetime | None) -> str:
    raw = json.dumps([recipients, content, send_at.isoformat() if send_at else None], ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


# --- what the account and its contract allow -------------------------------------------------


def contract_terms(session: Session, account_id: int) -> dict[str, Any]:
    """The business terms of the account's latest contract (empty when it has none)."""
    terms = session.scalar(sa.select(Contract.terms).where(Contract.account_id == account_id).order_by(Contract.id.desc()).limit(1))
    return dict(terms or {})


class SenderRef(Protocol):
    """The sub-account a request comes from: a SubAccount row, or the API's cached KeySubAccount."""

    @property
    def id(self) -> int: ...

    @property
    def account_id(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SenderAccount:
    """The sending account as intake reads it under the write lock: a plain row, not an ORM
    entity (loading and tracking an entity cost more than the rest of a one-message request)."""

    id: int
    code: str
    status: str
    balance: Decimal
    price_per_message: Decimal
    sms_signature: str | None
    add_signature: bool
    service_code: str | None
    rate_limit_per_second: int
    blacklisted_at: datetime | None

    @property
    def status_name(self) -> str:
        return ACCOUNT_STATUSES.get(self.status, self.status)


@dataclass(frozen=True)
class _SenderState:
    """What intake reads about the sender under the write lock, in one statement."""

    account: SenderAccount  # status, settings, balance as of now
    sub_active: bool
    sub_login: str
    contract_id: int | None  # the account's latest contract
    open_ended: bool  # a live contract has no fixed end (extends yearly, long term, until used up)
    last_day: date | None  # else the last day of the live fixed-term contracts (None: no contract)
    keywords_version: int  # the forbidden keyword list's changes (KeywordListVersion)
    key_live: bool  # the API key (if any) is unrevoked and belongs to this sub-account


_ACCOUNTS = EnterpriseAccount.__table__
_SENDER_COLUMNS = tuple(_ACCOUNTS.c[name] for name in SenderAccount.__slots__)  # type: ignore[attr-defined]


#: The forbidden keyword list's version (its changes, counted by triggers: KeywordListVersion).
_KEYWORDS_VERSION = sa.select(KeywordListVersion.changes).where(KeywordListVersion.id == 1)


def _sender_state_query() -> sa.Select:
    latest_contract = sa.select(sa.func.max(Contract.id)).where(Contract.account_id == _ACCOUNTS.c.id).scalar_subquery()
    contracts = Contract.__table__
    # Spelt out: a prepared statement takes no IN list.
    live = sa.and_(contracts.c.account_id == _ACCOUNTS.c.id, *(contracts.c.status != ended for ended in ENDED_CONTRACT_STATUSES))
    fixed = sa.and_(contracts.c.renewal_rule == "fixed_term", contracts.c.term_end.is_not(None))
    open_ended = sa.exists().where(live, sa.not_(fixed))
    last_day = sa.select(sa.func.max(contracts.c.term_end)).where(live, fixed).scalar_subquery()
    keywords_version = _KEYWORDS_VERSION.scalar_subquery()
    subs = SubAccount.__table__
    key_live = sa.exists().where(ApiKey.id == sa.bindparam("key_id"), ApiKey.sub_account_id == subs.c.id, ApiKey.revoked_at.is_(None))
    return (
        sa.select(
            *_SENDER_COLUMNS,
            subs.c.active,
            subs.c.login,
            latest_contract,
            open_ended,
            last_day,
            keywords_version,
            key_live,
        )
        .join(subs, subs.c.account_id == _ACCOUNTS.c.id)
        .where(subs.c.id == sa.bindparam("sub_account_id"))
        # PostgreSQL (SQLite holds the write lock already). NO KEY UPDATE, as the debit's own
        # UPDATE takes: a plain FOR UPDATE would also wait for the KEY SHARE locks that concurrent
        # requests' send_requests rows (a foreign key to the account) hold, and two such requests
        # deadlock, each waiting for the other's row to go.
        .with_for_update(of=_ACCOUNTS, key_share=True)
    )


_SENDER_STATE = Prepared(_sender_state_query())
_SENDER_FIELDS = len(_SENDER_COLUMNS)


def _sender_state(session: Session, sub_account_id: int, api_key_id: int | None) -> _SenderState:
    row = _SENDER_STATE.first(session, {"sub_account_id": sub_account_id, "key_id": api_key_id or 0})
    if row is None:
        raise Unauthorized(KEY_REFUSED)  # the sub-account is gone
    active, login, contract_id, open_ended, last_day, keywords_version, key_live = row[_SENDER_FIELDS:]
    account = SenderAccount(*row[:_SENDER_FIELDS])
    if isinstance(last_day, str):  # SQLite hands back a subquery's date as text
        last_day = date.fromisoformat(last_day)
    return _SenderState(
        account,
        bool(active),
        login,
        contract_id,
        bool(open_ended),
        last_day,
        int(keywords_version or 0),
        bool(key_live),
    )


@dataclass(frozen=True)
class _ContractRules:
    terms: Mapping[str, Any]  # the template's business terms
    networks: frozenset[str] | None  # the carriers the contract opened (its 开通网络 field); None: every one


_NO_CONTRACT = _ContractRules(MappingProxyType({}), None)
_contracts: dict[tuple[str, int], _ContractRules] = {}
_CONTRACT_OF = sa.select(Contract.__table__.c.terms, Contract.__table__.c.fields).where(
    Contract.__table__.c.id == sa.bindparam("contract_id")
)


def _contract_rules(session: Session, database: str, contract_id: int | None) -> _ContractRules:
    """A contract's terms and opened networks, read once per process: they are written when the
    contract is issued and never changed (new terms come with a new contract, whose id the caller
    reads each time)."""
    if contract_id is None:
        return _NO_CONTRACT
    rules = _contracts.get((database, contract_id))
    if rules is None:
        row = session.execute(_CONTRACT_OF, {"contract_id": contract_id}).one()
        networks = (row.fields or {}).get("networks")
        opened = frozenset(str(n).lower() for n in networks) if isinstance(networks, list) and networks else None
        rules = _contracts[(database, contract_id)] = _ContractRules(MappingProxyType(dict(row.terms or {})), opened)
    return rules


def network_not_opened(carrier: str) -> str:
    """The reason given for a recipient on a carrier the contract did not open."""
    return f"合同未开通{CARRIER_NAMES.get(carrier, carrier)}网络，未发送，不计费"


def _check_may_send(account: SenderAccount, sub_active: bool, sub_login: str) -> None:
    """The account and the sub-account may send (the contract's term is checked apart)."""
    if not sub_active:
        raise SendingForbidden(f"子号 {sub_login} 已停用，不能发送短信")
    if account.blacklisted_at is not None:
        raise SendingForbidden("账户因多次发送违规内容已被列入黑名单，不能发送短信，请联系客服")
    if account.status in BLOCKED_STATUSES:
        raise SendingForbidden(BLOCKED_STATUSES[account.status])
    if account.status != "active":
        raise SendingForbidden(f"账户状态为 {account.status_name}，不能发送短信")


def sending_refused(account: EnterpriseAccount, sub: SubAccount) -> str | None:
    """What intake would answer this login now for its account's standing (suspended,
    blacklisted, not yet paid, closed, the 子号 disabled), or None: the send form says it before
    the customer types a message (found by an exploratory test: a suspended account learned it
    only on sending)."""
    try:
        _check_may_send(account, sub.active, sub.login)  # type: ignore[arg-type]  # (the columns SenderAccount reads)
    except SendingForbidden as refusal:
        return refusal.message
    return None


def _signed(content: str, account: SenderAccount) -> str:
    """The content with the account's signature (002 §5(6)); raises MissingSignature."""
    if account.sms_signature:
        return apply_signature(content, account.sms_signature, account.add_signature)
    if signature_of(content) is None:
        raise MissingSignature("短信内容缺少签名：请在开头或结尾加上【公司或产品简称】（如【某某科技】）")
    return content


def _window(terms: Mapping[str, Any]) -> tuple[tuple[time, time], time] | None:
    window = terms.get("sending_window")
    if not window:
        return None
    start, end = time.fromisoformat(window["start"]), time.fromisoformat(window["end"])
    return (start, end), time.fromisoformat(window.get("deferred_to") or window["start"])


# --- forbidden keywords: one matcher per process, rebuilt when the list changes ----------------

_matchers: dict[str, tuple[int, KeywordMatcher]] = {}
_matchers_lock = threading.Lock()


def forbidden_matcher(session: Session) -> KeywordMatcher:
    """The compiled keyword list, rebuilt when the list's version (its changes, counted by the
    database's triggers) moved: one row read per request (intake reads it along with the account,
    see `_sender_state`)."""
    return _matcher(session, str(session.get_bind().engine.url), int(session.scalar(_KEYWORDS_VERSION) or 0))


def _matcher(session: Session, database: str, version: int) -> KeywordMatcher:
    cached = _matchers.get(database)
    if cached is not None and cached[0] == version:
        return cached[1]
    with _matchers_lock:
        cached = _matchers.get(database)
        if cached is not None and cached[0] == version:
            return cached[1]
        matcher = KeywordMatcher(session.scalars(sa.select(ForbiddenKeyword.word).order_by(ForbiddenKeyword.id)))
        _matchers[database] = (version, matcher)
        return matcher


_KEYWORDS_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended('forbidden_keywords', 0))")


def keyword_problem(word: str) -> str | None:
    """Why `word` (stripped) cannot be a forbidden keyword, or None. Found by a review: control
    and format characters (a tab inside, DEL, a zero-width space, a right-to-left override) were
    listed; the list then showed a blank or a reversed word, and the matcher, which leaves format
    characters out, never matched what the list showed (or matched nothing at all)."""
    # (and line or paragraph separators, U+2028/2029: found by a fuzzing round, a word over two lines)
    hidden = list(dict.fromkeys(c for c in word if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")))
    if hidden:
        return f"包含控制字符或不可见字符（{'、'.join(f'U+{ord(c):04X}' for c in hidden)}）"
    if not fold_keyword(word):
        return "只含手机上不显示的字符，无法匹配任何短信"
    if len(word) > 100:
        return f"超过 100 个字符（{len(word)} 个）"
    return None


def _shown_word(word: str) -> str:
    """A word as a message can show it: control and format characters as [U+XXXX], cut at 20."""
    shown = "".join(f"[U+{ord(c):04X}]" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in word)
    return shown if len(shown) <= 20 else shown[:20] + "…"


@dataclass(frozen=True)
class KeywordsAdded:
    """What `add_keywords` did: the words it listed, and the words it did not list because another
    spelling of the same word is listed (the matcher folds them alike: 發票 is 发票, ＶＰＮ is vpn),
    each with that listed spelling. A word listed exactly as typed is in neither."""

    added: list[str]
    same_as: dict[str, str]


def same_as_note(same_as: Mapping[str, str]) -> str:
    """The sentence telling an administrator which words were taken as already listed, or ""."""
    if not same_as:
        return ""
    shown = "、".join(f"{word}（即“{listed}”）" for word, listed in same_as.items())
    return f"以下违禁词与列表中已有的词按同一个词匹配（不分繁简体、全角半角和大小写），未添加：{shown}"


def add_keywords(session: Session, words: Sequence[str], *, actor: str) -> KeywordsAdded:
    """Add words to the forbidden list. All or nothing: a word that cannot be one
    (`keyword_problem`) refuses the list, naming its position. A word listed already, in the same
    spelling or in one the matcher folds alike (`KeywordsAdded.same_as`), is not added again. A
    word another administrator adds at the same moment counts as already listed (INSERT … ON
    CONFLICT DO NOTHING: found by a review, the unique index's error was a 500)."""
    problems = [
        f"第 {n} 个违禁词“{_shown_word(word)}”{problem}"
        for n, word in enumerate((w.strip() for w in words), start=1)
        if word and (problem := keyword_problem(word))
    ]
    if problems:
        raise ValidationFailed({"words": "；".join(problems[:5]) + "。未添加任何违禁词，请修改后重新提交"})
    wanted = list(dict.fromkeys(w.strip() for w in words if w.strip()))
    if not wanted:
        return KeywordsAdded([], {})
    if session.get_bind().dialect.name == "postgresql":  # one list change at a time: two lists in other orders cannot deadlock
        session.execute(_KEYWORDS_LOCK)
    existing = list(session.scalars(sa.select(ForbiddenKeyword.word).order_by(ForbiddenKeyword.id)))
    listed: dict[str, str] = {}  # folded → the first listed spelling, the one a refusal names
    for word in existing:
        listed.setdefault(fold_keyword(word), word)
    exact = set(existing)
    table = ForbiddenKeyword.__table__
    added: list[str] = []
    same_as: dict[str, str] = {}
    for word in wanted:
        if word in exact:
            continue
        if (folded := fold_keyword(word)) in listed:
            same_as[word] = listed[folded]
            continue
        listed[folded] = word
        if inserted_if_absent(session, table, {"word": word, "created_by": actor}, ["word"]):
            added.append(word)
    if added:
        audit.record(session, actor, "add_keywords", "forbidden_keywords", "-", words=added)
    return KeywordsAdded(added, same_as)


def remove_keywords(session: Session, words: Sequence[str], *, actor: str) -> list[str]:
    """Remove words from the forbidden list; returns the ones that were listed."""
    rows = session.scalars(sa.select(ForbiddenKeyword).where(ForbiddenKeyword.word.in_([w.strip() for w in words]))).all()
    for row in rows:
        session.delete(row)
    removed = [r.word for r in rows]
    if removed:
        audit.record(session, actor, "remove_keywords", "forbidden_keywords", "-", words=removed)
    return removed


# --- rate: a GCRA per account, shared by every process through the database -------------------


def _admit_statement() -> sa.Update:
    table = SendRate.__table__
    now_us = sa.bindparam("now_us", type_=sa.BigInteger)
    cost = sa.bindparam("cost", type_=sa.BigInteger)
    tolerance = sa.bindparam("tolerance", type_=sa.BigInteger)
    # A theoretical arrival time this far beyond the tolerance can only come from a clock that
    # stepped back: start again from now rather than refusing every request for the length of the
    # step. Less than that (web workers' clocks apart, a request that read its time before it
    # waited for the lock) is an account over its rate.
    start = sa.case(
        (table.c.tat_us > now_us + tolerance + CLOCK_STEP_US, now_us),
        (table.c.tat_us > now_us, table.c.tat_us),
        else_=now_us,
    )
    return (
        sa.update(table)
        .where(table.c.account_id == sa.bindparam("rate_account_id"), start + cost - now_us <= tolerance)
        .values(tat_us=start + cost)
    )


_ADMIT = Prepared(_admit_statement())


def _take_rate(session: Session, account: SenderAccount, messages: int, now: datetime, settings: SendingSettings) -> None:
    """Admit `messages` at the account's rate or raise RateLimited (429). The theoretical arrival
    time advances by messages/rate; a request passes when that stays within the tolerance:
    RATE_BURST_SECONDS, or one full request (MAX_RECIPIENTS) if that is longer, so an idle
    account can always send one maximal request. One conditional UPDATE: exact across processes."""
    rate = max(1, int(account.rate_limit_per_second))
    cost = -(-messages * 1_000_000 // rate)  # ceil, in microseconds
    tolerance = max(settings.rate_burst_seconds * 1_000_000, settings.max_recipients * 1_000_000 // rate)
    now_us = epoch_us(now)
    table = SendRate.__table__
    params = {"rate_account_id": account.id, "now_us": now_us, "cost": cost, "tolerance": tolerance}
    admitted = _ADMIT.rowcount(session, params)
    if not admitted and session.scalar(sa.select(table.c.account_id).where(table.c.account_id == account.id)) is None:
        session.execute(insert_ignoring_conflict(session, table, {"account_id": account.id, "tat_us": 0}, ["account_id"]))
        admitted = _ADMIT.rowcount(session, params)
    if not admitted:
        tat = session.scalar(sa.select(table.c.tat_us).where(table.c.account_id == account.id)) or now_us
        wait = max(1, -(-(max(tat, now_us) + cost - now_us - tolerance) // 1_000_000))
        raise RateLimited(f"发送过于频繁：本账户限速每秒 {rate} 条，请 {wait} 秒后重试", retry_after=wait)


# --- taking turns: the web workers of one host write their intake one after another -------------


_turns: dict[str, tuple[int, int, threading.Lock]] = {}  # lock file -> (pid, descriptor, lock for this process's threads)
_turns_lock = threading.Lock()
_DURABLE = "intake_durable"  # in a pooled connection's info: its own PRAGMA synchronous and wal_autocheckpoint (read once)
_RELAXED = "intake_relaxed"  # in a pooled connection's info while an intake transaction has it relaxed
_checkpointed: dict[str, float] = {}  # lock file -> when this process last checkpointed after its turn (monotonic)


def _turn_of(path: str) -> tuple[int, threading.Lock]:
    """This process's descriptor of the lock file (opened after a fork, never inherited)."""
    turn = _turns.get(path)
    if turn is None or turn[0] != os.getpid():
        with _turns_lock:
            turn = _turns.get(path)
            if turn is None or turn[0] != os.getpid():
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                turn = _turns[path] = (os.getpid(), fd, threading.Lock())
    return turn[1], turn[2]


@event.listens_for(Pool, "checkin")
def _durable_again(dbapi_connection: Any, record: Any) -> None:
    """A connection relaxed for an intake transaction goes back to the pool as it was."""
    if dbapi_connection is not None and record is not None and record.info.pop(_RELAXED, False):
        synchronous, autocheckpoint = record.info[_DURABLE]
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA synchronous={int(synchronous)}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        cursor.close()


def _relax(session: Session) -> None:
    """The intake transaction about to begin commits without waiting for the disk, and without
    checkpointing the WAL (`_checkpoint_after_turn` does that, once the turn is given back).

    `PRAGMA synchronous=NORMAL` in WAL mode, for this transaction only: the commit is written
    to the WAL but not fsynced (about 0.4 ms here, 2 ms and more when the disk is busy, all of
    it with the write lock held). A crash of the process loses nothing. A power cut or an OS
    crash can roll back the intake transactions committed since the WAL was last synced (by
    any FULL commit, which syncs everything before it since the WAL is written in order, or by
    a checkpoint): each as a whole, request, messages, charge, usage and send-log lines
    together, so balances, books and log stay consistent and a retry with the same client_ref
    is processed afresh; what is lost is the acceptance the customer was told about. The
    dispatcher makes the same trade for its own commits (DISPATCH_SQLITE_SYNCHRONOUS);
    everything else (finance, contracts, the portal) keeps FULL.

    `PRAGMA wal_autocheckpoint=0`: a commit that finds the WAL longer than 1,000 pages copies it
    into the database file (and fsyncs it) before it returns, which at a few hundred requests a
    second is every 100th request or so, for several milliseconds, all of it inside the turn,
    while the other workers wait. Intake checkpoints after its turn instead."""
    connection = session.connection()
    info = connection.info
    if _DURABLE not in info:
        synchronous = int(connection.exec_driver_sql("PRAGMA synchronous").scalar() or 0)
        info[_DURABLE] = (synchronous, int(connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() or 0))
    if not info.get(_RELAXED):
        if info[_DURABLE][0] > 1:  # FULL or EXTRA; NORMAL and OFF stay as they are
            connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
        connection.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        info[_RELAXED] = True


def _checkpoint_after_turn(session: Session, lock_path: str, every: float) -> None:
    """Copy the WAL into the database file, at most every `every` seconds per process, after the
    turn was given back: PASSIVE, so it waits for no reader or writer and holds no write lock
    (what it cannot copy yet, because a reader still uses it, the next one copies)."""
    now = monotonic()
    if now - _checkpointed.get(lock_path, -math.inf) < every:
        return
    _checkpointed[lock_path] = now
    try:
        session.connection().exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        session.commit()  # ends the session's (empty) transaction; nothing to write
    except Exception:  # the request is committed and must be answered; the next turn or another writer checkpoints
        session.rollback()
        log.warning("WAL checkpoint after the intake turn failed", exc_info=True)


_SYNCHRONOUS_COMMIT = sa.text("SELECT set_config('synchronous_commit', :level, true)")  # SET LOCAL, with a parameter


@contextmanager
def intake_turn(session: Session, *, pg_synchronous_commit: str | None = None) -> Iterator[None]:
    """Hold this host's intake turn around `accept_request` and the commit (embedded SQLite).

    SQLite lets one transaction write at a time, and a writer that finds the database locked
    sleeps and retries (1, 2, 5, 10 … ms), so two busy web workers mostly wait for each other
    asleep, and one can starve the other. Intake requests take turns on a lock file next to
    the database instead: flock wakes the next one the moment the turn is given back. The
    transaction commits without an fsync and without a checkpoint (see `_relax`).

    A request waits for its turn before its transaction writes or reads anything, so it holds
    no database lock while it waits (only its pooled connection, set to commit without an
    fsync before the turn, so the PRAGMA is not part of the turn); a session already in a transaction does not take turns (it runs as
    before, waiting in SQLite's busy handler, with a full fsync), so turns can never deadlock
    with anything. Other writers (dispatcher, finance) do not take turns either. On an
    exception the transaction is rolled back before the turn is given back.

    PostgreSQL locks rows, so there are no turns; the intake transaction commits with
    `synchronous_commit` at `pg_synchronous_commit` (SendingSettings: "off", the trade SQLite's
    intake makes: a crash of the database server or its machine can undo the last ~0.6 s of
    requests, each whole; nothing is ever half done)."""
    url = session.get_bind().engine.url
    embedded = url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" and "mode=memory" not in str(url)
    current = session() if isinstance(session, scoped_session) else session  # Flask-SQLAlchemy's db.session
    if not embedded or current.in_transaction():
        if url.get_backend_name() == "postgresql" and pg_synchronous_commit and not current.in_transaction():
            session.execute(_SYNCHRONOUS_COMMIT, {"level": pg_synchronous_commit})  # checked by SendingSettings
        yield
        return
    lock_path = os.path.abspath(str(url.database)) + "-intake.lock"
    fd, threads = _turn_of(lock_path)
    try:
        _relax(session)  # PRAGMAs: no transaction, no lock, so not inside the turn
    except BaseException:
        session.rollback()
        raise
    with threads:  # the threads of one process share the descriptor, and flock would let them all in
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        except BaseException:
            session.rollback()
            raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    if not current.in_transaction():  # committed inside the turn, as it should be
        _checkpoint_after_turn(session, lock_path, CHECKPOINT_EVERY_SECONDS)


# --- the intake ---------------------------------------------------------------------------------


def _replay(existing: SendRequest, fingerprint: str, sub_account_id: int) -> AcceptResult:
    if existing.sub_account_id != sub_account_id:
        # client_ref is unique within the account (openapi); the first answer is not this 子号's to read.
        raise ClientRefConflict(
            f"client_ref {existing.client_ref} 已被本账户的另一个子号使用（同一账户内唯一），本次未发送也未扣费，请换一个 client_ref"
        )
    if existing.fingerprint != fingerprint:
        raise ClientRefConflict(f"client_ref {existing.client_ref} 已用于另一个内容不同的请求，请换一个 client_ref")
    return AcceptResult(existing.id, existing.http_status, dict(existing.response or {}), replayed=True)


_REQUESTS = SendRequest.__table__
_REQUEST_OPENING = (
    "account_id",
    "sub_account_id",
    "client_ref",
    "fingerprint",
    "source",
    "created_at",
    "accepted_count",
    "charged",
    "http_status",
)
_OPEN_REQUEST = Prepared(sa.insert(_REQUESTS).values({name: sa.bindparam(name) for name in _REQUEST_OPENING}).returning(_REQUESTS.c.id))
_open_request_once: dict[str, sa.Insert] = {}  # per dialect: INSERT … ON CONFLICT (account_id, client_ref) DO NOTHING
_CLOSE_REQUEST = Prepared(
    sa.update(_REQUESTS)
    .where(_REQUESTS.c.id == sa.bindparam("request_id"))
    .values({name: sa.bindparam(name) for name in ("response", "http_status", "accepted_count", "charged")})
)


def _open_request(
    session: Session, sub_account: SenderRef, client_ref: str | None, fingerprint: str, source: str, now: datetime
) -> int | None:
    """Insert the request row; None when a request with this client_ref already exists."""
    values = {
        "account_id": sub_account.account_id, "sub_account_id": sub_account.id, "client_ref": client_ref,
        "fingerprint": fingerprint, "source": source, "created_at": now, "accepted_count": 0, "charged": Decimal(0), "http_status": 202,
    }  # fmt: skip
    if client_ref is None:
        return int(_OPEN_REQUEST.scalar(session, values))
    dialect = session.get_bind().dialect.name
    statement = _open_request_once.get(dialect)
    if statement is None:
        columns = {name: sa.bindparam(name) for name in values}
        statement = insert_ignoring_conflict(session, _REQUESTS, columns, ["account_id", "client_ref"]).returning(_REQUESTS.c.id)
        _open_request_once[dialect] = statement
    row = session.execute(statement, values).scalar_one_or_none()
    return None if row is None else int(row)


def _find_request(session: Session, account_id: int, client_ref: str) -> SendRequest | None:
    query = sa.select(SendRequest).where(SendRequest.account_id == account_id, SendRequest.client_ref == client_ref)
    return session.scalar(query.execution_options(populate_existing=True))


def _normalise(recipients: list[str]) -> list[_Recipient]:
    table = default_prefix_table()
    out = []
    for given in recipients:
        try:
            number = normalise_mobile(given, table)
        except InvalidNumber as bad:
            out.append(_Recipient(given=given.strip()[:30], reason=bad.reason))
            continue
        out.append(_Recipient(given=given, number=number, carrier=table.carrier_of(number), status="pending"))
    return out


_UNSUBSCRIBES = Unsubscribe.__table__
_UNSUBSCRIBED = sa.select(_UNSUBSCRIBES.c.number).where(
    _UNSUBSCRIBES.c.account_id == sa.bindparam("account_id"), _UNSUBSCRIBES.c.number.in_(sa.bindparam("numbers", expanding=True))
)
_MESSAGES = Message.__table__
_SENT_BEFORE = sa.select(_MESSAGES.c.recipient).where(
    _MESSAGES.c.account_id == sa.bindparam("account_id"),
    _MESSAGES.c.recipient.in_(sa.bindparam("numbers", expanding=True)),
    _MESSAGES.c.accepted_at >= sa.bindparam("since"),
    _MESSAGES.c.content == sa.bindparam("content"),
    _MESSAGES.c.status.not_in(("unsubscribed", "refused")),
)


_UNSUBSCRIBED_ONE = Prepared(
    sa.select(_UNSUBSCRIBES.c.number).where(
        _UNSUBSCRIBES.c.account_id == sa.bindparam("account_id"), _UNSUBSCRIBES.c.number == sa.bindparam("number")
    )
)


def unsubscribed(session: Session, account_id: int, numbers: set[str]) -> set[str]:
    """Those of `numbers` on the account's unsubscribe list."""
    if len(numbers) == 1:  # most API requests: a plain statement, cached compiled (IN lists are rendered per call)
        (number,) = numbers
        return {row[0] for row in _UNSUBSCRIBED_ONE.rows(session, {"account_id": account_id, "number": number})}
    ordered = sorted(numbers)
    found: set[str] = set()
    for i in range(0, len(ordered), 500):
        found.update(session.execute(_UNSUBSCRIBED, {"account_id": account_id, "numbers": ordered[i : i + 500]}).scalars())
    return found


def _duplicates(session: Session, account_id: int, numbers: set[str], content: str, since: datetime) -> set[str]:
    """Numbers that got the same content from the account since `since` (002 §16)."""
    found: set[str] = set()
    ordered = sorted(numbers)
    for i in range(0, len(ordered), 500):
        params = {"account_id": account_id, "numbers": ordered[i : i + 500], "since": since, "content": content}
        found.update(session.execute(_SENT_BEFORE, params).scalars())
    return found


def _taken_once(people: list[_Recipient]) -> list[_Recipient]:
    """The recipients still to take, each number once: a repeat of an earlier one is answered
    `repeated` with its reason (no message, no charge) and left out."""
    first: dict[str, int] = {}
    taken = []
    for position, p in enumerate(people, start=1):
        if p.status != "pending" or p.number is None:
            continue
        earlier = first.setdefault(p.number, position)
        if earlier == position:
            taken.append(p)
        else:
            p.status, p.reason = "repeated", f"与第 {earlier} 个收件人的号码相同，只发送一次：本条未发送，不计费"
    return taken


def _charge_lines(recipients: list[_Recipient]) -> list[tuple[str, int, Decimal]]:
    per: dict[str, list[Decimal]] = {}
    for r in recipients:
        assert r.carrier is not None
        per.setdefault(r.carrier.upper(), []).append(r.charge)
    return [(carrier, len(amounts), sum(amounts, Decimal(0))) for carrier, amounts in sorted(per.items())]


@dataclass(frozen=True)
class IntakeRequest:
    """A request as given, checked on its own (no database): the API reads it before taking
    its intake turn, so the turn is held only for the work that needs the database."""

    given: tuple[str, ...]
    content: str
    client_ref: str | None
    requested_at: datetime | None
    fingerprint: str
    recipients: tuple[tuple[str, str | None, str | None, str | None], ...]  # (as given, number, carrier, reason refused)
    source: str


def longest_text(max_segments: int) -> int:
    """The most characters (UTF-16 units), signature included, a message of `max_segments` parts
    holds. Every text sent carries a signature 【…】, which GSM-7 cannot encode, so every text goes
    as UCS-2: 70 units alone, 67 a part (found by an exploratory test: the refusal named GSM-7's
    918 for 6 parts, and 918 characters were themselves refused; the real maximum is 402)."""
    return UCS2_SINGLE if max_segments == 1 else UCS2_PART * max_segments


def _too_long(length: int, parts: int | None, max_segments: int) -> str:
    """The refusal of a text of `length` characters (`parts`: what it would take, when split)."""
    per_part = UCS2_SINGLE if max_segments == 1 else UCS2_PART
    needed = f"需要拆成 {parts} 条，" if parts else ""
    return (
        f"短信内容过长：共 {length} 个字符，{needed}超过每次最多 {max_segments} 条的限制（含签名至多 {longest_text(max_segments)} 个字符："
        f"带签名【】的短信按中文编码发送，每条 {per_part} 个字符），请缩短内容"
    )


def read_request(
    recipients: Sequence[str] | str,
    content: str,
    *,
    client_ref: str | None = None,
    send_at: str | datetime | None = None,
    settings: SendingSettings | None = None,
    source: str = "api",
) -> IntakeRequest:
    """The shape of the request (400), its numbers (each normalised or refused with a reason)
    and number ranges (422): what needs no database."""
    settings = settings or SendingSettings()
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    given = _recipient_list(recipients, settings)
    if content is not None and not isinstance(content, str):
        raise ValidationFailed({"content": "短信内容应为文本（JSON 字符串）"})
    if not content or not content.strip():
        raise ValidationFailed({"content": "短信内容不能为空"})
    content = content.replace("\r\n", "\n").replace("\r", "\n").strip()  # a browser's line breaks are CRLF: one character on a phone
    if bad := [c for c in content if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F or c in _BIDI_CONTROLS]:
        # Control characters show as nothing or garble a handset; direction overrides can disguise a text.
        raise ValidationFailed(
            {"content": f"短信内容含有不可见的控制字符（{'、'.join(f'U+{ord(c):04X}' for c in dict.fromkeys(bad))}），请删除后重新提交"}
        )
    if not without_signatures(content).strip():  # sent, it would be charged for saying nothing
        raise ValidationFailed({"content": "短信内容只有签名【…】，没有正文，请填写要发送的内容"})
    # Refused here, before the intake's lock, not after splitting megabytes under it. The signature
    # is still to be added, and adds characters, so a text longer than the limit is too long whatever
    # the account's signature (a code point is one or two UTF-16 units: never fewer).
    if len(content) > longest_text(settings.max_segments):
        raise ContentRefused("too_long", _too_long(len(content), None, settings.max_segments))
    ref = _client_ref(client_ref)
    requested_at = parse_send_at(send_at)
    people = _normalise(given)
    valid = [p.number for p in people if p.number is not None]
    if not valid:
        raise ContentRefused("no_valid_recipients", "没有有效的手机号码：" + "；".join(p.reason or "" for p in people[:5]))
    run = consecutive_runs(valid)
    if run > settings.max_consecutive_numbers:
        raise ContentRefused(
            "number_range",
            f"疑似号码段群发：收件人中有 {run} 个连续号码，超过 {settings.max_consecutive_numbers} 个的限制，整批拒发（合同禁止号码段群发）",
        )
    return IntakeRequest(
        given=tuple(given),
        content=content,
        client_ref=ref,
        requested_at=requested_at,
        fingerprint=_fingerprint(given, content, requested_at),
        recipients=tuple((p.given, p.number, p.carrier, p.reason) for p in people),
        source=source,
    )


def accept_messages(
    session: Session,
    *,
    sub_account: SenderRef,
    recipients: Sequence[str] | str,
    content: str,
    client_ref: str | None = None,
    send_at: str | datetime | None = None,
    settings: SendingSettings | None = None,
    source: str = "api",
    api_key_id: int | None = None,
) -> AcceptResult:
    """Check, charge and queue one request: `read_request`, then `accept_request`."""
    settings = settings or SendingSettings()
    request = read_request(recipients, content, client_ref=client_ref, send_at=send_at, settings=settings, source=source)
    return accept_request(session, request, sub_account=sub_account, settings=settings, api_key_id=api_key_id)


def accept_request(
    session: Session,
    request: IntakeRequest,
    *,
    sub_account: SenderRef,
    settings: SendingSettings | None = None,
    api_key_id: int | None = None,
) -> AcceptResult:
    """Charge and queue a request read by `read_request` (see the module docstring for the
    order). Raises a DomainError (401/403/409/422/429, 402 InsufficientBalance) for a request
    refused as a whole; a request whose content breaks the rules returns http_status 422 after
    charging the fee the contract provides for. `api_key_id`: the key the request came with,
    checked again under the write lock. The caller commits."""
    settings = settings or SendingSettings()
    ref, requested_at, fingerprint = request.client_ref, request.requested_at, request.fingerprint
    request_id = _open_request(session, sub_account, ref, fingerprint, request.source, utcnow())
    if request_id is None:  # a retry: this client_ref was used before (or a concurrent request committed first)
        existing = _find_request(session, sub_account.account_id, ref or "")
        assert existing is not None
        return _replay(existing, fingerprint, sub_account.id)
    state = _sender_state(session, sub_account.id, api_key_id)
    # The clock is read once the request holds the write lock (SQLite: since the request row's
    # INSERT; PostgreSQL: the account's row lock just taken), and the charge's day comes from it.
    # Read before, a request that waited at midnight for `ledger assert-balances` of the new day
    # charged the day before after that day's usage was booked and the assertion written: booked
    # later, before the assertion's date, bean-check failed it for good (found by a review).
    # `record_balance_assertions` waits for the requests holding a lock, which then commit first.
    now = utcnow()
    if api_key_id is not None and not state.key_live:
        raise Unauthorized(KEY_REFUSED)
    account = state.account
    _check_may_send(account, state.sub_active, state.sub_login)
    # No live contract: none without a fixed end, none with one (a live fixed term has a last day).
    if state.contract_id is not None and not state.open_ended and state.last_day is None:
        # Every contract ended (an account an administrator let send again after its expiry sent
        # for ever, with no term, notice or expiry: found by an exploratory test).
        raise SendingForbidden("账户的合同已到期或已终止，不能再发送短信；续签合同后即可继续发送，请联系客服")
    if not state.open_ended and state.last_day is not None and to_local(now).date() > state.last_day:
        # The expiry job suspends the account at 00:00 after the last day; until it has run (the
        # scheduler down or late) the account would go on sending past its contract (a review).
        raise SendingForbidden(f"合同已于 {state.last_day:%Y-%m-%d} 到期，不能再发送短信；续签合同后即可继续发送，请联系客服")
    if requested_at is not None and requested_at > now + MAX_SCHEDULE_AHEAD:
        raise ValidationFailed({"send_at": f"定时发送时间最多为 {MAX_SCHEDULE_AHEAD.days} 天之后"})
    if requested_at is not None and requested_at < now - MAX_SCHEDULE_BEHIND:
        raise ValidationFailed(
            {"send_at": f"定时发送时间已过（{to_local(requested_at):%Y-%m-%d %H:%M} 北京时间）：请核对日期；如需立即发送，请留空"}
        )
    if requested_at is not None and not state.open_ended and state.last_day is not None and to_local(requested_at).date() > state.last_day:
        # Charged now, it would never be sent: the account stops at the contract's end (found by an exploratory test).
        raise ValidationFailed(
            {
                "send_at": f"定时发送时间（{to_local(requested_at):%Y-%m-%d %H:%M} 北京时间）晚于合同的最后一天 {state.last_day:%Y-%m-%d}，"
                f"合同到期后不能发送：请选择 {state.last_day:%Y-%m-%d} 及之前的时间，或续签合同后再定时"
            }
        )

    people = [
        _Recipient(given=given, number=number, carrier=carrier, reason=reason, status="pending" if number else "invalid")
        for given, number, carrier, reason in request.recipients
    ]
    valid = [p for p in people if p.number is not None]
    try:
        text = _signed(request.content, account)
    except MissingSignature as missing:
        raise ContentRefused("missing_signature", missing.reason) from None
    try:
        parts = encode_segments(text, settings.max_segments)
    except TooLong as long:
        raise ContentRefused("too_long", _too_long(len(text.encode("utf-16-le")) // 2, long.parts, settings.max_segments)) from None

    ported = _ported(session, {p.number for p in valid if p.number})  # the carrier an SMSC reported wins over the prefix's
    if ported:
        for p in valid:
            p.carrier = ported.get(p.number or "", p.carrier)
    database = str(session.get_bind().engine.url)
    rules = _contract_rules(session, database, state.contract_id)
    terms = rules.terms
    if rules.networks is not None:  # 合同第2条: the service covers the networks the contract lists
        for p in valid:
            if p.carrier not in rules.networks:
                p.status, p.reason = "network_not_opened", network_not_opened(p.carrier or "")
        valid = [p for p in valid if p.status == "pending"]
    if len(valid) > 1 and not terms.get("duplicate_window_hours"):
        # A number given twice is one recipient, sent and charged once, as a portal's file is (found
        # by an exploratory test: ["13800138006", "+8613800138006"] was sent and charged twice, silently).
        # Not under a contract that counts a repeat as a duplicate to send and charge (002 §16):
        # there each is sent and flagged below, as that contract says.
        valid = _taken_once(people)
    price = account.price_per_message
    balance_before = account.balance  # read under the lock: only this transaction changes it until commit
    charge_each = price * parts.parts
    hits = _matcher(session, database, state.keywords_version).find(text)
    stopped = unsubscribed(session, account.id, {p.number for p in valid if p.number})
    for p in valid:
        if p.number in stopped:
            p.status, p.reason = "unsubscribed", "对方已回复退订，未发送，不计费"
    takers = [p for p in valid if p.status == "pending"]
    window = _window(terms)
    start = max(requested_at or now, now)
    send_time = next_send_time(start, *window) if window else start
    deferred = window is not None and send_time > start
    result = _Outcome(http_status=202)
    if hits:
        result = _refuse_content(session, account, takers, hits, terms, settings, now, request_id, charge_each)
        balance = result.balance_after  # read after the fee and the penalty
    else:
        if takers:
            window_hours = terms.get("duplicate_window_hours")
            seen = (
                _duplicates(session, account.id, {p.number for p in takers if p.number}, text, now - timedelta(hours=int(window_hours)))
                if window_hours
                else set()
            )
            repeats: Counter[str] = Counter()
            status = "scheduled" if send_time > now else "queued"
            deferral = "不在合同约定的发送时段内，顺延至 " + send_time.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") + " 发送"
            for p in takers:
                assert p.number is not None
                repeats[p.number] += 1
                p.duplicate = bool(window_hours) and (p.number in seen or repeats[p.number] > 1)
                p.status = status
                p.charge = charge_each
                if deferred:
                    p.reason = deferral
                if p.duplicate:
                    p.reason = (
                        (p.reason + "；") if p.reason else ""
                    ) + f"{window_hours} 小时内向该号码发送过相同内容（重复发送，照常计费）"
            _take_rate(session, account, len(takers), now, settings)
            result.charged = charge_messages(session, account, to_local(now).date(), _charge_lines(takers), kind="usage")
            result.charge_kind = "usage"
        balance = balance_before - result.charged

    stored = list(valid)  # invalid numbers and closed networks get no message row, only a line in the answer
    _insert_messages(
        session, account, sub_account, request_id, stored, text, parts.encoding, parts.parts, price, send_time, now, settings, result
    )
    append_send_log(
        session,
        [
            LogEntry(account.code, account.service_code, p.number or "", text, _log_result(p), p.message_id)
            for p in stored
            if p.status != "unsubscribed"
        ],
        at=now,
    )
    body: dict[str, Any] = {
        "request_id": request_id,
        "client_ref": ref,
        "messages": _entries_json(people, parts.parts),
        "balance": format_price(balance or Decimal(0)),
        "charged": format_price(result.charged + result.penalty),  # what left the balance
        "send_at": send_time.isoformat(),
    }
    if result.penalty:
        body["penalty"] = format_price(result.penalty)
    if result.error is not None:
        body["error"] = {"code": result.error[0], "message": result.error[1]}
    accepted = sum(1 for p in stored if p.status in (*CLAIMABLE, "refused"))
    closing = {"request_id": request_id, "response": body, "http_status": result.http_status, "accepted_count": accepted}
    _CLOSE_REQUEST.rowcount(session, {**closing, "charged": result.charged + result.penalty})
    return AcceptResult(request_id, result.http_status, body, booked_ledger_events=result.booked_events)


@dataclass
class _Outcome:
    http_status: int
    charged: Decimal = Decimal(0)
    charge_kind: str | None = None
    error: tuple[str, str] | None = None
    booked_events: bool = False
    balance_after: Decimal | None = None  # read again after a refusal's fee and penalty
    penalty: Decimal = Decimal(0)  # 003 §3.4, taken from the balance with the fee (if any)


def _refuse_content(
    session: Session,
    account: SenderAccount,
    takers: list[_Recipient],
    hits: list[str],
    terms: Mapping[str, Any],
    settings: SendingSettings,
    now: datetime,
    request_id: int,
    charge_each: Decimal,
) -> _Outcome:
    """000 §8, 002 §9: not sent, the fee still deducted where the contract says so, a violation
    counted (the blacklist after BLACKLIST_AFTER_VIOLATIONS), 003 §3.4's penalty booked."""
    shown = "、".join(hits[:5])
    if len(shown) > KEYWORDS_SHOWN_MAX:  # the reason goes into 300-character columns (the message's error, the send log)
        shown = shown[: KEYWORDS_SHOWN_MAX - 1] + "…"
    reason = f"内容含违禁词（{shown}），拒绝发送"
    outcome = _Outcome(http_status=422)
    notes = []
    for p in takers:
        p.status, p.reason = "refused", reason
    if takers and terms.get("refused_content_fee"):
        for p in takers:
            p.charge = charge_each
        try:
            outcome.charged = charge_messages(session, account, to_local(now).date(), _charge_lines(takers), kind="refused_content_fee")
            outcome.charge_kind = "refused_content_fee"
            notes.append(f"按合同约定仍扣除本次发送费用 {format_price(outcome.charged)} 元")
        except InsufficientBalance:  # the debit changed nothing; the refusal and violation stand
            for p in takers:
                p.charge = Decimal(0)
            notes.append("余额不足，未能扣除按合同应扣的发送费用")
    table = EnterpriseAccount.__table__
    session.execute(sa.update(table).where(table.c.id == account.id).values(violation_count=table.c.violation_count + 1))
    blacklisted = session.execute(
        sa.update(table)
        .where(table.c.id == account.id, table.c.violation_count >= settings.blacklist_after_violations, table.c.blacklisted_at.is_(None))
        .values(blacklisted_at=now)
    ).rowcount
    if blacklisted:
        audit.record(session, "system:intake", "blacklist_account", "account", account.code, violations=settings.blacklist_after_violations)
        notes.append("违规次数已达上限，账户已被列入黑名单，停止发送")
    rate = terms.get("penalty_per_violation")
    if rate and takers:
        try:
            charge_penalty(
                session, account_code=account.code, messages=len(takers), rate=Decimal(str(rate)), on=to_local(now).date(),
                event_id=f"penalty-request-{request_id}", actor="system:intake",
            )  # fmt: skip
            outcome.booked_events = True
            outcome.penalty = Decimal(str(rate)) * len(takers)
            notes.append(f"按合同收取违约金 {format_price(outcome.penalty)} 元（每条 {rate} 元）")
            for p in takers:  # what each message shows later (found by a review: the penalty was on the 422 only)
                p.reason = f"{reason}；按合同收取违约金 {format_price(Decimal(str(rate)))} 元"
        except InsufficientBalance:
            notes.append("余额不足，违约金未能扣除")
    outcome.balance_after = session.scalar(sa.select(table.c.balance).where(table.c.id == account.id))
    message = reason + ("；" + "；".join(notes) if notes else "")
    outcome.error = ("content_refused", message)
    return outcome


def _log_result(p: _Recipient) -> str:
    if p.status == "refused":
        return f"refused: {p.reason}"
    return "duplicate" if p.duplicate else "accepted"


_MESSAGE_VALUES = (
    "request_id", "account_id", "sub_account_id", "content", "encoding", "segments", "price_per_message", "accepted_at", "send_at",
    "valid_until", "updated_at", "recipient", "carrier", "charge", "charge_kind", "charged_on", "status", "duplicate", "error",
    "next_attempt_at", "done_at",
)  # fmt: skip
_INSERT_MESSAGE = Prepared(sa.insert(_MESSAGES).values({name: sa.bindparam(name) for name in _MESSAGE_VALUES}).returning(_MESSAGES.c.id))
# PostgreSQL: ids for n new messages from the table's sequence, ascending.
_NEXT_MESSAGE_IDS = sa.select(sa.func.nextval(sa.func.pg_get_serial_sequence(_MESSAGES.name, _MESSAGES.c.id.name))).select_from(
    sa.func.generate_series(1, sa.bindparam("n", type_=sa.Integer))
)
_LAST_MESSAGE_ID = sa.select(sa.func.max(_MESSAGES.c.id))


def _insert_messages(
    session: Session,
    account: SenderAccount,
    sub_account: SenderRef,
    request_id: int,
    stored: list[_Recipient],
    text: str,
    encoding: str,
    segments: int,
    price: Decimal,
    send_time: datetime,
    now: datetime,
    settings: SendingSettings,
    outcome: _Outcome,
) -> None:
    """One multi-row INSERT for the request's messages; each recipient gets its message id."""
    if not stored:
        return
    today = to_local(now).date()
    common = {
        "request_id": request_id, "account_id": account.id, "sub_account_id": sub_account.id, "content": text,
        "encoding": encoding, "segments": segments, "price_per_message": price, "accepted_at": now, "send_at": send_time,
        "valid_until": send_time + timedelta(hours=settings.validity_hours), "updated_at": now,
    }  # fmt: skip
    rows = []
    for p in stored:
        charged = p.charge > 0
        claimable = p.status in CLAIMABLE
        rows.append(
            {
                **common, "recipient": p.number, "carrier": p.carrier, "charge": p.charge,
                "charge_kind": outcome.charge_kind if charged else None, "charged_on": today if charged else None,
                "status": p.status, "duplicate": p.duplicate, "error": p.reason if p.status in ("refused", "unsubscribed") else None,
                "next_attempt_at": send_time if claimable else None, "done_at": None if claimable else now,
            }
        )  # fmt: skip
    if len(rows) == 1:
        ids = [_INSERT_MESSAGE.scalar(session, rows[0])]
    elif session.get_bind().dialect.name == "sqlite":
        # SQLite cannot tell SQLAlchemy which RETURNING row belongs to which parameter set, so
        # asking for ids in order would insert row by row. Instead: one executemany, in list
        # order, while this transaction holds the write lock; messages.id is a plain INTEGER
        # PRIMARY KEY, so each row takes max(id) + 1. Checked: exactly len(rows) new ids.
        before = session.execute(_LAST_MESSAGE_ID).scalar() or 0
        insert_rows(session, _MESSAGES, rows)
        after = session.execute(_LAST_MESSAGE_ID).scalar() or 0
        if after - before != len(rows):
            raise RuntimeError(f"message ids not consecutive: {before} + {len(rows)} rows -> {after}")
        ids = list(range(before + 1, after + 1))
    else:
        # PostgreSQL: the ids first, then the rows through COPY (`insert_rows`). A multi-row
        # VALUES … RETURNING of 1,000 rows (25,000 parameters) cost psycopg ~0.25 s to rewrite its
        # placeholders, every request; an executemany, one INSERT per row, ~70 ms.
        ids = sorted(session.execute(_NEXT_MESSAGE_IDS, {"n": len(rows)}).scalars())
        for row, message_id in zip(rows, ids, strict=True):
            row["id"] = message_id
        insert_rows(session, _MESSAGES, rows)
    for p, message_id in zip(stored, ids, strict=True):
        p.message_id = int(message_id)


def _entries_json(people: list[_Recipient], segments: int) -> list[dict[str, Any]]:
    """The answer's line per recipient, in the order given."""
    prices: dict[Decimal, str] = {}
    entries = []
    for p in people:
        charge = prices.get(p.charge)
        if charge is None:
            charge = prices[p.charge] = format_price(p.charge)
        entries.append(
            {
                "id": p.message_id,
                "to": p.number or p.given,
                "carrier": p.carrier,
                "carrier_name": CARRIER_NAMES.get(p.carrier or ""),
                "segments": segments if p.number and p.status not in NOT_TAKEN else 0,
                "charge": charge,
                "status": p.status,
                "duplicate": p.duplicate,
                "reason": p.reason,
            }
        )
    return entries


# --- the invariant: accepted = sent + queued + refused + refunded -----------------------------


@dataclass(frozen=True)
class MessageCounts:
    accepted: int  # recorded per request at intake, apart from the messages' statuses
    sent: int
    queued: int
    refused: int
    refunded: int
    skipped: int  # unsubscribed: never accepted, never charged

    @property
    def balanced(self) -> bool:
        return self.accepted == self.sent + self.queued + self.refused + self.refunded


def message_counts(session: Session, account_id: int) -> MessageCounts:
    accepted = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(SendRequest.accepted_count), 0)).where(SendRequest.account_id == account_id)
    )
    by_status = dict(
        session.execute(sa.select(Message.status, sa.func.count()).where(Message.account_id == account_id).group_by(Message.status)).all()
    )
    return MessageCounts(
        accepted=int(accepted or 0),
        sent=sum(by_status.get(s, 0) for s in SENT),
        queued=sum(by_status.get(s, 0) for s in CLAIMABLE),
        refused=by_status.get("refused", 0),
        refunded=by_status.get("refunded", 0),
        skipped=by_status.get("unsubscribed", 0),
    )


# --- status views -------------------------------------------------------------------------------


#: The customer's own messages: the platform's notices to the customer's contact, kept as free
#: messages of the account for the dispatcher, are left out of what the customer reads as sent
#: (found by an exploratory test: GET /messages and the portal listed the 【短信平台】 notices).
_THE_CUSTOMERS = Message.charge_kind.is_distinct_from(NOTICE_CHARGE_KIND)


def get_message(session: Session, account_id: int, message_id: int, *, sub_account_id: int | None = None) -> Message | None:
    """The account's message (only the sub-account's, when `sub_account_id` is given), or None."""
    message = session.get(Message, message_id)
    if message is None or message.account_id != account_id or message.charge_kind == NOTICE_CHARGE_KIND:
        return None  # (the platform's notices to the customer are not the customer's messages)
    return message if sub_account_id is None or message.sub_account_id == sub_account_id else None


def status_reports(
    session: Session,
    account_id: int,
    *,
    since: datetime,
    after_id: int = 0,
    limit: int = 100,
    sub_account_id: int | None = None,
    until: datetime | None = None,
) -> list[Message]:
    """Messages whose status changed at or after `since` (and, with `until`, no later than it),
    oldest change first; page with the last row's (updated_at, id) as the next (since,
    after_id). A change is stamped before its transaction commits, so a caller that pages
    needs `until` a little in the past (STATUS_REPORT_SETTLE_SECONDS), or a change committed
    late would fall behind its cursor. With `sub_account_id`, only that sub-account's
    messages (a 子号's key reads its own, the enterprise's key reads all)."""
    query = sa.select(Message).where(
        Message.account_id == account_id,
        sa.or_(Message.updated_at > since, sa.and_(Message.updated_at == since, Message.id > after_id)),
        _THE_CUSTOMERS,
    )
    if until is not None:
        query = query.where(Message.updated_at <= until)
    if sub_account_id is not None:
        query = query.where(Message.sub_account_id == sub_account_id)
    return list(session.scalars(query.order_by(Message.updated_at, Message.id).limit(limit)))


def recent_messages(
    session: Session,
    account_id: int,
    *,
    before_id: int | None = None,
    limit: int = 50,
    sub_account_id: int | None = None,
    recipient: str | None = None,
) -> list[Message]:
    """The account's latest messages (only the sub-account's, when `sub_account_id` is given;
    only those to `recipient`, a normalised number, when it is)."""
    query = sa.select(Message).where(Message.account_id == account_id, _THE_CUSTOMERS)
    if recipient is not None:
        query = query.where(Message.recipient == recipient)
    if sub_account_id is not None:
        query = query.where(Message.sub_account_id == sub_account_id)
    if before_id:
        query = query.where(Message.id < before_id)
    return list(session.scalars(query.order_by(Message.id.desc()).limit(limit)))


_ANSWERS = sa.select(_REQUESTS.c.response).where(_REQUESTS.c.id.in_(sa.bindparam("request_ids", expanding=True)))


def intake_reasons(session: Session, messages: Sequence[Message]) -> dict[int, str]:
    """The reason the intake's answer gave each message whose own `error` says nothing since:
    deferred to the contract's sending window, a 10-hour duplicate (found by an exploratory
    test: the 202 said so, GET /messages and the portal's 说明 said nothing afterwards). Read
    from the answer stored on the request (for `client_ref` retries), nothing stored per message,
    and only for messages that can have such a reason (flagged duplicate, or sent later than
    accepted): the columns alone cannot tell a deferral to 08:05 from a send_at the customer chose."""
    wanted = {m.request_id for m in messages if m.error is None and (m.duplicate or m.send_at > m.accepted_at)}
    if not wanted:
        return {}
    given: dict[int, str] = {}
    ordered = sorted(wanted)
    for i in range(0, len(ordered), 500):
        for answer in session.scalars(_ANSWERS, {"request_ids": ordered[i : i + 500]}):
            for entry in (answer or {}).get("messages", ()):
                if entry.get("id") is not None and entry.get("reason"):
                    given[entry["id"]] = entry["reason"]
    return {m.id: given[m.id] for m in messages if m.error is None and m.id in given}


def recent_replies(
    session: Session, account_id: int, *, before_id: int | None = None, limit: int = 100, sub_account_id: int | None = None
) -> list[MobileOriginated]:
    """The account's latest replies (before `before_id`, for the next page); with
    `sub_account_id` (a 子号), only those from numbers that sub-account had sent to when the
    reply came: the others' recipients and what they answered are not its to read (a review: a
    子号 that wrote to a number later read what it had answered another 子号 before)."""
    query = sa.select(MobileOriginated).where(MobileOriginated.account_id == account_id)
    if before_id:
        query = query.where(MobileOriginated.id < before_id)
    if sub_account_id is not None:
        query = query.where(_replied_to(account_id, sub_account_id))
    return list(session.scalars(query.order_by(MobileOriginated.id.desc()).limit(limit)))


def _replied_to(account_id: int, sub_account_id: int) -> sa.ColumnElement[bool]:
    """A reply that answers the sub-account: the account's latest message to that number before
    the reply came was the sub-account's. Found by a review: any earlier message sufficed, so a
    子号 that once wrote to a number read every later reply from it, those to another 子号's
    messages too (each department of a customer may be its own 子号)."""
    mine, later = aliased(Message), aliased(Message)
    someone_elses_since = (
        sa.select(later.id)
        .where(
            later.recipient == MobileOriginated.sender,
            later.account_id == account_id,
            later.accepted_at > mine.accepted_at,
            later.accepted_at <= MobileOriginated.received_at,
            later.sub_account_id != sub_account_id,
            later.charge_kind.is_distinct_from(NOTICE_CHARGE_KIND),
        )
        .correlate_except(later)  # (the reply's and this message's columns are the outer queries')
        .exists()
    )
    answered = sa.select(mine.id).where(
        mine.recipient == MobileOriginated.sender,
        mine.account_id == account_id,
        mine.accepted_at <= MobileOriginated.received_at,
        mine.sub_account_id == sub_account_id,
        mine.charge_kind.is_distinct_from(NOTICE_CHARGE_KIND),  # (the platform's own notices answer to nobody)
        ~someone_elses_since,
    )  # both by ix_messages_recipient_account (recipient, account, accepted_at)
    return answered.correlate_except(mine).exists()


def reply_reports(
    session: Session,
    account_id: int,
    *,
    since: datetime,
    after_id: int = 0,
    limit: int = 100,
    sub_account_id: int | None = None,
    until: datetime | None = None,
) -> list[MobileOriginated]:
    """Replies received at or after `since` (no later than `until`), oldest first, for the API
    (found by an exploratory test: replies and TDs could be read only in the portal, not by the
    customer's program); paged like `status_reports`, with the last row's (received_at, id) as
    the next (since, after_id), `until` a little in the past for a reply committed late."""
    query = sa.select(MobileOriginated).where(
        MobileOriginated.account_id == account_id,
        sa.or_(MobileOriginated.received_at > since, sa.and_(MobileOriginated.received_at == since, MobileOriginated.id > after_id)),
    )
    if until is not None:
        query = query.where(MobileOriginated.received_at <= until)
    if sub_account_id is not None:
        query = query.where(_replied_to(account_id, sub_account_id))
    return list(session.scalars(query.order_by(MobileOriginated.received_at, MobileOriginated.id).limit(limit)))


# --- replies (MO) and the unsubscribe list -----------------------------------------------------


def record_reported_carrier(session: Session, number: str, carrier: str, *, message_id: int, now: datetime) -> None:
    """An SMSC reported `carrier` for `number` in the receipt of message `message_id` (number
    portability): remembered unless a newer message's receipt already said otherwise (receipts
    can come hours late). A number with no row and its prefix's carrier needs none."""
    table = PortedNumber.__table__
    if default_prefix_table().carrier_of(number) == carrier and _PORTED_ONE.scalar(session, {"number": number}) is None:
        return
    values = {"number": number, "carrier": carrier, "reported_at": now, "message_id": message_id}
    session.execute(upsert(session, table, values, ["number"], newer_by="message_id"))


_PORTED = PortedNumber.__table__
_PORTED_ONE = Prepared(sa.select(_PORTED.c.carrier).where(_PORTED.c.number == sa.bindparam("number")))


def _ported(session: Session, numbers: set[str]) -> dict[str, str]:
    """The carrier SMSCs reported for those of `numbers` that were ported away from their prefix's."""
    if len(numbers) == 1:
        (number,) = numbers
        carrier = _PORTED_ONE.scalar(session, {"number": number})
        return {} if carrier is None else {number: carrier}
    ordered, found = sorted(numbers), {}
    for i in range(0, len(ordered), 500):
        query = sa.select(_PORTED.c.number, _PORTED.c.carrier).where(_PORTED.c.number.in_(ordered[i : i + 500]))
        found.update({number: carrier for number, carrier in session.execute(query)})
    return found


def add_unsubscribe(session: Session, account_id: int, number: str, *, source: str, pending: list[Any] | None = None) -> bool:
    """Put `number` on the account's unsubscribe list; False when it already was. Messages to it
    still waiting in the queue (scheduled for later, not yet taken by a worker) are not sent
    and their charge is given back (with `pending`: by the caller, see `cancel_waiting`)."""
    from backoffice.services.message_queue import cancel_waiting

    values = {"account_id": account_id, "number": normalise_mobile(number), "source": source, "created_at": utcnow()}
    inserted = inserted_if_absent(session, Unsubscribe.__table__, values, ["account_id", "number"])
    cancel_waiting(session, account_id, values["number"], reason=UNSUBSCRIBED_IN_QUEUE, pending=pending)
    return inserted


def record_reply(
    session: Session,
    *,
    sender: str,
    destination: str,
    content: str,
    received_at: datetime | None = None,
    smsc_message_id: str | None = None,
    settings: SendingSettings | None = None,
    pending: list[Any] | None = None,
    platform_source: str | None = None,
) -> MobileOriginated:
    """Store an MO reply, find the account by the longest service code `destination` starts
    with, and put the sender on that account's unsubscribe list when the reply is TD/退订/…
    (`pending`: see `add_unsubscribe`). `platform_source`: the platform's notice address
    (SMSC_NOTICE_SOURCE), matched like a code of its own: a reply to it, or to an extension of it
    no longer code matches, is the platform's, kept under no account and unsubscribing nobody."""
    settings = settings or SendingSettings()
    destination = national_address(destination)  # 8610657500012301 is the code 10657500012301
    try:
        number: str | None = normalise_mobile(sender)
    except InvalidNumber:
        number = None
    codes = session.execute(
        sa.select(EnterpriseAccount.id, EnterpriseAccount.service_code, EnterpriseAccount.status).where(
            EnterpriseAccount.service_code.is_not(None)
        )
    ).all()
    # The longest code wins; a live account over a closed one whose code was given out again
    # (`contracts.service_code_clash` lets no two live accounts share or nest their codes).
    matching = sorted(
        ((len(code), status != "closed", account_id) for account_id, code, status in codes if code and destination.startswith(code)),
        reverse=True,
    )
    account_id = matching[0][2] if matching else None
    # No code may be the notice address or nest with it (`contracts.service_code_clash`); one
    # given before the setting that is as long or shorter still does not take the platform's replies.
    if platform_source and destination.startswith(platform_source) and (not matching or matching[0][0] <= len(platform_source)):
        account_id = None
    # Only a mobile number can be on an unsubscribe list (nothing is sent to any other): a TD
    # from a landline or a short code is stored as a reply, not marked as an unsubscribe.
    unsubscribe = number is not None and is_unsubscribe(content, settings.unsubscribe_words)
    reply = MobileOriginated(
        account_id=account_id, sender=number or sender[:24], destination=destination[:24], content=content,
        received_at=received_at or utcnow(), smsc_message_id=smsc_message_id, unsubscribe=unsubscribe,
    )  # fmt: skip
    session.add(reply)
    if unsubscribe and account_id is not None and number is not None:
        add_unsubscribe(session, account_id, number, source="mo", pending=pending)
    return reply


# --- CSV upload of recipients -------------------------------------------------------------------


@dataclass(frozen=True)
class RecipientFile:
    numbers: list[str]  # normalised, in file order
    problems: list[str]  # "第 N 行：reason", for the customer


def read_recipient_file(data: bytes, *, limit: int | None = None) -> RecipientFile:
    """Numbers from an uploaded list as customers save them: one per line, several to a line when
    the lines hold nothing else, or a column headed like 手机号码 / 联系电话 / mobile (else the
    column whose cells are numbers; a mobile number in another column is reported, not sent),
    separated by commas, tabs or semicolons; UTF-8 (with or without BOM), GB18030 (Excel, WPS) or UTF-16 with
    its BOM (Excel's Unicode text). Each bad row is
    reported by its line number; a number Excel turned into 1.38001E+10 is explained. More
    than `limit` numbers stop the reading at once (the request would be refused anyway)."""
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise ValidationFailed({"file": "这是 Excel 工作簿（.xlsx / .xls），请在 Excel 中“另存为 CSV”后再上传"})
    # Excel's "Unicode 文本" (and WPS's) is UTF-16 with its byte-order mark, tab-separated
    # (found by an exploratory test: refused as an unknown encoding).
    encodings = ("utf-16",) if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else ("utf-8-sig", "gb18030")
    for encoding in encodings:
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValidationFailed({"file": "无法识别文件编码，请保存为 UTF-8、GBK 编码的 CSV 或 Excel 的“Unicode 文本”"})
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = max(",\t;", key=first_line.count) if any(d in first_line for d in ",\t;") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)  # (lines ended by CR alone too: Excel for Mac)
    rows: list[tuple[int, list[str]]] = []  # (line number in the file, cells)
    start = 1  # where the row being read begins
    try:
        for row in reader:
            # A stray quote joins the lines after it into one cell: their numbers would vanish.
            if any(("\n" in cell or "\r" in cell) and _SWALLOWED_NUMBER.search(cell) for cell in row):
                raise ValidationFailed({"file": f'第 {start} 行的引号（"）不配对，其后各行被并成了一格：请检查该行后重新导出'})
            rows.append((reader.line_num, row))
            start = reader.line_num + 1
    except csv.Error:  # the joined lines outgrew csv's field limit
        raise ValidationFailed({"file": f'第 {start} 行的引号（"）不配对，其后各行被并成了一格：请检查该行后重新导出'}) from None
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]  # blank lines, a first one too
    table = default_prefix_table()
    every_cell = _numbers_only(rows[:51], table)  # numbers laid out several to a line: each one is a recipient
    column, first = (0, 0) if every_cell else _number_column(rows, table)
    named = rows[0][1][column].strip()[:20] if first and len(rows[0][1]) > column else ""
    chosen = f"“{named}”列" if named else f"第 {column + 1} 列"
    numbers, problems = [], []
    # A number on two lines of the file (a member listed twice) is one recipient, sent and charged
    # once, and the customer is told (found by a review: it was sent and charged twice, silently).
    first_line: dict[str, int] = {}
    for line, row in rows[first:]:
        on_line: set[str] = set()  # (several to a line: a number twice on one line, its 手机 and 电话 say, is one recipient)
        for raw in [cell for cell in row if cell.strip()] if every_cell else [row[column] if len(row) > column else ""]:
            cell = _number_cell(raw)
            if not cell:
                problems.append(f"第 {line} 行：缺少手机号码")
                continue
            if _EXCEL_EXPONENT.fullmatch(cell):
                problems.append(f"第 {line} 行：号码被 Excel 转成了科学计数法（{cell[:20]}），请把号码列设为“文本”格式后重新导出")
                continue
            try:
                number = normalise_mobile(cell, table)
            except InvalidNumber as bad:
                problems.append(f"第 {line} 行：{bad.reason}")
                continue
            if number in on_line:
                continue
            on_line.add(number)
            if number in first_line:
                problems.append(f"第 {line} 行：号码 {number} 与第 {first_line[number]} 行重复，只发送一次")
                continue
            first_line[number] = line
            numbers.append(number)
            if limit is not None and len(numbers) > limit:
                raise ValidationFailed({"file": f"文件中的号码超过每次最多 {limit} 个的限制，请分成多个文件发送"})
        if not every_cell:  # another column's mobile number (备用手机, say) is not sent, and the customer is told
            unused = [
                number
                for i, cell in enumerate(row)
                if i != column and _number_like(cell) and (number := _mobile_or_none(cell, table)) and number not in on_line
            ]
            if unused:
                problems.append(f"第 {line} 行：只发送{chosen}的号码，本行其他列的号码未发送：{'、'.join(unused[:5])}")
    if len(problems) > PROBLEMS_SHOWN:  # a file of bad rows made a page of 150 MB
        problems = [*problems[:PROBLEMS_SHOWN], f"另有 {len(problems) - PROBLEMS_SHOWN} 行有问题，未一一列出"]
    return RecipientFile(numbers, problems)


_BIDI_CONTROLS = audit.DIRECTION_CONTROLS
KEYWORDS_SHOWN_MAX = 200  # characters of the matched keywords a refusal names
PROBLEMS_SHOWN = 100  # bad rows of an uploaded list listed one by one; the rest are counted
_SWALLOWED_NUMBER = re.compile(r"[\r\n][^\r\n]*1[3-9][0-9]{9}")
_EXCEL_EXPONENT = re.compile(r"[0-9](?:\.[0-9]+)?[eE]\+?[0-9]+")
_EXCEL_DECIMAL = re.compile(r"[0-9]{11}\.0+")
_EXCEL_TEXT_FORMULA = re.compile(r'=\s*"([^"]*)"')


def _number_cell(cell: str) -> str:
    """A cell as a number is read from it: 13800138000.0 (a number column from pandas or WPS) is
    13800138000; so are ="13800138000" (the formula exports use to keep Excel from turning a
    number into 1.38001E+10) and '13800138000 (a number typed as text in Excel)."""
    cell = cell.strip()
    if formula := _EXCEL_TEXT_FORMULA.fullmatch(cell):
        cell = formula[1].strip()
    elif cell.startswith(("'", "’")):
        cell = cell[1:].strip()
    return cell.split(".", 1)[0] if _EXCEL_DECIMAL.fullmatch(cell) else cell


def _mobile_or_none(cell: str, table: Any) -> str | None:
    return mobile_or_none(_number_cell(cell), table) if cell.strip() else None


def _number_like(cell: str) -> bool:
    """A cell written as a phone number, good or bad (digits, +, spaces, hyphens, brackets; Excel's
    1.38001E+10 too), not a name or a header."""
    cell = _number_cell(cell)
    return bool(_EXCEL_EXPONENT.fullmatch(cell)) or (
        sum(c.isdigit() for c in cell) >= 5 and all(c.isdigit() or c in "+-–—() .\u3000（）" for c in cell)
    )


def _numbers_only(sample: list[tuple[int, list[str]]], table: Any) -> bool:
    """Whether the lines hold nothing but phone numbers, several to a line somewhere (a pasted
    list "13800138000,13912345678,…"): then every cell is a recipient and a bad one is reported
    on its own, not one column read and the rest set aside. Every cell looks like a number and
    at least half of every column's are mobile numbers: a column of staff numbers, dates or amounts
    (digits too) makes it a file to read by its mobile column."""
    cells = [cell for _, row in sample for cell in row if cell.strip()]
    if len(cells) <= len(sample) or not all(_number_like(cell) for cell in cells):
        return False
    if len(sample) < 3:  # a line or two pasted: too few to tell a column of other numbers from a typo
        return True
    columns: dict[int, list[bool]] = {}
    for _, row in sample:
        for i, cell in enumerate(row):
            if cell.strip():
                columns.setdefault(i, []).append(_mobile_or_none(cell, table) is not None)
    return all(2 * sum(valid) >= len(valid) for valid in columns.values())


_HEADER_WORDS = ("手机", "电话", "号码", "mobile", "phone")
_TEL = re.compile(r"\btel\b")  # a word of its own: not "hotel"
_SPARE_WORDS = ("备用", "其他", "其它", "紧急", "第二", "backup", "other", "alt", "secondary", "emergency")  # lose a tie


def _number_column(rows: list[tuple[int, list[str]]], table: Any) -> tuple[int, int]:
    """(column, first data row). Columns whose header names a phone (手机号码, 联系电话, mobile…)
    are candidates, the one with the most valid mobile numbers below wins (办公电话 beside 手机号码:
    the mobile one); on a tie not a spare one (备用手机, 紧急联系电话…), then 手机/mobile, then the first. With no such header: the column with the most valid
    numbers, its first row skipped when it holds no digit at all (a header not recognised)."""
    if not rows:
        return 0, 0
    sample = rows[:51]

    def numbers_in(column: int, body: list[tuple[int, list[str]]]) -> int:
        found = 0
        for _, row in body:
            if len(row) > column:
                try:
                    normalise_mobile(_number_cell(row[column]), table)
                    found += 1
                except InvalidNumber:
                    pass
        return found

    header = [cell.strip().lower() for cell in rows[0][1]]
    named = [
        i for i, cell in enumerate(header) if cell in MOBILE_HEADERS or any(word in cell for word in _HEADER_WORDS) or _TEL.search(cell)
    ]
    if named:
        spare = {i: any(word in header[i] for word in _SPARE_WORDS) for i in named}
        mobile_first = {i: not ("手机" in header[i] or "mobile" in header[i]) for i in named}
        return min(named, key=lambda i: (-numbers_in(i, sample[1:]), spare[i], mobile_first[i], i)), 1
    width = max(len(row) for _, row in sample)
    column = min(range(width), key=lambda i: (-numbers_in(i, sample), i)) if width > 1 else 0
    first_cell = rows[0][1][column] if len(rows[0][1]) > column else ""
    return column, int(bool(first_cell.strip()) and not any(c.isdigit() for c in first_cell))


def split_recipients(text: str) -> list[str]:
    """Numbers typed in a box: one per line, or separated by commas, semicolons, 、 or tabs; or by
    spaces when every piece is a mobile number of its own (found by an exploratory test: numbers
    pasted from a chat, "13800138000 13900139000", were refused as one number of 22 digits). A
    number written with spaces (+86 138 0013 8000) stays one."""
    for separator in ("，", ",", ";", "；", "、", "\t", "\r"):
        text = text.replace(separator, "\n")
    table = default_prefix_table()
    numbers: list[str] = []
    for part in (part.strip() for part in text.split("\n")):
        pieces = part.split()
        if len(pieces) > 1 and mobile_or_none(part, table) is None and all(mobile_or_none(p, table) for p in pieces):
            numbers.extend(pieces)
        elif part:
            numbers.append(part)
    return numbers


def typed_once(typed: Sequence[str]) -> RecipientFile:
    """Typed numbers each once as normalised (13800138200, +86 138 0013 8200 and 138-0013-8200
    are one recipient), with a line for every repeat left out, as an uploaded file's are (found
    by an exploratory test: a number typed twice was sent and charged twice, silently). What is
    not a mobile number stays as typed, for intake to answer it invalid."""
    table = default_prefix_table()
    numbers: list[str] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    for position, raw in enumerate(typed, start=1):
        number = mobile_or_none(raw, table)
        if number is None:
            numbers.append(raw)
            continue
        earlier = first.setdefault(number, position)
        if earlier != position:
            problems.append(f"收件人中第 {position} 个号码 {raw.strip()[:30]} 与第 {earlier} 个重复（{number}），只发送一次")
            continue
        numbers.append(number)
    return RecipientFile(numbers, problems)
