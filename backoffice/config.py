"""Configuration read from the environment, each name with a working embedded default."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from backoffice.services.sql import SYNCHRONOUS_COMMIT
from dispatch.smpp_link import RECEIPT_ID_FORMATS, TEMPORARY_STATUSES, parse_command_statuses


def _instance_path() -> Path:
    return Path(os.environ.get("BACKOFFICE_INSTANCE_PATH", "instance")).resolve()


#: A bank's code, as Assets:Bank:<code> in the books takes it: the RECEIVING_BANK setting, a
#: receipt's bank and a provider profile's bank all have this form.
BANK_CODE = re.compile(r"[A-Z][A-Z0-9]{1,15}")


class ConfigError(ValueError):
    """A setting that cannot work, named with what it should be: the process does not start.
    Found by a review: `SMTP_PORT=` (empty, common in an EnvironmentFile) or
    `FOUR_EYES_THRESHOLD=50,000.00` stopped every process with a 46-line traceback, and a typo in
    LEDGER_BALANCE_ASSERTIONS only failed the nightly books job, every night."""


T = TypeVar("T")


def _setting(name: str, default: T, parse: Callable[[str], T], should_be: str, valid: Callable[[T], bool] = lambda _: True) -> T:
    """The environment's `name` parsed, or `default` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except (ValueError, ArithmeticError):
        raise ConfigError(f"{name}={raw!r}：{should_be}") from None
    if not valid(value):
        raise ConfigError(f"{name}={raw!r}：{should_be}")
    return value


def _int(name: str, default: int, low: int = 0, high: int | None = None) -> int:
    span = f"{low} 到 {high} 之间的整数" if high is not None else f"不小于 {low} 的整数"
    return _setting(name, default, int, f"应为{span}", lambda v: v >= low and (high is None or v <= high))


def _float(name: str, default: float) -> float:
    return _setting(name, default, float, "应为不小于 0 的数（秒、小时等）", lambda v: math.isfinite(v) and v >= 0)


def _decimal(name: str, default: str) -> Decimal:
    return _setting(
        name, Decimal(default), Decimal, "应为不小于 0 的金额（元），如 50000.00，不带千位分隔符", lambda v: v.is_finite() and v >= 0
    )


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    shown = "、".join(c or "（空）" for c in choices)
    return _setting(name, default, str.lower, f"只能是 {shown} 之一", lambda v: v in choices)


def _one_of(name: str, default: str, choices: tuple[str, ...], empty: str) -> str:
    """The environment's `name` as written when it is one of `choices` (case aside) or empty
    (which means `empty`: the setting's reader says how); `default` when unset. Found by a review:
    these were read only by the dispatcher, which failed on a wrong one, or not checked at all."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip() and raw.strip().lower() not in choices:
        raise ConfigError(f"{name}={raw!r}：只能是 {'、'.join(choices)} 之一，或留空（{empty}）")
    return raw.strip()


def _statuses(name: str, default: frozenset[int]) -> frozenset[int]:
    """SMPP command statuses, comma-separated (hex, decimal or names), or `default` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_command_statuses(raw)
    except ValueError as refused:  # (names the entry that is wrong, in Chinese)
        raise ConfigError(f"{name}={raw!r}：{refused}") from None


def sources_apart(shared: str, notice: str) -> None:
    """Refuse a notice source address equal to or nesting with the shared one (either a prefix of
    the other): a reply there could not be told to be the platform's or the customers' (README)."""
    if shared and notice and (shared.startswith(notice) or notice.startswith(shared)):
        raise ConfigError(
            f"SMSC_NOTICE_SOURCE={notice!r}：平台通知发送号码不能与平台共用发送号码 SMSC_DEFAULT_SOURCE={shared!r} 相同或互为开头部分，"
            "否则回复无法分清是给平台还是给客户的"
        )


def _database_url(default: str) -> str:
    url = os.environ.get("DATABASE_URL", "").strip() or default
    if url.startswith("postgres://"):  # Heroku's and libpq's spelling, which SQLAlchemy refuses
        url = "postgresql://" + url.removeprefix("postgres://")
    return url


