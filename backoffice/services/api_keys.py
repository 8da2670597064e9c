"""API keys of sub-accounts: made once (the secret is shown once), stored as a SHA-256, revoked.

Each web process keeps the keys it has checked for KEY_CACHE_SECONDS, so a request does not
read the key, its sub-account and its account again. What that means for revocation (or a
sub-account being disabled) done elsewhere:
- sending (`POST /api/v1/messages`) is never affected: intake checks the key and the
  sub-account again, inside its write transaction (`accept_messages(api_key_id=...)`);
- reads (status reports, balance) may still be answered for at most KEY_CACHE_SECONDS after
  the revocation commits in another process; a revocation made by this process (portal,
  command line, any ORM change to a key or sub-account) empties this process's cache at once.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from backoffice.clock import utcnow
from backoffice.errors import DomainError, NotFound, ValidationFailed
from backoffice.models import ApiKey, EnterpriseAccount, SubAccount
from backoffice.services import audit

KEY_PREFIX = "sk_"
VISIBLE_CHARS = 11  # "sk_" + 8: enough to tell keys apart in a list, far too little to guess the rest
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is kept to the minute: no write on every call
KEY_CACHE_SECONDS = 5.0  # the longest a revoked key can still read, in another process (see above)
KEY_CACHE_SIZE = 10_000  # keys per process; beyond that the cache starts again (unknown keys are never cached)


KEY_REFUSED = "API 密钥无效或已被吊销"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


@dataclass(frozen=True)
class KeySubAccount:
    """The sub-account a key speaks for, as plain values (what intake and the API need)."""

    id: int
    account_id: int
    login: str
    is_primary: bool = False  # the enterprise's own login: its key sees every sub-account's messages

    @property
    def message_scope(self) -> int | None:
        """The sub-account whose messages this key may read, or None for the whole account."""
        return None if self.is_primary else self.id


@dataclass(frozen=True)
class ApiCaller:
    """A live API key, as checked at `checked_at` (time.monotonic)."""

    key_id: int
    sub_account: KeySubAccount


def key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_api_key(session: Session, sub_account: SubAccount, *, label: str, actor: str) -> tuple[ApiKey, str]:
    """A new key for `sub_account`; returns the row and the secret, which is never stored."""
    label = label.strip()
    if len(label) > 80:
        raise ValidationFailed({"label": "备注最多 80 个字符"})
    # invisible, reversing the text around it, or a line break (U+2028/2029: found by a fuzzing round)
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in label):
        raise ValidationFailed({"label": "备注含有不可见的控制字符，请删除后重新提交"})
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(sub_account_id=sub_account.id, key_hash=key_digest(secret), prefix=secret[:VISIBLE_CHARS], label=label, created_by=actor)
    session.add(key)
    session.flush()
    audit.record(session, actor, "create_api_key", "api_key", str(key.id), sub_account=sub_account.login, prefix=key.prefix)
    return key, secret


def issue_api_key(session: Session, account_code: str, *, sub_login: str | None, label: str, actor: str) -> tuple[ApiKey, str]:
    """An administrator's key for an account: for the named sub-account, else the primary login."""
    account = session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == account_code))
    if account is None:
        raise NotFound(f"账户不存在：{account_code}")
    subs = [s for s in account.sub_accounts if (s.login == sub_login if sub_login else s.is_primary)]
    if not subs:
        raise NotFound(f"账户 {account_code} 下没有子号 {sub_login}" if sub_login else f"账户 {account_code} 没有主登录号")
    if not subs[0].active:
        raise ValidationFailed({"sub": f"子号 {subs[0].login} 已停用"})
    return create_api_key(session, subs[0], label=label, actor=actor)


def revoke_api_key(session: Session, key_id: int, *, account_id: int, actor: str, sub_account_id: int | None = None) -> ApiKey:
    """Revoke a key of the account, or only of that sub-account when `sub_account_id` is given (any
    other key is 'not found'); revoking twice is harmless."""
    key = session.get(ApiKey, key_id)
    if key is None or key.sub_account.account_id != account_id or sub_account_id not in (None, key.sub_account_id):
        raise NotFound("API 密钥不存在")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(session, actor, "revoke_api_key", "api_key", str(key.id), prefix=key.prefix)
    return key


