"""An account's sending settings, which the provider changes: the rate limit (004 §2.2(1): the
provider may throttle), the registered SMS signature and whether intake adds it (002 §5(6)),
and lifting the blacklist that repeated forbidden content put the account on (000 §8).

Intake reads these columns from the account row on every request (`messaging._sender_state`),
so a committed change applies to the next request in every process."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.errors import Conflict, NotFound, ValidationFailed
from backoffice.models import Contract, EnterpriseAccount
from backoffice.money import format_price
from backoffice.services import audit
from backoffice.services.form_version import check_version, form_version

# 1 message a second is the least that still lets an account send; 10 000 is far above what one
# SMPP link to a carrier carries (hundreds a second), so a higher figure would only be a typo.
RATE_LIMIT_MIN = 1
RATE_LIMIT_MAX = 10_000
# The rule of the contract form (contracts_templates/lingxuntong_service/template.json,
# `sms_signature`): the words inside 【】, stored without the brackets as intake expects.
SIGNATURE_PATTERN = "[\\u4e00-\\u9fffA-Za-z0-9]{2,12}"
_SIGNATURE = re.compile(SIGNATURE_PATTERN)


@dataclass(frozen=True)
class SettingsUpdate:
    """The account after the update and what changed: field -> (before, after); empty when nothing did."""

    account: EnterpriseAccount
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def sending_settings(account: EnterpriseAccount) -> dict[str, Any]:
    """The account's sending settings as plain values (the command line's output, JSON-ready)."""
    return {
        "account_code": account.code,
        "customer_name": account.customer_name,
        "status": account.status,
        "status_name": account.status_name,
        "balance": format_price(account.balance),
        "rate_limit_per_second": account.rate_limit_per_second,
        "sms_signature": account.sms_signature,
        "add_signature": account.add_signature,
        "violation_count": account.violation_count,
        "blacklisted_at": account.blacklisted_at.isoformat() if account.blacklisted_at else None,
    }


def list_accounts(session: Session) -> list[EnterpriseAccount]:
    """Every enterprise account, by code (the administrators' list)."""
    return list(session.scalars(sa.select(EnterpriseAccount).order_by(EnterpriseAccount.code)))


def account_for_settings(session: Session, account_code: str) -> EnterpriseAccount:
    """The account by its code, read afresh and (PostgreSQL) locked until the caller commits,
    so a change does not interleave with intake counting a violation on the same row."""
    query = (
        sa.select(EnterpriseAccount)
        .where(EnterpriseAccount.code == account_code.strip())
        .with_for_update(key_share=True)  # NO KEY UPDATE: not waiting on rows that merely refer to it
        .execution_options(populate_existing=True)
    )
    account = session.scalar(query)
    if account is None:
        raise NotFound(f"账户不存在：{account_code}")
    return account


def parse_rate_limit(value: int | str) -> int:
    """A whole number of messages per second within RATE_LIMIT_MIN..RATE_LIMIT_MAX."""
    text = str(value).strip()
    if not re.fullmatch(r"\+?\d{1,9}", text):
        raise ValidationFailed({"rate_limit_per_second": f"限速应为整数（每秒条数），{RATE_LIMIT_MIN}–{RATE_LIMIT_MAX}"})
    rate = int(text)
    if not RATE_LIMIT_MIN <= rate <= RATE_LIMIT_MAX:
        raise ValidationFailed({"rate_limit_per_second": f"限速应在每秒 {RATE_LIMIT_MIN}–{RATE_LIMIT_MAX} 条之间，填写的是 {rate}"})
    return rate


def parse_signature(value: str) -> str:
    """The signature's words, with or without 【】 around them: 2–12 汉字, letters or digits."""
    text = value.strip()
    if text.startswith("【") and text.endswith("】"):
        text = text[1:-1].strip()
    if not _SIGNATURE.fullmatch(text):
        raise ValidationFailed({"sms_signature": "短信签名应为 2–12 个汉字、字母或数字，可带【】（如【某某科技】），不含其他标点和空格"})
    return text


def settings_version(account: EnterpriseAccount) -> str:
    """A fingerprint of the settings the form shows (rate, signature, whether it is added),
    carried by the form so that a save made on values another administrator has since changed
    is refused."""
    return form_version([account.rate_limit_per_second, account.sms_signature or "", bool(account.add_signature)])


def update_sending_settings(
    session: Session,
    account_code: str,
    *,
    rate_limit_per_second: int | str | None = None,
    sms_signature: str | None = None,
    add_signature: bool | None = None,
    lift_blacklist: bool = False,
    actor: str,
    version: str | None = None,
) -> SettingsUpdate:
    """Change what is given (None: leave as is), all or nothing, with one audit line; the caller
    commits. A registered signature can be replaced but not removed: an empty signature is
    refused when the account has one and changes nothing when it has none. Lifting the blacklist
    also clears the violation count, so the next violation does not blacklist again at once.

    `version`: the `settings_version` the form was opened with; when the settings are no longer
    those, nothing changes (error "version"). Found by a review: a form opened before another
    administrator raised the rate put the old rate back with a new signature, unsaid. None (the
    command line, the blacklist button, which name only what they change): no check."""
    account = account_for_settings(session, account_code)
    check_version(version, settings_version(account), f"账户 {account.code} 的发送设置已被他人修改，请刷新后再改")
    wanted: dict[str, Any] = {}
    if rate_limit_per_second is not None:
        wanted["rate_limit_per_second"] = parse_rate_limit(rate_limit_per_second)
    if sms_signature is not None and (sms_signature.strip() or account.sms_signature):
        if not sms_signature.strip():
            raise ValidationFailed({"sms_signature": "已登记的短信签名不能删除，只能更换为新的签名"})
        wanted["sms_signature"] = parse_signature(sms_signature)
    if add_signature is not None:
        wanted["add_signature"] = bool(add_signature)
    if wanted.get("add_signature", account.add_signature) and not wanted.get("sms_signature", account.sms_signature):
        raise ValidationFailed({"add_signature": "账户没有登记短信签名，不能设置为自动添加签名"})
    if lift_blacklist:
        wanted.update(violation_count=0, blacklisted_at=None)
    changes = {name: (getattr(account, name), value) for name, value in wanted.items() if getattr(account, name) != value}
    for name, (_, value) in changes.items():
        setattr(account, name, value)
    if changes:
        detail = {name: {"from": _plain(before), "to": _plain(after)} for name, (before, after) in changes.items()}
        audit.record(session, actor, "update_sending_settings", "account", account.code, **detail)
    return SettingsUpdate(account, changes)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    return "无" if value is None else str(value)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def describe_changes(update: SettingsUpdate) -> str:
    """The changes in a sentence for staff (flash message, command line)."""
    names = {
        "rate_limit_per_second": "限速（条/秒）",
        "sms_signature": "短信签名",
        "add_signature": "自动添加签名",
        "violation_count": "违规次数",
        "blacklisted_at": "黑名单",
    }
    parts = [
        "已解除黑名单" if name == "blacklisted_at" else f"{names[name]} {_shown(before)} → {_shown(after)}"
        for name, (before, after) in update.changes.items()
    ]
    code = update.account.code
    return f"账户 {code} 的发送设置已更新：" + "；".join(parts) if parts else f"账户 {code} 的发送设置没有变化"


def set_sending_status(session: Session, account_code: str, *, suspend: bool, reason: str, actor: str) -> EnterpriseAccount:
    """An administrator stops an active account sending (suspended), or lets a suspended one send
    again (a dispute settled). The reason is kept in the audit log; the balance does not change
    either way. An account none of whose contracts is live (all expired or terminated) is not
    resumed: it sent for ever, with no term, notice or expiry (found by an exploratory test); a
    contract renewed on paper is recorded as such (`renewal.renew_contract`), which resumes it."""
    account = account_for_settings(session, account_code)
    text = audit.reason_text(reason)
    wanted, allowed = ("suspended", ("active", "awaiting_payment")) if suspend else ("active", ("suspended",))
    if account.status not in allowed:
        raise Conflict(f"账户 {account.code} 当前为“{account.status_name}”，不能{'暂停' if suspend else '恢复'}发送")
    if not suspend:
        _refuse_without_live_contract(session, account)
    if not suspend and account.receivable > 0 and account.balance <= 0:
        wanted = "awaiting_payment"  # never paid: it opens when the money arrives, as a new account does
    before = account.status
    account.status = wanted
    audit.record(session, actor, "suspend_account" if suspend else "resume_account", "account", account.code, reason=text, before=before)
    return account


def ended_contract(session: Session, account: EnterpriseAccount) -> Contract | None:
    """The account's latest contract when every one of its contracts has ended (expired or
    terminated): nothing lets it send but a renewal of it. None when one is live, or it has none."""
    from backoffice.models.contracts import live_contracts_of

    if session.scalar(live_contracts_of(account.id)):
        return None
    return session.scalar(sa.select(Contract).where(Contract.account_id == account.id).order_by(Contract.id.desc()))


def _refuse_without_live_contract(session: Session, account: EnterpriseAccount) -> None:
    ended = ended_contract(session, account)
    if ended is None:  # (a live contract, or an account with no contract at all: nothing to renew)
        return
    when = f"（最后一天 {ended.term_end}）" if ended.term_end else ""
    raise Conflict(
        f"账户 {account.code} 的合同 {ended.contract_no} {ended.status_name}{when}，没有有效的合同，不能直接恢复发送。"
        f"如客户已续签，请在合同页面登记续签（或 flask --app wsgi contract renew {ended.contract_no} --until YYYY-MM-DD --by 用户名），"
        "登记后账户自动恢复发送"
    )
