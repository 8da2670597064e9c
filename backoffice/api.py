"""Customer HTTP API `/api/v1` (二次开发接口): send messages, read their status and the balance.

Bearer API keys of sub-accounts (stored hashed); JSON in and out; errors are
`{"error": {"code", "message"}}` with the status the error class declares. CSRF does not apply
(no cookies are used for authentication here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, jsonify, request, url_for

from backoffice import database_error, not_text
from backoffice.clock import utcnow
from backoffice.errors import DomainError, NotFound, ValidationFailed
from backoffice.extensions import csrf, db
from backoffice.models import EnterpriseAccount, Message
from backoffice.money import format_price
from backoffice.openapi import openapi_document
from backoffice.services.api_keys import KEY_REFUSED, ApiCaller, Unauthorized, authenticate_api_key, touch_api_key
from backoffice.services.message_queue import cancel_scheduled
from backoffice.services.messaging import (
    RateLimited,
    SendingSettings,
    accept_request,
    get_message,
    intake_reasons,
    intake_turn,
    parse_send_at,
    read_request,
    reply_reports,
    status_reports,
)
from backoffice.services.sql import MAX_ID

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

PAGE_DEFAULT, PAGE_MAX = 100, 1000
PUBLIC_ENDPOINTS = {"api.openapi"}
SENDING_ENDPOINT = "api.send_messages"  # records the key's use inside its intake turn


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("缺少 API 密钥：请在请求头中加上 Authorization: Bearer <API 密钥>")
    caller = authenticate_api_key(db.session, token.strip())
    if caller is None:
        raise Unauthorized(KEY_REFUSED)
    g.api_caller = caller
    if request.endpoint != SENDING_ENDPOINT:
        touch_api_key(db.session, caller)  # committed with the view's transaction


@bp.errorhandler(DomainError)
def _domain_error(error: DomainError) -> Response:
    db.session.rollback()
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, ValidationFailed):
        body["fields"] = error.errors
    response = jsonify(error=body)
    response.status_code = error.status
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@bp.errorhandler(sa.exc.OperationalError)
def _busy(error: sa.exc.OperationalError) -> Response:
    db.session.rollback()
    current_app.logger.warning("database busy: %s", database_error(error))  # never the statement's parameters
    response = jsonify(error={"code": "busy", "message": "系统繁忙，本次请求未做任何处理，请稍后重试"})
    response.status_code = 503
    response.headers["Retry-After"] = "1"
    return response


def _key() -> ApiCaller:
    return g.api_caller


_JSON_KINDS = {list: "数组", str: "字符串", int: "数字", float: "数字", bool: "布尔值", type(None): "null"}


def _json_body() -> dict[str, Any]:
    """The request's JSON object, or a refusal naming what is wrong with the body."""
    if not request.is_json:
        raise ValidationFailed({"body": "请求体应为 JSON 对象，Content-Type 应为 application/json"})
    try:
        payload = json.loads(request.get_data(cache=True))
    except UnicodeDecodeError:
        raise ValidationFailed({"body": "请求体应为 UTF-8 编码的 JSON（收到的不是 UTF-8，例如 GBK 编码）"}) from None
    except json.JSONDecodeError as error:
        raise ValidationFailed({"body": f"请求体不是有效的 JSON：第 {error.lineno} 行第 {error.colno} 列（{error.msg}）"}) from None
    except ValueError:  # an integer of 4,300+ digits (Python's limit on reading them): a 500 before (found by fuzzing)
        raise ValidationFailed({"body": "请求体的 JSON 含有位数过多的数字（超过 4300 位）"}) from None
    except RecursionError:  # "[[[[…" nested thousands deep
        raise ValidationFailed({"body": "请求体的 JSON 嵌套过深"}) from None
    if not isinstance(payload, dict):
        raise ValidationFailed({"body": f"请求体应为 JSON 对象（{{…}}），收到的是{_JSON_KINDS.get(type(payload), '其他值')}"})
    if _has_non_text(payload):
        raise ValidationFailed({"body": "请求体含有无效的控制字符（NUL）或无效的 Unicode（单独的代理项）"})
    return payload


