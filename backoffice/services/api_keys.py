"""API keys of sub-accounts: made once (the secret is shown once), stored as a SHA-256, revoked."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import utcnow
from backoffice.errors import NotFound, ValidationFailed
from backoffice.models import ApiKey, EnterpriseAccount, SubAccount
from backoffice.services import audit

KEY_PREFIX = "sk_"
VISIBLE_CHARS = 11  # "sk_" + 8: enough to tell keys apart in a list, far too little to guess the rest
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is kept to the minute: no write on every call


def key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_api_key(session: Session, sub_account: SubAccount, *, label: str, actor: str) -> tuple[ApiKey, str]:
    """A new key for `sub_account`; returns the row and the secret, which is never stored."""
    label = label.strip()
    if len(label) > 80:
        raise ValidationFailed({"label": "备注最多 80 个字符"})
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


def revoke_api_key(session: Session, key_id: int, *, account_id: int, actor: str) -> ApiKey:
    """Revoke a key of the account (a key of another account is 'not found'); revoking twice is harmless."""
    key = session.get(ApiKey, key_id)
    if key is None or key.sub_account.account_id != account_id:
        raise NotFound("API 密钥不存在")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(session, actor, "revoke_api_key", "api_key", str(key.id), prefix=key.prefix)
    return key


def account_api_keys(session: Session, account_id: int) -> list[ApiKey]:
    query = sa.select(ApiKey).join(SubAccount).where(SubAccount.account_id == account_id).order_by(ApiKey.id.desc())
    return list(session.scalars(query))


def authenticate_api_key(session: Session, presented: str) -> ApiKey | None:
    """The live key `presented` is, or None: unknown, revoked, or of a disabled sub-account."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    key = session.scalar(sa.select(ApiKey).where(ApiKey.key_hash == key_digest(presented)))
    if key is None or key.revoked_at is not None or not key.sub_account.active:
        return None
    now = utcnow()
    if key.last_used_at is None or key.last_used_at < now - TOUCH_EVERY:
        table = ApiKey.__table__
        stale = sa.or_(table.c.last_used_at.is_(None), table.c.last_used_at < now - TOUCH_EVERY)
        session.execute(sa.update(table).where(table.c.id == key.id, stale).values(last_used_at=now))
    return key
