"""Portal pages for sending: the send form (typed numbers or a CSV of recipients), the messages
with their status, the replies (MO), and the customer's API keys. Routes on the portal blueprint."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, request, session, stream_with_context, url_for
from flask_login import current_user

from backoffice.auth import roles_required
from backoffice.clock import local_today
from backoffice.errors import DomainError, ValidationFailed
from backoffice.extensions import db
from backoffice.money import format_price
from backoffice.portal import bp, csv_download
from backoffice.services.api_keys import account_api_keys, create_api_key, revoke_api_key
from backoffice.services.message_export import export_messages, export_period
from backoffice.services.message_queue import cancel_scheduled
from backoffice.services.messaging import (
    ClientRefConflict,
    SendingSettings,
    accept_messages,
    intake_reasons,
    read_recipient_file,
    recent_messages,
    recent_replies,
    sending_refused,
    split_recipients,
    typed_once,
)
from backoffice.services.sql import MAX_ID
from dispatch.numbers import InvalidNumber, normalise_mobile

PAGE = 50
KEY_FORM_USED = "_key_form"  # the token of the last API key form that made a key (session)


def _form_again(errors: dict[str, str], status: int, *, fresh_ref: bool = False, **extra: Any) -> Any:
    """The send form again, as the customer filled it in, with `errors`; `fresh_ref` gives it a
    new client_ref (its old one has sent other content)."""
    account = current_user.record.account
    db.session.refresh(account)
    form = dict(request.form) if request.method == "POST" else {}
    if fresh_ref:
        form.pop("client_ref", None)
    form.setdefault("client_ref", uuid.uuid4().hex)
    settings = SendingSettings.from_config(current_app.config)
    refused = sending_refused(account, current_user.record)
    page = render_template("portal/send.html", account=account, form=form, errors=errors, settings=settings, refused=refused, **extra)
    return page, status


@bp.route("/send", methods=["GET", "POST"])
@roles_required("customer")
def send() -> Any:
    """Typed numbers and/or an uploaded CSV, one request; the form carries a fresh client_ref so a
    double submit (or a reload of the result) sends and charges once."""
    if request.method == "GET":
        return _form_again({}, 200)
    typed = typed_once(split_recipients(request.form.get("recipients", "")))
    numbers, problems = typed.numbers, list(typed.problems)
    upload = request.files.get("file")
    source = "portal"
    if upload is not None and upload.filename:
        try:
            parsed = read_recipient_file(upload.read(), limit=SendingSettings.from_config(current_app.config).max_recipients)
        except ValidationFailed as failed:
            return _form_again(failed.errors, 422)
        problems += parsed.problems
        given = set(numbers)  # typed numbers normalised by typed_once
        for number in parsed.numbers:  # a number both typed and in the file is sent once (a review)
            if number in given:
                problems.append(f"文件中的号码 {number} 已在收件人中填写，只发送一次")
            else:
                numbers.append(number)
        source = "csv"
        if not parsed.numbers and not numbers:
            return _form_again({"file": "文件中没有有效的手机号码"}, 422, problems=problems)
    try:
        result = accept_messages(
            db.session,
            sub_account=current_user.record,
            recipients=numbers,
            content=request.form.get("content", ""),
            client_ref=request.form.get("client_ref") or None,
            send_at=request.form.get("send_at") or None,
            settings=SendingSettings.from_config(current_app.config),
            source=source,
        )
        db.session.commit()
    except ValidationFailed as failed:
        db.session.rollback()
        return _form_again(failed.errors, 422, problems=problems)
    except ClientRefConflict:
        # This form was sent before (Back after sending, then edited): the edited one is a new request.
        db.session.rollback()
        return _form_again(
            {"_form": "这张表单已经发送过，内容已有改动：本次未发送也未扣费，请确认内容后再次提交"}, 409, fresh_ref=True, problems=problems
        )
    except DomainError as error:
        db.session.rollback()
        return _form_again({"_form": error.message}, error.status if error.status >= 400 else 422, problems=problems)
    except sa.exc.OperationalError:
        db.session.rollback()
        return _form_again({"_form": "系统繁忙，本次未发送也未扣费，请稍后重试"}, 503, problems=problems)
    if result.booked_ledger_events:
        from backoffice.api import _post_ledger

        _post_ledger()
    balance = result.body.get("balance")
    if result.replayed:  # the stored answer's balance is the first submission's: show the account's now
        account = current_user.record.account
        db.session.refresh(account)
        balance = format_price(account.balance)
    page = render_template("portal/sent.html", result=result, body=result.body, balance=balance, problems=problems)
    return page, (
        200 if result.http_status < 300 else result.http_status
    )  # 422: content refused (its fee charged where the contract says so)


def _scope() -> int | None:
    """What the logged-in login may see of the account: everything for the enterprise's own
    login, only its own messages and API keys for a 子号 (as its API keys do)."""
    login = current_user.record
    return None if login.is_primary else login.id


@bp.route("/messages")
@roles_required("customer")
def messages() -> Any:
    return _messages_page({}, 200)


def _messages_page(errors: dict[str, str], status: int) -> Any:
    account = current_user.record.account
    before = request.args.get("before", type=int)
    if before is not None and not 0 < before <= MAX_ID:
        before = None  # the first page
    # One number's messages (found by an exploratory test: "did it reach 138…?" meant paging
    # through the whole account 50 at a time).
    searched, recipient = request.args.get("number", "").strip()[:40], None
    if searched:
        try:
            recipient = normalise_mobile(searched)
        except InvalidNumber as bad:
            errors = {**errors, "search": f"查询的号码无效：{bad.reason}"}
            status = 400
    rows = recent_messages(db.session, account.id, before_id=before, limit=PAGE + 1, sub_account_id=_scope(), recipient=recipient)
    older = rows[PAGE - 1].id if len(rows) > PAGE else None  # (one more read: no link to an empty page)
    shown = rows[:PAGE]
    reasons = intake_reasons(db.session, shown)
    page = render_template(
        "portal/messages.html",
        account=account,
        messages=shown,
        reasons=reasons,
        older=older,
        paged=before is not None,
        searched=searched,
        recipient=recipient,
        # Which 子号 sent each message, for the enterprise's own login of an account that has them.
        senders={sub.id: sub.login for sub in account.sub_accounts} if _scope() is None and len(account.sub_accounts) > 1 else {},
        errors=errors,
        period=request.args if errors.get("from") or errors.get("to") else {},
        month_start=local_today().replace(day=1),
        today=local_today(),
    )
    return page, status


@bp.route("/messages.csv")
@roles_required("customer")
def export_messages_csv() -> Any:
    """The messages of a period (Beijing days) as a CSV for Excel, with a line of totals."""
    try:
        period = export_period(request.args.get("from"), request.args.get("to"))
    except ValidationFailed as failed:
        return _messages_page(failed.errors, 400)
    rows = export_messages(db.session, current_user.record.account_id, period, sub_account_id=_scope())
    return csv_download(period, stream_with_context(rows), "messages", "发送记录")


@bp.post("/requests/<id32:request_id>/cancel")
@roles_required("customer")
def cancel_request(request_id: int) -> Any:
    """Take back a scheduled send: its messages still waiting for their time, refunded unsent."""
    try:
        cancelled = cancel_scheduled(db.session, current_user.record.account_id, request_id, sub_account_id=_scope())
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        flash(error.message, "error")
    else:
        flash(f"已取消批次 {request_id} 的 {cancelled.count} 条定时短信，退回 {format_price(cancelled.refunded)} 元", "ok")
    return redirect(url_for("portal.messages"))


@bp.route("/replies")
@roles_required("customer")
def replies() -> Any:
    account = current_user.record.account
    before = request.args.get("before", type=int)
    if before is not None and not 0 < before <= MAX_ID:
        before = None  # the first page
    rows = recent_replies(db.session, account.id, before_id=before, limit=PAGE + 1, sub_account_id=_scope())
    older = rows[PAGE - 1].id if len(rows) > PAGE else None
    return render_template("portal/replies.html", account=account, replies=rows[:PAGE], older=older, paged=before is not None)


@bp.route("/api-keys", methods=["GET", "POST"])
@roles_required("customer")
def api_keys() -> Any:
    """List the keys the login may see (`_scope`); POST makes one for the logged-in sub-account and shows it once."""
    account = current_user.record.account
    secret = None
    errors: dict[str, str] = {}
    if request.method == "POST":
        # The form's one-time token: a reload of the page that showed a new key (the browser
        # posting the form again) makes no second key that nobody saw.
        token = request.form.get("form_token", "")
        if token and token == session.get(KEY_FORM_USED):
            errors = {"_form": "这张表单已经提交过：密钥已创建，且只显示那一次。如未保存，请吊销该密钥后重新创建"}
        else:
            try:
                key, secret = create_api_key(db.session, current_user.record, label=request.form.get("label", ""), actor=current_user.actor)
                db.session.commit()
                session[KEY_FORM_USED] = token
            except ValidationFailed as failed:
                db.session.rollback()
                errors = failed.errors
    keys = account_api_keys(db.session, account.id, sub_account_id=_scope())
    page = render_template("portal/api_keys.html", account=account, keys=keys, secret=secret, errors=errors, form_token=uuid.uuid4().hex)
    return page, (422 if errors else 200)


@bp.post("/api-keys/<id32:key_id>/revoke")
@roles_required("customer")
def revoke_key(key_id: int) -> Any:
    key = revoke_api_key(db.session, key_id, account_id=current_user.record.account_id, sub_account_id=_scope(), actor=current_user.actor)
    db.session.commit()
    flash(f"API 密钥 {key.prefix}… 已吊销", "ok")
    return redirect(url_for("portal.api_keys"))