def _has_non_text(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return not_text(value)
    if depth > 20:
        return False  # deeper than any field the API reads
    if isinstance(value, dict):
        return any(_has_non_text(k, depth + 1) or _has_non_text(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_non_text(v, depth + 1) for v in value)
    return False


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def message_json(message: Message, *, parts: bool = False, reasons: Mapping[int, str] | None = None) -> dict[str, Any]:
    """A message as the API shows it; `reasons`: what its intake answer said (`intake_reasons`)."""
    body: dict[str, Any] = {
        "id": message.id,
        "request_id": message.request_id,
        "to": message.recipient,
        "carrier": message.reported_carrier or message.carrier,
        "content": message.content,
        "segments": message.segments,
        "charge": format_price(message.charge),
        "refunded": format_price(message.refunded),
        "status": message.status,
        "status_name": message.status_name,
        "account_stopped": message.stopped_reason,
        "duplicate": message.duplicate,
        "reason": message.error or (reasons or {}).get(message.id),
        "accepted_at": _iso(message.accepted_at),
        "send_at": _iso(message.send_at),
        "submitted_at": _iso(message.submitted_at),
        "done_at": _iso(message.done_at),
        "updated_at": _iso(message.updated_at),
    }
    if parts:
        body["parts"] = [
            {
                "seq": p.seq,
                "total": p.total,
                "submitted_at": _iso(p.submitted_at),
                "receipt_stat": p.receipt_stat,
                "receipt_at": _iso(p.receipt_at),
            }
            for p in message.parts
        ]
    return body


@bp.post("/messages")
def send_messages() -> Any:
    payload = _json_body()
    settings = SendingSettings.from_config(current_app.config)
    intake = read_request(
        payload.get("to"),  # type: ignore[arg-type]
        payload.get("content"),  # type: ignore[arg-type]
        client_ref=payload.get("client_ref"),
        send_at=payload.get("send_at"),
        settings=settings,
        source="api",
    )
    with intake_turn(db.session, pg_synchronous_commit=settings.pg_synchronous_commit):  # nothing written before this: see intake_turn
        # api_key_id: checked again under the write lock, so a revoked key cannot send
        result = accept_request(db.session, intake, sub_account=_key().sub_account, settings=settings, api_key_id=_key().key_id)
        touch_api_key(db.session, _key())
        db.session.commit()
    if result.booked_ledger_events:
        _post_ledger()
    response = jsonify(result.body)
    response.status_code = result.http_status
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _post_ledger() -> None:
    """A penalty was booked: post it now; if the books are busy the scheduler catches up."""
    from backoffice.services.bookkeeping import post_pending

    try:
        post_pending(db.session, Path(current_app.config["LEDGER_PATH"]))
    except Exception:  # the event stays in the outbox; `ledger sync` or the nightly job posts it
        db.session.rollback()
        current_app.logger.exception("posting the ledger outbox failed")


@bp.get("/messages/<int:message_id>")
def message_status(message_id: int) -> Any:
    sub = _key().sub_account
    message = get_message(db.session, sub.account_id, message_id, sub_account_id=sub.message_scope)
    if message is None:
        raise NotFound(f"短信 {message_id} 不存在")
    body = message_json(message, parts=True, reasons=intake_reasons(db.session, [message]))
    db.session.commit()  # the key's last_used_at
    return jsonify(body)


@bp.post("/requests/<int:request_id>/cancel")
def cancel_request(request_id: int) -> Any:
    """Take back a scheduled send: the request's messages still waiting for their time are
    refunded unsent (the rest are left as they are); 404 for another login's request, 409 when
    nothing is left to cancel."""
    sub = _key().sub_account
    if not 0 < request_id <= MAX_ID:
        raise NotFound(f"发送批次 {request_id} 不存在")
    cancelled = cancel_scheduled(db.session, sub.account_id, request_id, sub_account_id=sub.message_scope)
    db.session.commit()
    account = db.session.get(EnterpriseAccount, sub.account_id, populate_existing=True)
    assert account is not None
    return jsonify(
        {
            "request_id": request_id,
            "cancelled": cancelled.count,
            "refunded": format_price(cancelled.refunded),
            "balance": format_price(account.balance),
        }
    )


def _whole_number(name: str, default: str) -> int:
    """A query parameter that must be a whole number, refused under its own name (found by an
    exploratory test: after_id=abc was reported under fields.limit)."""
    given = request.args.get(name, default)
    try:
        return int(given)
    except ValueError:
        if given.strip().removeprefix("-").isdecimal():  # past Python's 4,300 digits: a whole number out of range
            return -MAX_ID - 1 if given.strip().startswith("-") else MAX_ID + 1
        raise ValidationFailed({name: f"{name} 应为整数，收到的是 {given[:20]!r}"}) from None


def _page_cursor() -> tuple[datetime, int, int]:
    """(since, after_id, limit) of a paged report (status reports, replies), each refused by name."""
    since_text = request.args.get("since")
    since = parse_send_at(since_text, field="since") if since_text and since_text.strip() else utcnow() - timedelta(days=1)
    assert since is not None
    after_id, limit = _whole_number("after_id", "0"), _whole_number("limit", str(PAGE_DEFAULT))
    if not 0 <= after_id <= MAX_ID:
        raise ValidationFailed({"after_id": f"after_id 应在 0–{MAX_ID} 之间"})
    if not 1 <= limit <= PAGE_MAX:
        raise ValidationFailed({"limit": f"limit 应在 1–{PAGE_MAX} 之间"})
    return since, after_id, limit


def _page(rows: list[Any], limit: int, stamp: str, endpoint: str) -> tuple[list[Any], dict[str, Any]]:
    """A page of a report asked for `limit + 1` rows: the rows to show, and whether there is more
    and where the next page starts (the last row's `stamp` and id)."""
    more = len(rows) > limit
    rows = rows[:limit]
    following = {"since": getattr(rows[-1], stamp).isoformat(), "after_id": rows[-1].id} if more else None
    return rows, {
        "has_more": more,
        "next": following,
        "next_url": url_for(endpoint, since=following["since"], after_id=following["after_id"], limit=limit) if following else None,
    }


def _settled() -> datetime:
    """Complete up to here: a change committed later than this comes in a later poll."""
    return utcnow() - timedelta(seconds=float(current_app.config["STATUS_REPORT_SETTLE_SECONDS"]))


@bp.get("/messages")
def message_reports() -> Any:
    since, after_id, limit = _page_cursor()
    sub = _key().sub_account
    until = _settled()
    rows = status_reports(
        db.session, sub.account_id, since=since, after_id=after_id, limit=limit + 1, sub_account_id=sub.message_scope, until=until
    )
    rows, paging = _page(rows, limit, "updated_at", ".message_reports")
    reasons = intake_reasons(db.session, rows)
    body = {"messages": [message_json(m, reasons=reasons) for m in rows], "as_of": until.isoformat(), **paging}
    db.session.commit()
    return jsonify(body)


@bp.get("/replies")
def replies() -> Any:
    """Replies (MO) to the account's messages, paged like the status reports; a 子号's key reads
    the replies answering its messages, the enterprise's key all of them."""
    since, after_id, limit = _page_cursor()
    sub = _key().sub_account
    until = _settled()
    rows = reply_reports(
        db.session, sub.account_id, since=since, after_id=after_id, limit=limit + 1, sub_account_id=sub.message_scope, until=until
    )
    rows, paging = _page(rows, limit, "received_at", ".replies")
    body = {
        "replies": [
            {
                "id": r.id,
                "from": r.sender,
                "to": r.destination,
                "content": r.content,
                "received_at": _iso(r.received_at),
                "unsubscribe": r.unsubscribe,
            }
            for r in rows
        ],
        "as_of": until.isoformat(),
        **paging,
    }
    db.session.commit()
    return jsonify(body)


@bp.get("/balance")
def balance() -> Any:
    account = db.session.get(EnterpriseAccount, _key().sub_account.account_id, populate_existing=True)
    assert account is not None
    price = account.price_per_message
    body = {
        "account": account.code,
        "status": account.status,
        "balance": format_price(account.balance),
        "currency": "CNY",
        "price_per_message": format_price(price),
        "messages_left": int(account.balance // price) if price > 0 else None,
        "rate_limit_per_second": account.rate_limit_per_second,
        "blacklisted": account.blacklisted_at is not None,
    }
    db.session.commit()
    return jsonify(body)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document(request.host_url.rstrip("/") + bp.url_prefix))  # type: ignore[operator]
