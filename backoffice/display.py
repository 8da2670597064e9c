"""How stored identifiers read on a page: who did something (`staff:finance`, `sub:E000003`,
`cli:root`), which template a contract came from, where a notification went. The stored values
stay as they are (they are the audit trail); only what a person reads is Chinese. Registered as
Jinja filters in `create_app`, so every page says it the same way (found by an exploratory test:
pages showed `staff:finance`, `enterprise_sms_center`, `dispatcher: message 1`)."""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask import Flask, g, has_app_context

from backoffice.extensions import db
from backoffice.models.staff import ROLES, StaffUser

#: The processes that act by themselves, as `system:<name>` or by their bare name.
SYSTEM_ACTORS = {"intake": "短信受理", "scheduler": "定时任务", "dispatcher": "发送程序", "demo": "演示数据"}


def _staff_names() -> dict[str, tuple[str, str]]:
    """username -> (display name, role), read once per request: a list of 200 receipts asks once."""
    cached = g.get("_staff_names") if has_app_context() else None
    if cached is None:
        rows = db.session.execute(sa.select(StaffUser.username, StaffUser.display_name, StaffUser.role))
        cached = {username: (name, role) for username, name, role in rows}
        if has_app_context():
            g._staff_names = cached
    return cached


def staff_name(username: str, display_name: str | None, role: str | None) -> str:
    """`王芳（finance，财务）`, or `finance（财务）` when the name is the username."""
    role_name = ROLES.get(role or "", role or "")
    if display_name and display_name != username:
        return f"{display_name}（{username}，{role_name}）" if role_name else f"{display_name}（{username}）"
    return f"{username}（{role_name}）" if role_name else username


def actor_name(actor: str | None) -> str:
    """Who an actor string is, in words: a staff user by name and role, a customer by account or
    login, the command line by its operating-system user, a process by what it does."""
    if not actor:
        return ""
    kind, sep, who = actor.partition(":")
    if not sep:
        return f"系统（{SYSTEM_ACTORS[actor]}）" if actor in SYSTEM_ACTORS else ("命令行" if actor == "cli" else actor)
    if kind == "staff":
        known = _staff_names().get(who)
        return staff_name(who, *known) if known else f"员工 {who}"
    if kind == "sub":
        return f"客户 {who}"
    if kind == "cli":
        return f"命令行（{who}）"
    if kind == "system":
        return f"系统（{SYSTEM_ACTORS.get(who, who)}）"
    return actor


def template_title(template_id: str | None) -> str:
    """`000 企业短信中心销售及短信服务合同` for `enterprise_sms_center`; an unknown id as it is."""
    from backoffice.errors import NotFound
    from backoffice.services.templates import get_template

    if not template_id:
        return ""
    try:
        template = get_template(template_id)
    except NotFound:
        return template_id
    return f"{template.code} {template.title}".strip()


_DISPATCHER = re.compile(r"dispatcher: message (\d+)")
_SMTP = re.compile(r"(smtps?)://(.+)")


def delivery_name(delivered_to: str | None) -> str:
    """Where a notification went (`Notification.delivered_to`), in words."""
    if not delivered_to:
        return ""
    if match := _DISPATCHER.fullmatch(delivered_to):
        return f"已交调度程序发送（短信 #{match.group(1)}）"
    if match := _SMTP.fullmatch(delivered_to):
        return f"已交邮件服务器 {match.group(2)}{'（加密连接）' if match.group(1) == 'smtps' else ''}"
    return f"已写入发件箱：{delivered_to}"


def register(app: Flask) -> None:
    app.jinja_env.filters["actor"] = actor_name
    app.jinja_env.filters["template_title"] = template_title
    app.jinja_env.filters["delivery"] = delivery_name

    @app.teardown_request
    def _forget_staff_names(_error: BaseException | None) -> None:
        # An app context may serve several requests (tests, scripts): a name changed meanwhile shows.
        g.pop("_staff_names", None)
