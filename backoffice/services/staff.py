"""Staff users: creation and login."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from backoffice.errors import Conflict, ValidationFailed
from backoffice.models import StaffUser
from backoffice.models.staff import ROLES
from backoffice.services import audit
from backoffice.services.accounts import hash_password


def create_staff_user(session: Session, username: str, display_name: str, password: str, role: str, *, actor: str) -> StaffUser:
    from backoffice.services.passwords import password_problem

    username = username.strip()
    errors = {}
    if not username or len(username) > 64 or not username.isprintable():
        errors["username"] = "用户名应为 1–64 个可打印字符"
    if len(display_name or "") > 64 or not (display_name or "x").isprintable():
        errors["name"] = "姓名最多 64 个可打印字符"
    if problem := password_problem(password, login=username):
        errors["password"] = problem
    if role not in ROLES:
        errors["role"] = "角色应为 " + "/".join(ROLES)
    if errors:
        raise ValidationFailed(errors)
    if session.scalar(sa.select(StaffUser).where(StaffUser.username == username)):
        raise Conflict(f"用户名已存在：{username}")
    user = StaffUser(username=username, display_name=display_name or username, password_hash=hash_password(password), role=role)
    session.add(user)
    audit.record(session, actor, "create_staff_user", "staff_user", username, role=role)
    return user


def authenticate_staff(session: Session, username: str, password: str) -> StaffUser | None:
    user = session.scalar(sa.select(StaffUser).where(StaffUser.username == username.strip()))
    if user is None or not user.active:
        check_password_hash(hash_password("x"), password)
        return None
    return user if check_password_hash(user.password_hash, password) else None
