"""Logins: staff (sales, finance, admin) and customers' sub-accounts, through one Flask-Login
session whose id says which kind it is."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, Response, abort, after_this_request, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import undefer
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired

from backoffice.clock import utcnow
from backoffice.errors import ValidationFailed
from backoffice.extensions import db, login_manager
from backoffice.models import EndedSession, LoginFailure, StaffUser, SubAccount
from backoffice.services import audit
from backoffice.services.accounts import authenticate_sub_account
from backoffice.services.passwords import MIN_LENGTH, STAFF_MIN_LENGTH, change_password, failed_login_key, password_problem
from backoffice.services.sql import insert_ignoring_conflict
from backoffice.services.staff import authenticate_staff

bp = Blueprint("auth", __name__)
login_manager.login_view = "auth.login"
login_manager.blueprint_login_views = {"portal": "auth.portal_login"}  # customers to their own login, not the staff one
login_manager.login_message = "请先登录"
SESSION_TOKEN = "_token"  # this login session's own id: its logout ends it (EndedSession)
SESSION_STARTED = "_started"  # when it logged in (epoch seconds): PERMANENT_SESSION_LIFETIME counts from here
# Why the password typed at this session's login fails today's rules (password_problem), if it
# does: the session changes it before anything else. Kept in the session, not on the login's row:
# only the login request has the password to judge, every login judges it again, and
# must_change_password says something else (a password somebody else set).
SESSION_WEAK_PASSWORD = "_weak_password"


class Principal(UserMixin):
    """The logged-in person: a staff user or a customer's sub-account."""

    def __init__(self, kind: str, record: StaffUser | SubAccount) -> None:
        self.kind = kind
        self.record = record

    def get_id(self) -> str:
        # The nonce changes at logout and at a password change: older sessions no longer load.
        return f"{self.kind}:{self.record.id}:{self.record.session_nonce or ''}"

    @property
    def role(self) -> str:
        return self.record.role if isinstance(self.record, StaffUser) else "customer"

    @property
    def name(self) -> str:
        return self.record.display_name if isinstance(self.record, StaffUser) else self.record.login

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.record.username if isinstance(self.record, StaffUser) else self.record.login}"


@login_manager.user_loader
def _load(user_id: str) -> Principal | None:
    kind, _, rest = user_id.partition(":")
    ident, sep, nonce = rest.partition(":")
    model = {"staff": StaffUser, "sub": SubAccount}.get(kind)
    if model is None or not ident.isdigit() or not sep or len(ident) > 18:
        return None
    record = db.session.get(model, int(ident), options=[undefer(model.session_nonce), undefer(model.must_change_password)])
    if record is None or not record.active or not hmac.compare_digest(record.session_nonce or "", nonce):
        return None
    if isinstance(record, SubAccount) and record.account.status == "closed":
        return None  # closed: its sessions end at once, as its logins are refused
    token, started = session.get(SESSION_TOKEN), session.get(SESSION_STARTED)
    if not isinstance(token, str) or not isinstance(started, (int, float)):
        return None  # from before session tokens
    # An absolute limit from the login, however often the cookie was signed again since (a
    # logged-out copy is re-signed by the redirect it gets): so an ended token need only be
    # remembered that long.
    if time.time() - started > current_app.permanent_session_lifetime.total_seconds():
        return None
    if db.session.get(EndedSession, token) is not None:
        return None  # logged out: a copy of its cookie
    return Principal(kind, record)


def _start_session(principal: Principal) -> None:
    """Log in with a token of this session's own, which its logout ends (and only it)."""
    session[SESSION_TOKEN] = secrets.token_hex(16)
    session[SESSION_STARTED] = time.time()
    login_user(principal)


def roles_required(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def safe_next(target: str | None) -> str | None:
    """Only a path on this site: no scheme, no host, no protocol-relative `//host`."""
    if not target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):  # urlsplit drops CR/LF silently
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target:
        return None
    return target


def address_key(remote: str | None) -> str:
    """The address failed logins are counted under: an IPv4 address as it is, an IPv6 address
    by its /64. Found by a review: one subscriber gets a whole /64 (2^64 addresses), so counting
    each IPv6 address apart gave 40 addresses 400 guesses at one login in 15 minutes."""
    text = (remote or "").strip()
    try:
        address = ipaddress.ip_address(text.partition("%")[0])  # (a zone: fe80::1%eth0)
    except ValueError:
        return text[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _login_key(username: str) -> tuple[str, str]:
    return failed_login_key(username), address_key(request.remote_addr)


KNOWN_BROWSER_COOKIE = "known_logins"


def _known_browser_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt="backoffice.auth.known-logins")


