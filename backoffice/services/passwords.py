"""Passwords of logins (staff users and customers' sub-accounts): the policy every new password
meets, changing one, and the session nonce that a change or a logout renews."""

from __future__ import annotations

import secrets
import string
import unicodedata

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from backoffice.errors import ValidationFailed
from backoffice.models import LoginFailure, StaffUser, SubAccount
from backoffice.services import audit
from backoffice.services.accounts import hash_password, new_password

MIN_LENGTH = 8  # a customer's login (its initial password is generated, 12 characters)
STAFF_MIN_LENGTH = 10  # a staff user's: finance moves money, administrators manage everything
MAX_LENGTH = 128

# Runs of keys people type as a password: rows and columns of the keyboard and the keypad, the
# alphabet and the digits. A password that is a stretch of one (or of one backwards) is refused.
_KEY_RUNS = (
    "abcdefghijklmnopqrstuvwxyz", "01234567890", "qwertyuiop", "asdfghjkl;'", "zxcvbnm,./", "qwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik,9ol.0p;/", "qazwsxedcrfvtgbyhnujmik,ol.p;/", "1q2w3e4r5t6y7u8i9o0p",
    "zaq1xsw2cde3vfr4bgt5nhy6mju7,ki8.lo9/;p0", "qawsedrftgyhujikolp;", "1a2b3c4d5e6f7g8h9i", "a1b2c3d4e5f6g7h8i9",
    "7894561230", "1472583690", "3692581470", "7418529630", "1593574862",
)  # fmt: skip
_SHIFTED = str.maketrans("!@#$%^&*()", "1234567890")  # 1QAZ@WSX is typed as 1qaz2wsx is
_LEET = str.maketrans("@4301!$5", "aaeoiiss")  # p@ssw0rd


def _is_key_run(text: str) -> bool:
    """A stretch of a keyboard run (either way), or letters and digits in steps of 1 or 2 (13579)."""
    if len(text) < 2:
        return len(text) == 1
    if any(text in run or text[::-1] in run for run in _KEY_RUNS):
        return True
    steps = {ord(b) - ord(a) for a, b in zip(text, text[1:], strict=False)}
    return len(steps) == 1 and steps <= {-2, -1, 1, 2}


def _is_repeat(text: str) -> bool:
    """One character or a short unit over and over: aaaaaaaa, 12121212, abcabcab."""
    return any(all(text[i] == text[i - period] for i in range(period, len(text))) for period in range(1, len(text) // 2 + 1))


def _is_trivial(text: str) -> bool:
    """Typed without choosing: a key run, a repeat, each character doubled (11223344)."""
    if _is_key_run(text) or _is_repeat(text):
        return True
    return len(text) >= 4 and len(text) % 2 == 0 and text[::2] == text[1::2] and _is_trivial(text[::2])


def _runs(text: str) -> list[str]:
    """`text` cut where it goes from letters to digits to other characters (abcd1234 -> abcd, 1234)."""
    kinds = ["a" if c.isalpha() else "1" if c.isdigit() else "." for c in text]
    cuts = [0] + [i for i in range(1, len(text)) if kinds[i] != kinds[i - 1]] + [len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


def guessable(password: str) -> str | None:
    """Why `password` is among the first an attacker tries, in Chinese; None if it is not."""
    from backoffice.services.common_passwords import COMMON_PASSWORDS, COMMON_WORDS

    typed = unicodedata.normalize("NFKC", password).casefold()  # full-width １２３４５６７８ is 12345678
    keys = typed.translate(_SHIFTED)
    if typed in COMMON_PASSWORDS or keys in COMMON_PASSWORDS:
        return "这个密码太常见（在常用密码名单中），很容易被猜中：请换一个"
    runs = _runs(keys)
    if _is_trivial(keys) or (len(runs) <= 3 and all(_is_trivial(run) for run in runs)):
        return "密码只是连续或重复的字母、数字或键盘按键（如 12345678、abcd1234、qwertyui、1qaz2wsx），很容易被猜中：请换一个"
    word = typed.strip(string.digits + string.punctuation + " ")
    if word and (word in COMMON_WORDS or word.translate(_LEET) in COMMON_WORDS):
        return "密码只是一个常用的单词或拼音加上数字或符号（如 Admin@123、woaini1314），很容易被猜中：请换一个"
    return None


def password_problem(password: str, *, login: str, staff: bool) -> str | None:
    """Why `password` cannot be a login's password, in Chinese; None if it can. A staff user's
    (`staff`) is at least STAFF_MIN_LENGTH long, a customer's login's MIN_LENGTH. Found by a
    review: 12345678, password, qwertyui and abcd1234 were accepted for finance users."""
    shortest = STAFF_MIN_LENGTH if staff else MIN_LENGTH
    if len(password) < shortest or len(password) > MAX_LENGTH:
        return f"{'员工账号的' if staff else ''}密码应为 {shortest}–{MAX_LENGTH} 个字符"
    if not password.strip() or any(unicodedata.category(c).startswith("C") for c in password):
        return "密码不能全是空格，也不能含控制字符"
    if password.strip().lower() == login.strip().lower():
        return "密码不能与登录名相同"
    if len(set(password)) < 4:
        return "密码过于简单：请至少使用 4 个不同的字符"
    return guessable(password)


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
    problem = password_problem(new, login=name, staff=isinstance(login, StaffUser))
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
