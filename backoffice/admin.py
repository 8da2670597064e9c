"""Administration: the health of the message path (queue, dispatcher workers, problems); the outbox of notifications (what was sent, written to the outbox folder,
is waiting or failed), with the written e-mails readable and failed ones sent again; the
forbidden keyword list; each account's sending settings (rate, signature, blacklist); the
provider's identity and seal each template's contracts print."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user

from backoffice.auth import roles_required
from backoffice.clock import to_local, utcnow
from backoffice.errors import DomainError
from backoffice.extensions import db
from backoffice.finance import attempt
from backoffice.models import Notification
from backoffice.models.staff import ROLES
from backoffice.services import provider as provider_service
from backoffice.services import sending_settings as settings_service
from backoffice.services.accounts import get_account, new_password
from backoffice.services.dispatch_status import DispatchThresholds, forget_worker, status_from_config
from backoffice.services.keyword_list import WORD_MAX, list_keywords, split_keywords
from backoffice.services.messaging import add_keywords, remove_keywords, same_as_note
from backoffice.services.notifications import WITHDRAWN, requeue
from backoffice.services.passwords import reset_password, set_active
from backoffice.services.staff import active_message, create_staff_user, get_staff, list_staff, set_role
from backoffice.services.templates import get_template, list_templates
from reports.images import MAX_IMAGE_BYTES

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/outbox")
@roles_required("admin")
def outbox() -> Any:
    notes = db.session.scalars(sa.select(Notification).order_by(Notification.id.desc()).limit(200)).all()
    folder = Path(current_app.config["OUTBOX_PATH"])
    files = sorted((p for p in folder.glob("*.eml")), reverse=True)[:200] if folder.is_dir() else []
    # A pending notice not due yet (made at night, waiting for 09:00; a retry's wait) says from when.
    now = utcnow()
    due = {n.id: f"{to_local(n.next_attempt_at):%Y-%m-%d %H:%M} 起" for n in notes if n.status == "pending" and n.next_attempt_at > now}
    return render_template("admin/outbox.html", notes=notes, files=files, folder=folder, due=due, withdrawn=WITHDRAWN)


@bp.route("/outbox/<name>")
@roles_required("admin")
def outbox_file(name: str) -> Any:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}\.eml", name):  # the names the outbox writes
        abort(404)
    folder = Path(current_app.config["OUTBOX_PATH"]).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        abort(404)
    return send_file(path, mimetype="message/rfc822", as_attachment=True, download_name=path.name)


@bp.post("/outbox/<id32:note_id>/retry")
@roles_required("admin")
def outbox_retry(note_id: int) -> Any:
    try:
        note = requeue(db.session, note_id)
        db.session.commit()
        when = "" if note.next_attempt_at <= utcnow() else f"（客户通知只在白天发送：{to_local(note.next_attempt_at):%Y-%m-%d %H:%M} 起）"
        flash(f"通知 {note_id} 将重新发送{when}", "ok")
    except DomainError as error:
        db.session.rollback()
        flash(error.message, "error")
    return redirect(url_for("admin.outbox"))


# --- the message path's health ----------------------------------------------------------------


@bp.route("/dispatch")
@roles_required("admin")
def dispatch() -> Any:
    """The queue, each dispatcher worker as it last said it was, and what needs someone."""
    return render_template("admin/dispatch.html", status=status_from_config(db.session, current_app.config))


@bp.post("/dispatch/workers/<name>/forget")
@roles_required("admin")
def dispatch_forget_worker(name: str) -> Any:
    """Remove the row of a worker gone for good (refused while it runs)."""
    try:
        forget_worker(db.session, name, actor=current_user.actor, thresholds=DispatchThresholds.from_config(current_app.config))
        db.session.commit()
        flash(f"已移除发送进程 {name} 的记录", "ok")
    except DomainError as error:
        db.session.rollback()
        flash(error.message, "error")
    return redirect(url_for("admin.dispatch"))


# --- forbidden keywords ---------------------------------------------------------------------------


@bp.route("/keywords", methods=["GET", "POST"])
@roles_required("admin")
def keywords() -> Any:
    """The forbidden keyword list, and a form to add one or several words."""
    text = request.form.get("words", "")
    if request.method == "POST":
        result, errors = attempt(lambda: add_keywords(db.session, split_keywords(text), actor=current_user.actor))
        for message in errors.values():
            flash(message, "error")
        if not errors:
            if result.added:
                flash(f"新增 {len(result.added)} 个违禁词：{'、'.join(result.added)}", "ok")
            elif not result.same_as:
                flash("填写的违禁词均已在列表中，未做更改", "ok")
            if result.same_as:  # 發票 with 发票 listed: not added, and said so, since the list does not show it
                flash(same_as_note(result.same_as), "ok")
            return redirect(url_for("admin.keywords"))
    page = render_template("admin/keywords.html", keywords=list_keywords(db.session), text=text, word_max=WORD_MAX)
    return page, (422 if request.method == "POST" else 200)


@bp.post("/keywords/remove")
@roles_required("admin")
def keyword_remove() -> Any:
    word = request.form.get("word", "")
    removed, errors = attempt(lambda: remove_keywords(db.session, [word], actor=current_user.actor))
    for message in errors.values():
        flash(message, "error")
    if removed:
        flash(f"已删除违禁词：{removed[0]}", "ok")
    elif not errors:
        flash(f"违禁词不在列表中（可能已被删除）：{word.strip()}", "error")
    return redirect(url_for("admin.keywords"))


# --- accounts' sending settings ---------------------------------------------------------------


@bp.route("/accounts")
@roles_required("admin")
def accounts() -> Any:
    return render_template("admin/accounts.html", accounts=settings_service.list_accounts(db.session))


@bp.route("/accounts/<code>", methods=["GET", "POST"])
@roles_required("admin")
def account_settings(code: str) -> Any:
    """One account's sending settings and the form that changes them (the whole form is sent:
    an unticked box means "do not add the signature")."""
    form = request.form
    errors: dict[str, str] = {}
    if request.method == "POST":
        update, errors = attempt(
            lambda: settings_service.update_sending_settings(
                db.session, code, rate_limit_per_second=form.get("rate_limit_per_second", ""), sms_signature=form.get("sms_signature", ""),
                add_signature="add_signature" in form, actor=current_user.actor, version=form.get("version", ""),
            )
        )  # fmt: skip
        if update is not None:
            flash(settings_service.describe_changes(update), "ok")
            return redirect(url_for("admin.account_settings", code=code))
        for message in errors.values():
            flash(message, "error")
    account = get_account(db.session, code)
    saved = {
        "rate_limit_per_second": str(account.rate_limit_per_second), "sms_signature": account.sms_signature or "",
        "add_signature": "on" if account.add_signature else None,
    }  # fmt: skip
    # A form opened before another administrator saved: shown again with the saved settings (a
    # second click then cannot put the old ones back), what was typed beside the fields it differs in.
    stale = "version" in errors
    typed = {name: form.get(name) for name in saved if stale and form.get(name) != saved[name]}
    page = render_template(
        "admin/account.html", account=account, form=saved if stale or not errors else form, errors=errors, typed=typed,
        version=settings_service.settings_version(account), settings=settings_service,
        ended=settings_service.ended_contract(db.session, account) if account.status == "suspended" else None,
    )  # fmt: skip
    return page, (409 if stale else 422 if errors else 200)


@bp.post("/accounts/<code>/lift-blacklist")
@roles_required("admin")
def account_lift_blacklist(code: str) -> Any:
    update, errors = attempt(
        lambda: settings_service.update_sending_settings(db.session, code, lift_blacklist=True, actor=current_user.actor)
    )
    for message in errors.values():
        flash(message, "error")
    if update is not None:
        flash(settings_service.describe_changes(update), "ok")
    return redirect(url_for("admin.account_settings", code=code))


@bp.route("/provider")
@roles_required("admin")
def providers() -> Any:
    """The provider's identity per template: saved, or still the template's demo values."""
    shown = [(template, provider_service.provider_of(db.session, template.id)) for template in list_templates()]
    return render_template("admin/providers.html", providers=shown)


@bp.route("/provider/<template_id>", methods=["GET", "POST"])
@roles_required("admin")
def provider(template_id: str) -> Any:
    """The identity and seal a template's contracts print (contracts issued before keep theirs)."""
    errors: dict[str, str] = {}
    if request.method == "POST":
        upload = request.files.get("seal")
        seal = upload.read(MAX_IMAGE_BYTES + 1) if upload is not None and upload.filename else None
        values = {spec.name: request.form.get(spec.name, "") for spec in provider_service.provider_of(db.session, template_id).fields}
        saved, errors = attempt(
            lambda: provider_service.save_provider(
                db.session, template_id, values, seal=seal, drop_seal="drop_seal" in request.form, actor=current_user.actor,
                version=request.form.get("version", ""),
            )
        )  # fmt: skip
        if saved is not None:
            flash("乙方信息已保存：此后签发的合同使用新的信息（已签发的合同不变）", "ok")
            return redirect(url_for("admin.provider", template_id=template_id))
    current = provider_service.provider_of(db.session, template_id)
    # A form opened before another administrator saved: shown again with the saved values (a
    # second click then cannot put the old ones back), what was typed beside the fields it differs in.
    stale = "version" in errors
    typed = {
        spec.name: request.form.get(spec.name, "")
        for spec in current.fields
        if stale and request.form.get(spec.name, "").strip() != str(current.identity.get(spec.name) or "").strip()
    }
    form = current.identity if stale or not errors else request.form
    page = render_template(
        "admin/provider.html", template=get_template(template_id), provider=current, form=form, errors=errors, typed=typed,
        version=provider_service.provider_version(current),
    )  # fmt: skip
    return page, (409 if stale else 422 if errors else 200)