def _known_logins() -> list[str]:
    """The logins this browser logged in as within LOGIN_KNOWN_BROWSER_DAYS, with the password
    they have now (as `_browser_token`s, from a cookie this site signed)."""
    cookie = request.cookies.get(KNOWN_BROWSER_COOKIE)
    if not cookie:
        return []
    try:
        known = _known_browser_serializer().loads(cookie, max_age=current_app.config["LOGIN_KNOWN_BROWSER_DAYS"] * 86400)
    except BadSignature:  # (a SignatureExpired too)
        return []
    return [item for item in known if isinstance(item, str)][:10] if isinstance(known, list) else []


def _browser_token(kind: str, record: StaffUser | SubAccount) -> str:
    """What the known-logins cookie holds for a login: its kind, id and password hash, so a
    password reset (the owner's or an administrator's) ends every browser's exemption, and a
    staff user and a customer login that read alike are never each other's (found by a review:
    a digest of the name alone outlived a reset after a compromise, for 90 days)."""
    return hashlib.sha256(f"{kind}\0{record.id}\0{record.password_hash}".encode()).hexdigest()[:32]


def _known_browser(kind: str, username: str) -> bool:
    """Whether this browser logged in as `username` (of `kind`) with its present password."""
    known = _known_logins()
    if not known:
        return False
    model, column = (StaffUser, StaffUser.username) if kind == "staff" else (SubAccount, SubAccount.login)
    record = db.session.scalar(sa.select(model).where(column == username.strip()))
    return record is not None and _browser_token(kind, record) in known


def _remember_browser(kind: str, record: StaffUser | SubAccount) -> None:
    """This browser logged in as `record`: the limit on a login's failures from everywhere does
    not keep it out (the owner, however many guesses others make) while its password stays."""
    digest = _browser_token(kind, record)
    known = [digest, *(item for item in _known_logins() if item != digest)][:10]
    config = current_app.config

    @after_this_request
    def _set(response: Response) -> Response:
        response.set_cookie(
            KNOWN_BROWSER_COOKIE, _known_browser_serializer().dumps(known), max_age=config["LOGIN_KNOWN_BROWSER_DAYS"] * 86400,
            httponly=True, secure=config["SESSION_COOKIE_SECURE"], samesite="Lax",
        )  # fmt: skip
        return response


# LoginFailure.address of a wrong current password on the change-password page: counted per
# session (SESSION_FAILURES + a digest of its token), kept as long as a session lasts.
SESSION_FAILURES = "session:"
CURRENT_PASSWORD_MAX_FAILURES = 5


def _forget_old_failures(now: datetime) -> datetime:
    """Delete the failures that no longer count; the start of the window that does."""
    failures = LoginFailure.__table__
    since = now - timedelta(minutes=current_app.config["LOGIN_LOCK_MINUTES"])
    of_a_session = failures.c.address.startswith(SESSION_FAILURES, autoescape=True)
    done = sa.or_(
        sa.and_(~of_a_session, failures.c.failed_at < since),
        sa.and_(of_a_session, failures.c.failed_at < now - current_app.permanent_session_lifetime),
    )
    db.session.execute(sa.delete(failures).where(done))
    return since


def _record_attempt(login: str, address: str) -> datetime:
    """Count an attempt before its password is checked (simultaneous guesses all count), in a
    transaction of its own; the start of the window of failures that count."""
    now = utcnow()
    since = _forget_old_failures(now)
    db.session.execute(sa.insert(LoginFailure.__table__).values(login=login, address=address, failed_at=now))
    db.session.commit()
    return since


def _count_attempt(username: str) -> tuple[int, int, int]:
    """Count this attempt before its password is checked (simultaneous guesses all count): the
    failures within LOGIN_LOCK_MINUTES, this one included, of this login from this address, from
    this address for any login, and of this login from anywhere."""
    login, address = _login_key(username)
    failures = LoginFailure.__table__
    since = _record_attempt(login, address)  # (an attempt that succeeds takes its row away again)
    recent = sa.select(sa.func.count()).select_from(failures).where(failures.c.failed_at >= since)
    here = recent.where(failures.c.address == address)
    counts = (here.where(failures.c.login == login), here, recent.where(failures.c.login == login))
    return tuple(db.session.scalar(count) or 0 for count in counts)  # type: ignore[return-value]


