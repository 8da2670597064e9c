"""Enterprise accounts (企业号) and sub-accounts (子号): opening, passwords, login."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from backoffice.errors import NotFound
from backoffice.models import EnterpriseAccount, SubAccount
from backoffice.services.numbering import next_number

# No 0/O, 1/l/I: an initial password is read off a screen and typed in.
PASSWORD_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789"
PASSWORD_HASH = "scrypt:16384:8:1"


def new_password(length: int = 12) -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def new_passwords(count: int) -> list[tuple[str, str]]:
    """`count` fresh initial passwords with their hashes."""
    return [(password, hash_password(password)) for password in (new_password() for _ in range(count))]


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=PASSWORD_HASH)


_NO_LOGIN_HASHES: dict[str, str] = {}  # PASSWORD_HASH -> the hash of a random password at that cost


def check_no_login(password: str) -> None:
    """Spend on a login that does not exist (or may not log in) what checking a password against
    a login's hash costs: one scrypt, so the time of the answer does not tell which logins
    exist. Found by a review: hashing a dummy password and checking against it ran scrypt twice.
    The dummy hash is made once per cost setting, by the first such call, which spends its
    one scrypt on making it."""
    method = PASSWORD_HASH
    dummy = _NO_LOGIN_HASHES.get(method)
    if dummy is None:
        _NO_LOGIN_HASHES[method] = hash_password(secrets.token_hex(16))
        return
    check_password_hash(dummy, password)


@dataclass(frozen=True)
class OpenedLogin:
    login: str
    password: str  # shown once, never stored
    is_primary: bool


def allocate_account_code(session: Session) -> str:
    return f"E{next_number(session, 'account', 0):06d}"


def open_account(
    session: Session,
    *,
    code: str,
    customer_name: str,
    price_per_message: Decimal,
    sub_account_count: int,
    sms_signature: str | None = None,
    service_code: str | None = None,
    reserved_mobile: str | None = None,
    contact_email: str | None = None,
    contact_phone: str | None = None,
    passwords: Sequence[tuple[str, str]] | None = None,
) -> tuple[EnterpriseAccount, list[OpenedLogin]]:
    """The enterprise number with its own login plus `sub_account_count` sub-numbers, each with a
    fresh initial password returned once; only hashes are stored. `passwords`: (password, hash)
    made beforehand by `new_passwords`, outside the write lock (hashing is slow by design)."""
    made = list(passwords) if passwords is not None else new_passwords(sub_account_count + 1)
    if len(made) != sub_account_count + 1:
        raise ValueError(f"{len(made)} passwords for {sub_account_count + 1} logins")
    account = EnterpriseAccount(
        code=code,
        customer_name=customer_name,
        status="awaiting_payment",
        balance=Decimal(0),
        price_per_message=price_per_message,
        sms_signature=sms_signature,
        service_code=service_code,
        reserved_mobile=reserved_mobile,
        contact_email=contact_email,
        contact_phone=contact_phone,
    )
    names = [code] + [f"{code}-{i:02d}" for i in range(1, sub_account_count + 1)]
    logins = [OpenedLogin(name, password, n == 0) for n, (name, (password, _)) in enumerate(zip(names, made, strict=True))]
    for opened, (_, digest) in zip(logins, made, strict=True):
        account.sub_accounts.append(SubAccount(login=opened.login, password_hash=digest, is_primary=opened.is_primary))
    session.add(account)
    return account, logins


def get_account(session: Session, code: str) -> EnterpriseAccount:
    account = session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code))
    if account is None:
        raise NotFound(f"账户不存在：{code}")
    return account


def authenticate_sub_account(session: Session, login: str, password: str) -> SubAccount | None:
    """The sub-account these credentials open, or None (same answer for unknown login and bad password)."""
    sub = session.scalar(sa.select(SubAccount).where(SubAccount.login == login.strip()))
    if sub is None or not sub.active:
        check_no_login(password)  # the same cost either way
        return None
    # The password is checked for a closed account's login too: the same cost again.
    if not check_password_hash(sub.password_hash, password) or sub.account.status == "closed":
        return None
    return sub


def update_contact(
    session: Session, account_code: str, *, email: str | None = None, mobile: str | None = None, actor: str
) -> EnterpriseAccount:
    """Set the e-mail and the mobile number notices go to (all or nothing; "" clears one). For
    customers whose contract gave a landline only (000/001 ask for one phone and no e-mail):
    without either, their invoices, renewal and expiry notices can reach nobody."""
    from backoffice.errors import ValidationFailed
    from backoffice.services import audit
    from backoffice.services.contract_fields import email_address
    from dispatch.numbers import InvalidNumber, normalise_mobile

    account = get_account(session, account_code)
    errors: dict[str, str] = {}
    changes: dict[str, str | None] = {}
    if email is not None:
        try:
            changes["contact_email"] = email_address(email.strip()) if email.strip() else None
        except ValueError:
            errors["email"] = f"电子邮箱格式不正确：{email.strip()[:60]}（@ 前只能是英文字母、数字或 . _ - + 等符号）"
    if mobile is not None:
        try:
            changes["reserved_mobile"] = normalise_mobile(mobile) if mobile.strip() else None
        except InvalidNumber as bad:
            errors["mobile"] = bad.reason
    if errors:
        raise ValidationFailed(errors)
    for name, value in changes.items():
        setattr(account, name, value)
    if changes:
        from backoffice.services.notifications import readdress

        readdress(session, account)  # its notices not sent yet go to the new address
        audit.record(session, actor, "update_contact", "account", account.code, **{k: v or "" for k, v in changes.items()})
    return account