@bp.route("/provider/<template_id>/seal.png")
@roles_required("admin")
def provider_seal(template_id: str) -> Any:
    current = provider_service.provider_of(db.session, template_id)
    if current.seal_png is None:
        abort(404)
    return current_app.response_class(current.seal_png, mimetype="image/png")


@bp.post("/accounts/<code>/status")
@roles_required("admin")
def account_status(code: str) -> Any:
    """Suspend an account's sending, or resume it (a dispute settled; an expired contract is renewed on its page)."""
    action = request.form.get("action")
    if action not in ("suspend", "resume"):  # (found by a review: anything but "suspend" resumed the account)
        flash("请选择暂停发送或恢复", "error")
        return redirect(url_for("admin.account_settings", code=code))
    suspend = action == "suspend"
    account, errors = attempt(
        lambda: settings_service.set_sending_status(
            db.session, code, suspend=suspend, reason=request.form.get("reason", ""), actor=current_user.actor
        )
    )
    for message in errors.values():
        flash(message, "error")
    if account is not None:
        flash(f"账户 {account.code} 已{'暂停发送' if suspend else '恢复'}：{account.status_name}", "ok")
    return redirect(url_for("admin.account_settings", code=code))


# --- staff users ------------------------------------------------------------------------------


@bp.route("/users", methods=["GET", "POST"])
@roles_required("admin")
def users() -> Any:
    """Staff users, and the form that makes one: its password is generated, shown once here for
    the administrator to pass on, and changed by the user at the first login."""
    errors: dict[str, str] = {}
    shown: tuple[str, str] | None = None
    form = request.form
    if request.method == "POST":
        password = new_password()
        user, errors = attempt(
            lambda: create_staff_user(
                db.session, form.get("username", ""), form.get("name", "").strip(), password, form.get("role", ""),
                actor=current_user.actor, must_change=True,
            )
        )  # fmt: skip
        if user is not None:
            shown = (user.username, password)
            form = {}  # type: ignore[assignment]
    return _users_page(errors=errors, form=form, shown=shown)