def _attempt(kind: str, username: str) -> str | None:
    """Count this attempt, and say why it is refused: too many failures lately for this login
    from this address, or from this address for any login; or for this login from everywhere
    (guesses spread over many addresses), unless this browser logged in as it before. Another
    address's failures never lock a login's owner out of a browser they used."""
    config = current_app.config
    minutes = config["LOGIN_LOCK_MINUTES"]
    login_here, address, login_everywhere = _count_attempt(username)
    if login_here > config["LOGIN_MAX_FAILURES"] or address > config["LOGIN_MAX_FAILURES_PER_ADDRESS"]:
        return f"登录失败次数过多，请 {minutes} 分钟后再试"
    if login_everywhere > config["LOGIN_MAX_FAILURES_PER_LOGIN"] and not _known_browser(kind, username):
        return (
            f"该账号近期在多处登录失败次数过多，已暂时锁定，请 {minutes} 分钟后再试"
            "（在以前成功登录过的浏览器上仍可登录；急需时请联系管理员重置密码）"
        )
    return None


def _succeeded(username: str) -> None:
    """A login that succeeded starts its count from this address again (in the login's transaction)."""
    login, address = _login_key(username)
    failures = LoginFailure.__table__
    db.session.execute(sa.delete(failures).where(failures.c.login == login, failures.c.address == address))


class LoginForm(FlaskForm):
    username = StringField("用户名", validators=[DataRequired("请输入用户名")])
    password = PasswordField("密码", validators=[DataRequired("请输入密码")])


def _log_in(form: LoginForm, kind: str, authenticate: Callable[[Any, str, str], Any], wrong: str) -> Principal | None:
    """A submitted login form of either kind: the attempt counted, the password checked, the
    session started and audited; None (with the reason flashed) if refused."""
    username = form.username.data or ""
    refused = _attempt(kind, username)
    record = None if refused else authenticate(db.session, username, form.password.data or "")
    if refused or record is None:
        flash(refused or wrong, "error")
        return None
    _succeeded(username)
    _remember_browser(kind, record)
    principal = Principal(kind, record)
    _start_session(principal)
    name = record.username if isinstance(record, StaffUser) else record.login
    # Found by a review: a password set before today's rules (by older code, demo data, a
    # database from before password_problem) was never judged again and could be used forever.
    # It is judged here, as typed (the only time it is known), and changed before anything else.
    weak = password_problem(form.password.data or "", login=name, staff=kind == "staff")
    if weak:
        session[SESSION_WEAK_PASSWORD] = weak
    else:
        session.pop(SESSION_WEAK_PASSWORD, None)
    detail = {"weak_password": True} if weak else {}
    audit.record(db.session, principal.actor, "login", "staff_user" if kind == "staff" else "sub_account", name, **detail)
    db.session.commit()
    return principal


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit() and (user := _log_in(form, "staff", authenticate_staff, "用户名或密码错误")) is not None:
        home = url_for("finance.books") if user.role == "finance" else url_for("sales.index")
        return redirect(safe_next(request.args.get("next")) or home)
    return render_template(
        "login.html", form=form, title="员工登录", action=url_for("auth.login", next=safe_next(request.args.get("next")))
    )


@bp.route("/portal/login", methods=["GET", "POST"])
def portal_login() -> Any:
    form = LoginForm()
    if form.validate_on_submit() and _log_in(form, "sub", authenticate_sub_account, "企业号/子号或密码错误") is not None:
        return redirect(safe_next(request.args.get("next")) or url_for("portal.home"))
    # The form posts back with `next` (found by a review: a browser landed on the home page, not the page it asked for).
    action = url_for("auth.portal_login", next=safe_next(request.args.get("next")))
    return render_template("login.html", form=form, title="客户登录（企业号 / 子号）", action=action)


def _end_session() -> str:
    """End this session, a copy of its cookie with it (the login's other sessions go on), and
    commit; the login page to go to."""
    token = session.get(SESSION_TOKEN)
    customer = current_user.is_authenticated and current_user.kind == "sub"
    if current_user.is_authenticated and isinstance(token, str):
        now = utcnow()
        db.session.execute(sa.delete(EndedSession).where(EndedSession.ended_at < now - current_app.permanent_session_lifetime))
        ended = {"token": token, "ended_at": now}
        db.session.execute(insert_ignoring_conflict(db.session, EndedSession.__table__, ended, ["token"]))  # a double click
    db.session.commit()
    logout_user()
    session.pop(SESSION_TOKEN, None)
    session.pop(SESSION_STARTED, None)
    session.pop(SESSION_WEAK_PASSWORD, None)
    return url_for("auth.portal_login" if customer else "auth.login")


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    return redirect(_end_session())


class PasswordForm(FlaskForm):
    current = PasswordField("当前密码")
    new = PasswordField("新密码")
    confirm = PasswordField("再次输入新密码")


