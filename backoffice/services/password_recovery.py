"""A customer's forgotten password, recovered by SMS to the account's reserved mobile (002 §5(5):
"a lost password is sent within 2 hours by SMS to the reserved mobile"). Found by an exploratory
test: the portal had no way back in but a call to the provider.

The code is not stored: it is an HMAC of the login, its current password hash and a 10-minute
window under the installation's secret key, accepted in its window and the next. Setting a new
password changes the hash, so a code works once; asking for a code changes nothing (a stranger
asking for one cannot lock the owner out), and at most one SMS a window goes to the mobile."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import to_local
from backoffice.errors import ValidationFailed
from backoffice.models import SubAccount
from backoffice.services import audit
from backoffice.services.accounts import hash_password
from backoffice.services.notifications import queue, sms_address
from backoffice.services.passwords import forget_failed_logins, password_problem, renew_session_nonce

CODE_MINUTES = 10
WRONG_CODE = "验证码不正确或已过期：请核对短信，或重新获取验证码"


def _window(now: datetime) -> int:
    return int(now.timestamp()) // (CODE_MINUTES * 60)


def recovery_code(secret: str, sub: SubAccount, window: int) -> str:
    """The six digits that let `sub` set a new password during `window` (and the next)."""
    message = f"password-recovery|{sub.login}|{sub.password_hash}|{window}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"


def _login(session: Session, login: str) -> SubAccount | None:
    sub = session.scalar(sa.select(SubAccount).where(SubAccount.login == login.strip()))
    if sub is None or not sub.active or sub.account.status == "closed":
        return None
    return sub


def send_recovery_code(session: Session, login: str, *, secret: str, now: datetime) -> None:
    """Queue the code by SMS to the account's mobile (its reserved mobile, else the contract's
    phone when that is a mobile), once a window; nothing for an unknown login or an account
    without a mobile. The caller answers the same either way (no telling which logins exist)."""
    sub = _login(session, login)
    mobile = sms_address(sub.account) if sub is not None else None
    if sub is None or mobile is None:
        return
    window = _window(now)
    until = to_local(datetime.fromtimestamp((window + 2) * CODE_MINUTES * 60, UTC))  # the end of the next window
    body = (
        f"您的客户门户登录名 {sub.login} 正在找回密码，验证码 {recovery_code(secret, sub, window)}，"
        f"{until:%H:%M} 前有效。如非本人操作，请忽略本短信，您的密码不会改变。"
    )
    # At once, at any hour: the customer is waiting for it (the notices' 09:00 would hold it all night).
    queue(
        session, key=f"password-recovery:{sub.id}:{window}", channel="sms", recipient=mobile, body=body, account=sub.account, at_once=True
    )


def reset_with_code(session: Session, login: str, code: str, new: str, confirm: str, *, secret: str, now: datetime) -> SubAccount:
    """Set the login's new password when `code` is the one sent this window or the last;
    ValidationFailed names the field that is wrong. Every session of the login ends."""
    sub = _login(session, login)
    window = _window(now)
    given = code.strip()
    if sub is None or not any(hmac.compare_digest(given, recovery_code(secret, sub, w)) for w in (window, window - 1)):
        raise ValidationFailed({"code": WRONG_CODE})
    problem = password_problem(new, login=sub.login, staff=False)
    if problem:
        raise ValidationFailed({"new": problem})
    if new != confirm:
        raise ValidationFailed({"confirm": "两次输入的新密码不一致"})
    sub.password_hash = hash_password(new)
    sub.must_change_password = False
    renew_session_nonce(sub)
    forget_failed_logins(session, sub)
    audit.record(session, f"sub:{sub.login}", "recover_password", "sub_account", sub.login)
    return sub
