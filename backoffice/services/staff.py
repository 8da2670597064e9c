"""Staff users: creation, roles, leaving and returning, and login. The installation always keeps
an active administrator: the last one cannot be disabled or given another role."""

from __future__ import annotations

import re
import unicodedata

import sqlalchemy as sa
from sqlalchemy.orm import Session, undefer
from werkzeug.security import check_password_hash

from backoffice.errors import Conflict, NotFound, ValidationFailed
from backoffice.models import StaffUser
from backoffice.models.staff import ROLES
from backoffice.services import audit
from backoffice.services.accounts import check_no_login, hash_password

#: A new username: half-width (ASCII) letters and digits, and . _ - @ after the first. Found by a
#: review: letters of any script let "аdmin" (a Cyrillic а) or "admin\u200b" be made beside
#: "admin", a name a reader takes for the other. Names are typed at every login and read in the
#: audit log, where a Chinese name is the display name's. Existing users are not touched.
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
USERNAME_RULE = "用户名应为 1–64 个半角英文字母、数字或 . _ - @（以字母或数字开头），不能有空格、引号或其他符号"
#: A role that is none, refused in the roles' Chinese names: the web form is where it is met (the
#: command line offers the codes as a choice), found by an exploratory test ("角色应为 sales/finance/admin").
ROLE_REFUSAL = f"角色应为{'、'.join(list(ROLES.values())[:-1])}或{list(ROLES.values())[-1]}"


def create_staff_user(
    session: Session, username: str, display_name: str, password: str, role: str, *, actor: str, must_change: bool = False
) -> StaffUser:
    """A new staff user; `must_change`: the password was set for them (the web form's generated
    one), to be changed at the first login."""
    from backoffice.services.passwords import password_problem

    username = username.strip()
    errors = {}
    # Found by an exploratory test: "x y" and "robert'); DROP TABLE users;--" were taken, names
    # one mistypes at every login.
    if problem := username_problem(username):
        errors["username"] = problem
    if len(display_name or "") > 64 or not (display_name or "x").isprintable():
        errors["name"] = "姓名最多 64 个可打印字符"
    if problem := password_problem(password, login=username, staff=True):
        errors["password"] = problem
    if role not in ROLES:
        errors["role"] = ROLE_REFUSAL
    if errors:
        raise ValidationFailed(errors)
    if session.scalar(sa.select(StaffUser).where(StaffUser.username == username)):
        raise Conflict(f"用户名已存在：{username}")
    folded = folded_username(username)
    for other in session.scalars(sa.select(StaffUser.username)):
        if other == username:  # made since the check above (a double click)
            raise Conflict(f"用户名已存在：{username}")
        if folded_username(other) == folded:
            raise ValidationFailed({"username": f"用户名与已有的 {other} 只有大小写或全角/半角之差，容易混淆：请另取一个"})
    user = StaffUser(username=username, display_name=display_name or username, password_hash=hash_password(password), role=role)
    if must_change:
        user.must_change_password = True
    try:
        with session.begin_nested():  # the same name made meanwhile (a double click): refused, not a 500
            session.add(user)
    except sa.exc.IntegrityError:
        raise Conflict(f"用户名已存在：{username}") from None
    audit.record(session, actor, "create_staff_user", "staff_user", username, role=role)
    return user


def username_problem(username: str) -> str | None:
    """Why `username` cannot be a new staff user's name, in Chinese (naming a character that is
    not ASCII, which the reader cannot see or tell from another); None if it can."""
    if USERNAME.fullmatch(username):
        return None
    odd = next((c for c in username if not c.isascii()), None)
    if odd is None:
        return USERNAME_RULE
    name = unicodedata.name(odd, "")
    if unicodedata.east_asian_width(odd) == "F":
        kind = f"全角字符“{odd}”（请切换到半角输入）"
    elif not odd.isprintable() or unicodedata.category(odd) in ("Mn", "Me", "Cf"):
        kind = f"看不见的字符或组合符号 U+{ord(odd):04X}"
    elif name.startswith("CJK "):
        kind = f"汉字“{odd}”（中文姓名请填在姓名一栏）"
    else:
        kind = f"非英文字符“{odd}”（U+{ord(odd):04X} {name}，容易与英文字母或符号混淆）".replace(" ，", "，")
    return f"{USERNAME_RULE}：含有{kind}"