@bp.route("/password", methods=["GET", "POST"])
@login_required
def password() -> Any:
    """Change one's own password (staff and customers); a customer's first login comes here."""
    form = PasswordForm()
    errors: dict[str, str] = {}
    if form.validate_on_submit():
        wrong_so_far = _count_current_password_attempt()
        if wrong_so_far > CURRENT_PASSWORD_MAX_FAILURES:  # (simultaneous guesses: not checked)
            return _ended_for_wrong_current_passwords()
        try:
            change_password(
                db.session, current_user.record, current=form.current.data or "", new=form.new.data or "",
                confirm=form.confirm.data or "", actor=current_user.actor,
            )  # fmt: skip
        except ValidationFailed as failed:
            db.session.rollback()
            errors = failed.errors
            if "current" in errors and wrong_so_far >= CURRENT_PASSWORD_MAX_FAILURES:
                return _ended_for_wrong_current_passwords()
            if "current" not in errors:
                _current_password_right()
                db.session.commit()
        else:
            _current_password_right()
            db.session.commit()
            login_user(Principal(current_user.kind, current_user.record))  # this session goes on under the new nonce (same token)
            session.pop(SESSION_WEAK_PASSWORD, None)  # (the new one met password_problem)
            _remember_browser(current_user.kind, current_user.record)  # (the cookie holds the password's hash: found by a review)
            flash("密码已修改；其他已登录的会话需要重新登录", "ok")
            return redirect(url_for("auth.root"))
    first = current_user.record.must_change_password and current_user.role
    weak = session.get(SESSION_WEAK_PASSWORD)
    min_length = STAFF_MIN_LENGTH if current_user.kind == "staff" else MIN_LENGTH
    page = render_template("password.html", form=form, errors=errors, first=first, weak=weak, min_length=min_length)
    return page, (422 if errors else 200)


def _session_failures() -> tuple[str, str]:
    """(login, address) under which this session's wrong current passwords are counted."""
    record = current_user.record
    token = session.get(SESSION_TOKEN)
    digest = hashlib.sha256(str(token).encode()).hexdigest()[:32]
    return failed_login_key(record.username if isinstance(record, StaffUser) else record.login), SESSION_FAILURES + digest


def _count_current_password_attempt() -> int:
    """Count this session's attempt before its current password is checked (as a login attempt
    is); the attempts of this session that were not (yet) found right, this one included. They
    count against the login's failures from everywhere (LOGIN_MAX_FAILURES_PER_LOGIN) too."""
    login, address = _session_failures()
    failures = LoginFailure.__table__
    _record_attempt(login, address)
    count = sa.select(sa.func.count()).select_from(failures).where(failures.c.login == login, failures.c.address == address)
    return db.session.scalar(count) or 0


def _current_password_right() -> None:
    """The current password was right: this session's count starts again (in the caller's transaction)."""
    login, address = _session_failures()
    failures = LoginFailure.__table__
    db.session.execute(sa.delete(failures).where(failures.c.login == login, failures.c.address == address))


def _ended_for_wrong_current_passwords() -> Any:
    """Found by a review: someone holding a session (a PC left unlocked) could guess the current
    password on the change-password page without limit, then change it, locking the owner out.
    After CURRENT_PASSWORD_MAX_FAILURES wrong ones the session ends; logging in again is held
    to the login limits, which these attempts count against too."""
    kind = "staff_user" if current_user.kind == "staff" else "sub_account"
    record = current_user.record
    audit.record(
        db.session, current_user.actor, "end_session_wrong_password", kind, record.username if kind == "staff_user" else record.login
    )
    page = _end_session()
    flash(f"修改密码时当前密码连续输错 {CURRENT_PASSWORD_MAX_FAILURES} 次，为安全起见已退出登录，请重新登录", "error")
    return redirect(page)


@bp.before_app_request
def _initial_password_first() -> Any:
    """A login still on a password somebody else set (a customer's issued with the contract, a
    staff user's made or reset by an administrator), or logged in with one that fails today's
    rules (SESSION_WEAK_PASSWORD), changes it before anything else. API keys are not held up."""
    if (
        current_user.is_authenticated
        and (current_user.record.must_change_password or session.get(SESSION_WEAK_PASSWORD))
        and request.endpoint not in ("auth.password", "auth.logout", "static")
        and not request.path.startswith("/api/")
    ):
        return redirect(url_for("auth.password"))
    return None


@bp.route("/")
def root() -> Any:
    if current_user.is_authenticated:
        home = {"customer": "portal.home", "finance": "finance.books"}.get(current_user.role, "sales.index")
        return redirect(url_for(home))
    return redirect(url_for("auth.login"))