def _users_page(*, errors: dict[str, str] | None = None, form: Any = None, shown: tuple[str, str] | None = None) -> Any:
    errors = errors or {}
    for field, message in errors.items():
        if field not in ("username", "name", "role"):
            flash(message, "error")
    page = render_template(
        "admin/users.html",
        users=list_staff(db.session),
        roles=ROLES,
        errors=errors,
        form=form or {},
        shown=shown,
        me=current_user.record.id,
    )
    return page, (422 if errors else 200)


@bp.post("/users/<id32:user_id>/reset-password")
@roles_required("admin")
def user_reset_password(user_id: int) -> Any:
    """A new password for a staff user who forgot theirs: shown once, changed at the next login;
    the user's open sessions end."""
    user = get_staff(db.session, user_id)
    if user.id == current_user.record.id:
        db.session.rollback()
        flash("自己的密码请在「修改密码」中修改", "error")
        return redirect(url_for("admin.users"))
    password = reset_password(db.session, user, actor=current_user.actor)
    db.session.commit()
    return _users_page(shown=(user.username, password))


@bp.post("/users/<id32:user_id>/status")
@roles_required("admin")
def user_status(user_id: int) -> Any:
    """A staff user leaves (cannot log in, open sessions end at once) or returns."""
    action = request.form.get("action")
    user = get_staff(db.session, user_id)
    if action not in ("enable", "disable"):
        flash("请求无效：应为启用或停用（未做更改）", "error")
        return redirect(url_for("admin.users"))
    active = action == "enable"
    changed, errors = attempt(lambda: set_active(db.session, user, active=active, actor=current_user.actor, by=current_user.record))
    return _back_to_users(changed, errors, active_message(user, active=active, changed=bool(changed)))


@bp.post("/users/<id32:user_id>/role")
@roles_required("admin")
def user_role(user_id: int) -> Any:
    role = request.form.get("role", "")
    user = get_staff(db.session, user_id)
    changed, errors = attempt(lambda: set_role(db.session, user, role, actor=current_user.actor, by=current_user.record))
    name = ROLES.get(role, role)  # a role that is none is refused: its message is not shown
    said = f"的角色改为{name}，下一次操作起生效" if changed else f"的角色本来就是{name}，未做更改"
    return _back_to_users(changed, errors, f"员工账号 {user.username} {said}")


def _back_to_users(changed: bool | None, errors: dict[str, str], message: str) -> Any:
    """Back to the list, saying what a change did (or that it changed nothing), or why it was refused."""
    if changed:
        flash(message, "ok")
    elif not errors:
        flash(message, "info")
    for refusal in errors.values():
        flash(refusal, "error")
    return redirect(url_for("admin.users"))