def folded_username(username: str) -> str:
    """What a username reads as: NFKC with case folded ("Admin", "ADMIN" and full-width
    "ａｄｍｉｎ" are all "admin"). Found by a review: such look-alikes could be made beside
    "admin", each its own login with its own role, and the audit log's actors (and the
    four-eyes check) showed names a reader takes for the same person. New usernames are
    refused when they fold to an existing one's (names made before USERNAME narrowed may be
    full-width); logging in stays exact, so every existing name logs in as it did."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def authenticate_staff(session: Session, username: str, password: str) -> StaffUser | None:
    user = session.scalar(sa.select(StaffUser).where(StaffUser.username == username.strip()))
    if user is None or not user.active:
        check_no_login(password)  # the same cost as a wrong password of a real login
        return None
    return user if check_password_hash(user.password_hash, password) else None


def list_staff(session: Session) -> list[StaffUser]:
    """Every staff user, active ones first, then by role and name."""
    order = sa.case({"admin": 0, "finance": 1, "sales": 2}, value=StaffUser.role)
    query = sa.select(StaffUser).options(undefer(StaffUser.must_change_password))
    return list(session.scalars(query.order_by(StaffUser.active.desc(), order, StaffUser.username)))


def get_staff(session: Session, ident: int | str) -> StaffUser:
    """A staff user by id or username; NotFound if there is none."""
    user = session.scalar(
        sa.select(StaffUser).where(StaffUser.id == ident if isinstance(ident, int) else StaffUser.username == ident.strip())
    )
    if user is None:
        raise NotFound(f"员工账号不存在：{ident}")
    return user


def lock_for_change(session: Session, user: StaffUser) -> None:
    """Before a change that may leave no administrator: lock the user's row and every active
    administrator's, in the order of their ids (PostgreSQL: two administrators acting on each
    other queue, not deadlock), or take the write lock (SQLite: one writer; what this transaction
    reads afterwards is the latest), then read the user again."""
    table = StaffUser.__table__
    if session.get_bind().dialect.name == "postgresql":
        which = sa.or_(table.c.id == user.id, sa.and_(table.c.role == "admin", table.c.active.is_(True)))
        session.execute(sa.select(table.c.id).where(which).order_by(table.c.id).with_for_update()).all()
    else:
        session.execute(sa.update(table).where(table.c.id == user.id).values(role=table.c.role))
    session.refresh(user)


def _keeps_an_admin(session: Session, user: StaffUser) -> None:
    """Refuse a change that would leave no active administrator (nobody could then manage users,
    keywords or the provider's identity from the web); the rows are locked (`lock_for_change`)."""
    admins = session.scalars(sa.select(StaffUser.id).where(StaffUser.role == "admin", StaffUser.active.is_(True))).all()
    if user.role == "admin" and user.active and set(admins) <= {user.id}:
        raise Conflict(f"{user.username} 是唯一启用的管理员：请先另设一名管理员")


def set_role(session: Session, user: StaffUser, role: str, *, actor: str, by: StaffUser | None = None) -> bool:
    """Give a staff user another role (it applies from their next request). False if unchanged."""
    if role not in ROLES:
        raise ValidationFailed({"role": ROLE_REFUSAL})
    lock_for_change(session, user)
    if role == user.role:
        return False
    if by is not None and by.id == user.id:
        raise Conflict("不能修改自己的角色：请另一名管理员操作")
    _keeps_an_admin(session, user)
    audit.record(session, actor, "set_staff_role", "staff_user", user.username, old=user.role, new=role)
    user.role = role
    return True


def active_message(user: StaffUser, *, active: bool, changed: bool) -> str:
    """What enabling or disabling a staff user did, as the web and the command line say it."""
    state = "启用" if active else "停用"
    return f"员工账号 {user.username} 已{state}" if changed else f"员工账号 {user.username} 本来就是{state}的，未做更改"


def check_may_disable(session: Session, user: StaffUser, *, by: StaffUser | None = None) -> None:
    """Refuse disabling oneself (the session would end mid-click) or the last active administrator."""
    if by is not None and by.id == user.id:
        raise Conflict("不能停用自己的账号")
    _keeps_an_admin(session, user)
