"""Passwords of logins (staff users and customers' sub-accounts): the policy every new password
meets, changing one, and the session nonce that a change or a logout renews."""

from __future__ import annotations

import secrets
import unicodedata

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from backoffice.errors import ValidationFailed
from backoffice.models import LoginFailure, StaffUser, SubAccount
from backoffice.services import audit
from backoffice.services.accounts import hash_password, new_password

MIN_LENGTH = 8
MAX_LENGTH = 128


def password_problem(password: str, *, login: str) -> str | None:
    """Why `password` cannot be a login's password, in Chinese; None if it can."""
    if len(password) < MIN_LENGTH or len(password) > MAX_LENGTH:
        return f"密码应为 {MIN_LENGTH}–{MAX_LENGTH} 个字符"
    if not password.strip() or any(unicodedata.category(c).startswith("C") for c in password):
        return "密码不能全是空格，也不能含控制字符"
    if password.strip().lower() == login.strip().lower():
        return "密码不能与登录名相同"
    if len(set(password)) < 4:
        return "密码过于简单：请至少使用 4 个不同的字符"
    return None


def renew_session_nonce(login: StaffUser | SubAccount) -> None:
    """Sessions carry the nonce in their user id (backoffice.auth): a new one ends every session
    opened before, copies of its cookie included."""
    login.session_nonce = secrets.token_hex(16)


def _named(login: StaffUser | SubAccount) -> tuple[str, str]:
    """(audit object type, name) of a login."""
    return ("staff_user", login.username) if isinstance(login, StaffUser) else ("sub_account", login.login)


def change_password(session: Session, login: StaffUser | SubAccount, *, current: str, new: str, confirm: str, actor: str) -> None:
    """The logged-in person changes their own password: the current one is asked again."""
    kind, name = _named(login)
    errors: dict[str, str] = {}
    if not check_password_hash(login.password_hash, current):
        errors["current"] = "当前密码不正确"
    problem = password_problem(new, login=name)
    if problem:
        errors["new"] = problem
    elif new == current:
        errors["new"] = "新密码不能与当前密码相同"
    elif new != confirm:
        errors["confirm"] = "两次输入的新密码不一致"
    if errors:
        raise ValidationFailed(errors)
    login.password_hash = hash_password(new)
    login.must_change_password = False
    renew_session_nonce(login)
    audit.record(session, actor, "change_password", kind, name)


def reset_password(session: Session, login: StaffUser | SubAccount, *, actor: str) -> str:
    """A forgotten password: a new random one, shown once to the administrator who passes it on;
    the login must change it at the next login. Every session of the login ends."""
    password = new_password()
    login.password_hash = hash_password(password)
    login.must_change_password = True
    renew_session_nonce(login)
    forget_failed_logins(session, login)
    audit.record(session, actor, "reset_password", *_named(login))
    return password


def failed_login_key(username: str) -> str:
    """The name failed logins are counted under (`login_failures.login`): as typed, case folded."""
    return username.strip().casefold()[:100]


def forget_failed_logins(session: Session, login: StaffUser | SubAccount) -> None:
    """An administrator's reset (or re-enabling) lets the login in at once, wherever it failed from."""
    failures = LoginFailure.__table__
    name = login.username if isinstance(login, StaffUser) else login.login
    session.execute(sa.delete(failures).where(failures.c.login == failed_login_key(name)))


def set_active(session: Session, login: StaffUser, *, active: bool, actor: str, by: StaffUser | None = None) -> bool:
    """A staff user leaves (or returns): an inactive one cannot log in, its sessions end at once.
    Nobody disables themselves or the last active administrator. False if it was so already."""
    from backoffice.services.staff import check_may_disable, lock_for_change

    lock_for_change(session, login)
    if login.active == active:
        return False
    if not active:
        check_may_disable(session, login, by=by)
    login.active = active
    renew_session_nonce(login)
    if active:
        forget_failed_logins(session, login)
    audit.record(session, actor, "enable_staff_user" if active else "disable_staff_user", "staff_user", login.username)
    return True