class Config:
    """Settings for one process; `create_app(config)` may override any attribute (tests do)."""

    def __init__(self, **overrides: object) -> None:
        env = os.environ
        self.INSTANCE_PATH = Path(str(overrides.pop("INSTANCE_PATH", _instance_path()))).resolve()
        default_db = f"sqlite:///{self.INSTANCE_PATH / 'backoffice.sqlite3'}"
        self.SQLALCHEMY_DATABASE_URI = _database_url(default_db)
        self.SECRET_KEY = env.get("SECRET_KEY", "")
        self.LEDGER_PATH = self.INSTANCE_PATH / "ledger"
        self.DOCUMENTS_PATH = self.INSTANCE_PATH / "documents"
        self.KEYS_PATH = self.INSTANCE_PATH / "keys"
        self.OUTBOX_PATH = self.INSTANCE_PATH / "outbox"
        # The send log (000 §6(6): kept at least six months): `dispatch archive-log` moves rows
        # older than SEND_LOG_KEEP_MONTHS to verified files here (SEND_LOG_ARCHIVE_DIR to put them elsewhere).
        self.SEND_LOG_ARCHIVE_PATH = Path(env.get("SEND_LOG_ARCHIVE_DIR", "").strip() or self.INSTANCE_PATH / "send_log_archive")
        self.SEND_LOG_KEEP_MONTHS = _int("SEND_LOG_KEEP_MONTHS", 6, 6, 1200)
        # Production: a configured signing key and certificate (PEM). Empty: self-signed, made on first use.
        self.SIGNING_KEY_FILE = env.get("SIGNING_KEY_FILE", "")
        self.SIGNING_CERT_FILE = env.get("SIGNING_CERT_FILE", "")
        # How often the books get a balance assertion per customer: daily (default), weekly
        # (Mondays) or monthly (the 1st). Daily costs ~10 s a year of load time for 1,000
        # accounts (benchmarks/README.md); reconciliation with the database runs on every check.
        self.LEDGER_BALANCE_ASSERTIONS = _choice("LEDGER_BALANCE_ASSERTIONS", "daily", ("daily", "weekly", "monthly"))
        self.SMSC_HOST = env.get("SMSC_HOST", "127.0.0.1")
        self.SMSC_PORT = _int("SMSC_PORT", 2775, 1, 65535)
        self.SMSC_SYSTEM_ID = env.get("SMSC_SYSTEM_ID", "backoffice")
        self.SMSC_PASSWORD = env.get("SMSC_PASSWORD", "secret")
        # The dispatcher worker (issue #5): source address of accounts without a service code,
        # the link's own rate limit (0: none; the SMSC's throttling is honoured either way), the
        # window of outstanding submit_sm (also the most parts a crash can leave to resend), messages
        # claimed at a time, the lease after which a dead worker's messages return to the queue,
        # SQLite durability of the worker's commits (NORMAL in WAL survives a process crash), and
        # the signature of the provider's own SMS notices.
        self.SMSC_DEFAULT_SOURCE = env.get("SMSC_DEFAULT_SOURCE", "10690000")
        # The platform's own notices (invoices, renewal and expiry notices) go from an address of
        # their own, never the shared one: a reply there is the platform's, never a customer's, and
        # a TD to the shared address is not lost to a notice sent to the number since (an
        # exploratory test: the customer that texted the number went on texting it, and charging).
        self.SMSC_NOTICE_SOURCE = env.get("SMSC_NOTICE_SOURCE", "").strip() or "10690001"
        self.SMSC_MAX_TPS = _float("SMSC_MAX_TPS", 0.0)
        # How the SMSC's receipt ids relate to its submit_sm_resp ids: auto (the same, else a
        # hex/decimal reading once the receipt cannot be early), same, decimal or hex (README).
        self.SMSC_RECEIPT_ID_FORMAT = _one_of("SMSC_RECEIPT_ID_FORMAT", "auto", RECEIPT_ID_FORMATS, "auto")
        self.DISPATCH_WINDOW = _int("DISPATCH_WINDOW", 10, 1)
        self.DISPATCH_BATCH = _int("DISPATCH_BATCH", 200, 1)
        self.DISPATCH_LEASE_SECONDS = _int("DISPATCH_LEASE_SECONDS", 300, 1)
        # A part on the wire when the link dropped (in a session that answered something) is resent
        # at most this many times; then its message is refunded (an SMSC that drops the link on one
        # message would get it for ever).
        self.DISPATCH_RESEND_LIMIT = _int("DISPATCH_RESEND_LIMIT", 3)
        # submit_sm_resp statuses after which a part goes again later instead of its message
        # being refunded (the SMSC's own failure, one destination's queue full, a temporary
        # application error), each part waiting longer after each, at most the maximum.
        self.DISPATCH_TEMPORARY_STATUSES = _statuses("DISPATCH_TEMPORARY_STATUSES", TEMPORARY_STATUSES)
        self.DISPATCH_TEMPORARY_RETRY_MAX_SECONDS = _float("DISPATCH_TEMPORARY_RETRY_MAX_SECONDS", 600.0)
        self.DISPATCH_RELEASE_AFTER_LINK_DOWN_SECONDS = _float("DISPATCH_RELEASE_AFTER_LINK_DOWN_SECONDS", 60.0)
        self.DISPATCH_SQLITE_SYNCHRONOUS = _one_of(
            "DISPATCH_SQLITE_SYNCHRONOUS", "NORMAL", ("off", "normal", "full", "extra"), "SQLite 的默认"
        )
        # PostgreSQL: how the worker's and the API intake's commits wait for the disk (README)
        self.DISPATCH_PG_SYNCHRONOUS_COMMIT = _one_of("DISPATCH_PG_SYNCHRONOUS_COMMIT", "off", SYNCHRONOUS_COMMIT, "服务器自己的设置")
        self.INTAKE_PG_SYNCHRONOUS_COMMIT = _one_of("INTAKE_PG_SYNCHRONOUS_COMMIT", "off", SYNCHRONOUS_COMMIT, "服务器自己的设置")
        # When the operations page and `dispatch status` call something a problem (README)
        self.DISPATCH_ALERT_SILENT_SECONDS = _int("DISPATCH_ALERT_SILENT_SECONDS", 60)
        self.DISPATCH_ALERT_LINK_DOWN_SECONDS = _int("DISPATCH_ALERT_LINK_DOWN_SECONDS", 120)
        self.DISPATCH_ALERT_QUEUE_MINUTES = _int("DISPATCH_ALERT_QUEUE_MINUTES", 10)
        self.NOTICE_SMS_SIGNATURE = env.get("NOTICE_SMS_SIGNATURE", "短信平台")
        # Status reports list a change once it is this old: a change stamped before its transaction
        # committed (a turn waiting for the write lock) is never behind a client's cursor.
        self.STATUS_REPORT_SETTLE_SECONDS = _float("STATUS_REPORT_SETTLE_SECONDS", 5.0)
        # A login session lasts a working day: its cookie is refused after this (a logout ends it sooner).
        self.PERMANENT_SESSION_LIFETIME = timedelta(hours=_float("SESSION_HOURS", 12.0))
        # Failed logins: this many for one login from one address (an IPv6 address counts by its
        # /64), or LOGIN_MAX_FAILURES_PER_ADDRESS from one address, within LOGIN_LOCK_MINUTES, and
        # that address's logins are refused until the oldest of them is that old; and
        # LOGIN_MAX_FAILURES_PER_LOGIN for one login from anywhere: that login is refused for a
        # while, except in a browser it logged in from within LOGIN_KNOWN_BROWSER_DAYS (README)
        self.LOGIN_MAX_FAILURES = _int("LOGIN_MAX_FAILURES", 10, 1)
        self.LOGIN_MAX_FAILURES_PER_ADDRESS = _int("LOGIN_MAX_FAILURES_PER_ADDRESS", 100, 1)
        self.LOGIN_MAX_FAILURES_PER_LOGIN = _int("LOGIN_MAX_FAILURES_PER_LOGIN", 30, 1)
        self.LOGIN_LOCK_MINUTES = _int("LOGIN_LOCK_MINUTES", 15)
        self.LOGIN_KNOWN_BROWSER_DAYS = _int("LOGIN_KNOWN_BROWSER_DAYS", 90)
        # Behind HTTPS (production): the session cookie is only sent over TLS. `make run` serves
        # plain HTTP on loopback, so it is off unless set.
        secure = _one_of("SESSION_COOKIE_SECURE", "", ("1", "true", "yes", "on", "0", "false", "no", "off"), "off")
        self.SESSION_COOKIE_SECURE = secure.lower() in ("1", "true", "yes", "on")
        self.SESSION_COOKIE_SAMESITE = "Lax"
        # Reverse proxies in front of gunicorn (nginx: 1) whose X-Forwarded-For/-Proto are trusted:
        # the client's own address then counts failed logins, not the proxy's (0: none trusted)
        self.PROXY_HOPS = _int("PROXY_HOPS", 0)
        self.SMTP_HOST = env.get("SMTP_HOST", "")
        self.SMTP_PORT = _int("SMTP_PORT", 25, 1, 65535)
        self.SMTP_USER = env.get("SMTP_USER", "")
        self.SMTP_PASSWORD = env.get("SMTP_PASSWORD", "")
        # ssl (implicit TLS, port 465), starttls (TLS when offered; a password only over TLS),
        # none (plain; a password in clear, for a server on loopback). Default: ssl on 465.
        self.SMTP_SECURITY = _choice("SMTP_SECURITY", "", ("", "ssl", "starttls", "none"))
        self.MAIL_FROM = env.get("MAIL_FROM", "noreply@localhost")
        # Receipts above this amount (元) need two different finance users (four-eyes).
        self.FOUR_EYES_THRESHOLD = _decimal("FOUR_EYES_THRESHOLD", "50000.00")
        self.VOUCHER_MAX_BYTES = _int("VOUCHER_MAX_BYTES", 5 * 1024 * 1024, 1)
        # The provider's receiving bank when a contract does not name one (books: Assets:Bank:<code>).
        self.RECEIVING_BANK = _setting(
            "RECEIVING_BANK",
            "CMB",
            str.upper,
            "应为 2–16 位大写字母或数字、以字母开头的银行代码（如 CMB）",
            BANK_CODE.fullmatch,
        )
        # Intake of messages (issue 5): parts per message, recipients per request, longest run of
        # consecutive numbers (号码段群发), violations before the blacklist, burst the rate limiter
        # tolerates (seconds of the account's rate), how long a queued message stays valid, and
        # the replies that unsubscribe a number.
        self.MAX_SEGMENTS = _int("MAX_SEGMENTS", 6, 1)
        self.MAX_RECIPIENTS = _int("MAX_RECIPIENTS", 1000, 1)
        self.MAX_CONSECUTIVE_NUMBERS = _int("MAX_CONSECUTIVE_NUMBERS", 10, 1)
        self.BLACKLIST_AFTER_VIOLATIONS = _int("BLACKLIST_AFTER_VIOLATIONS", 3)
        self.RATE_BURST_SECONDS = _int("RATE_BURST_SECONDS", 10)
        self.MESSAGE_VALIDITY_HOURS = _int("MESSAGE_VALIDITY_HOURS", 48, 1)
        self.UNSUBSCRIBE_WORDS = env.get("UNSUBSCRIBE_WORDS", "TD,T,退订,R,拒收")
        # Room for the largest voucher and the form around it (a review: a fixed 16 MiB refused
        # a 17 MiB voucher VOUCHER_MAX_BYTES allowed).
        self.MAX_CONTENT_LENGTH = max(16 * 1024 * 1024, self.VOUCHER_MAX_BYTES + 1024 * 1024)
        # A form's text field may be as large as the request: werkzeug's own 500 KB refused a
        # signature the form keeps as a data URI (an uploaded image up to 2 MB), with a 413 that
        # spoke of the 16 MB limit (found by fuzzing). MAX_CONTENT_LENGTH still bounds the body.
        self.MAX_FORM_MEMORY_SIZE = self.MAX_CONTENT_LENGTH
        self.WTF_CSRF_TIME_LIMIT = None
        self.SQLALCHEMY_ENGINE_OPTIONS: dict[str, object] = {}
        self.BABEL_DEFAULT_LOCALE = "zh_CN"
        self.TIMEZONE = "Asia/Shanghai"
        for key, value in overrides.items():
            setattr(self, key, value)
        sources_apart(str(self.SMSC_DEFAULT_SOURCE), str(self.SMSC_NOTICE_SOURCE))

    def as_mapping(self) -> dict[str, object]:
        return {k: v for k, v in vars(self).items() if k.isupper()}