def account_api_keys(session: Session, account_id: int, *, sub_account_id: int | None = None) -> list[ApiKey]:
    """The account's keys, newest first (only the sub-account's, when `sub_account_id` is given)."""
    query = sa.select(ApiKey).join(SubAccount).where(SubAccount.account_id == account_id)
    if sub_account_id is not None:
        query = query.where(ApiKey.sub_account_id == sub_account_id)
    return list(session.scalars(query.order_by(ApiKey.id.desc())))


@dataclass(frozen=True)
class _Cached:
    caller: ApiCaller
    checked_at: float  # time.monotonic()


_cache: dict[tuple[str, str], _Cached] = {}  # (database, key digest) -> the key as last checked
_touched: dict[tuple[str, int], datetime] = {}  # (database, key id) -> last_used_at as last written or read here
_cache_lock = threading.Lock()

_LIVE_KEY = (
    sa.select(ApiKey.__table__.c.id, SubAccount.__table__.c.id, SubAccount.__table__.c.account_id, SubAccount.__table__.c.login,
              ApiKey.__table__.c.last_used_at, SubAccount.__table__.c.is_primary)
    .select_from(ApiKey.__table__.join(SubAccount.__table__, SubAccount.__table__.c.id == ApiKey.__table__.c.sub_account_id)
                 .join(EnterpriseAccount.__table__, EnterpriseAccount.__table__.c.id == SubAccount.__table__.c.account_id))
    .where(ApiKey.__table__.c.key_hash == sa.bindparam("key_hash"), ApiKey.__table__.c.revoked_at.is_(None),
           SubAccount.__table__.c.active.is_(True), EnterpriseAccount.__table__.c.status != "closed")  # a closed account's keys are dead
)  # fmt: skip
_TOUCH = (
    sa.update(ApiKey.__table__)
    .where(
        ApiKey.__table__.c.id == sa.bindparam("key_id"),
        sa.or_(ApiKey.__table__.c.last_used_at.is_(None), ApiKey.__table__.c.last_used_at < sa.bindparam("stale_before")),
    )
    .values(last_used_at=sa.bindparam("now"))
)


def forget_api_keys() -> None:
    """Empty this process's key cache (a key or sub-account changed here)."""
    with _cache_lock:
        _cache.clear()


@event.listens_for(ApiKey, "after_update")
@event.listens_for(SubAccount, "after_update")
@event.listens_for(EnterpriseAccount, "after_update")  # (closed: its keys are dead)
def _key_or_sub_account_changed(_mapper: Any, _connection: Any, _target: Any) -> None:
    forget_api_keys()


def authenticate_api_key(session: Session, presented: str) -> ApiCaller | None:
    """The live key `presented` is, or None: unknown, revoked, or of a disabled sub-account.
    Served from this process's cache for up to KEY_CACHE_SECONDS (see the module docstring).
    Reads only: the caller records the use with `touch_api_key` inside its own transaction."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    digest = key_digest(presented)
    database = str(session.get_bind().engine.url)
    clock = time.monotonic()
    cached = _cache.get((database, digest))
    if cached is None or clock - cached.checked_at > KEY_CACHE_SECONDS:
        # A connection of its own, given back at once: the request's transaction does not begin
        # here (intake takes its turn before it begins, see messaging.intake_turn).
        with session.get_bind().engine.connect() as connection:
            row = connection.execute(_LIVE_KEY, {"key_hash": digest}).one_or_none()
        if row is None:
            _cache.pop((database, digest), None)
            return None
        key_id, sub_id, account_id, login, last_used_at, is_primary = row
        cached = _Cached(ApiCaller(key_id, KeySubAccount(sub_id, account_id, login, bool(is_primary))), clock)
        with _cache_lock:
            if len(_cache) >= KEY_CACHE_SIZE:
                _cache.clear()
                _touched.clear()
            _cache[(database, digest)] = cached
            if last_used_at is not None and last_used_at > _touched.get((database, key_id), last_used_at - TOUCH_EVERY):
                _touched[(database, key_id)] = last_used_at
    return cached.caller


def touch_api_key(session: Session, caller: ApiCaller) -> None:
    """Record that the key was used: last_used_at is kept to the minute, so this writes at most
    once a minute per key and process (and not at all when another process just did)."""
    now = utcnow()
    key = (str(session.get_bind().engine.url), caller.key_id)
    last = _touched.get(key)
    if last is None or last < now - TOUCH_EVERY:
        session.execute(_TOUCH, {"key_id": caller.key_id, "stale_before": now - TOUCH_EVERY, "now": now})
        _touched[key] = now
