"""Renewal rules: the dated actions each template's term rule requires, and what they do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from backoffice.clock import local_today, to_local, utcnow
from backoffice.errors import Conflict, ValidationFailed
from backoffice.models import AuditEntry, Contract, ContractJob, EnterpriseAccount
from backoffice.models.contracts import ENDED_CONTRACT_STATUSES, live_contracts_of
from backoffice.models.contracts import RENEWAL_RULES as RENEWAL_NAMES
from backoffice.services import audit, notifications
from backoffice.services.contract_fields import term_end
from backoffice.services.sql import begin_writing, is_postgresql


def renewal_rule_for(terms: dict, auto_renew: bool | None) -> str:
    rule = terms.get("term_rule", "fixed_term")
    if rule == "yearly_auto_extend" and auto_renew is False:
        return "fixed_term"
    return rule


#: A yearly extension's notice goes this long before the customer's last day to object in writing
#: (004 §8.7: 30 days before the end), so that the customer has time to act on it.
OBJECTION_LEAD_DAYS = 15


#: The outcome of an extension that ran (an auto_extend job cancelled by an objection has another).
EXTENDED = "无书面异议，自动顺延一年至 "
#: Appended to an extension's outcome when a late-recorded objection undid it.
UNDONE = "；已撤销："


def _objection_days(contract: Contract) -> int:
    return int(contract.terms.get("objection_notice_days") or 30)


def _notice_days(contract: Contract) -> int:
    """How long before a fixed term's end its notice goes."""
    return int(contract.terms.get("objection_notice_days") or contract.terms.get("renewal_notice_days") or 30)


def objection_deadline(contract: Contract) -> date | None:
    """The last day the customer can object in writing to the yearly extension (None: no extension)."""
    if contract.renewal_rule != "yearly_auto_extend" or contract.term_end is None:
        return None
    return contract.term_end - timedelta(days=_objection_days(contract))


def planned_jobs(contract: Contract) -> list[tuple[str, date]]:
    """(kind, due date) for the contract's current term."""
    end = contract.term_end
    if contract.renewal_rule == "fixed_term" and end:
        return [("renewal_notice", end - timedelta(days=_notice_days(contract))), ("expire", end + timedelta(days=1))]
    if contract.renewal_rule == "yearly_auto_extend" and end:
        deadline = objection_deadline(contract)
        assert deadline is not None
        return [("renewal_notice", deadline - timedelta(days=OBJECTION_LEAD_DAYS)), ("auto_extend", end + timedelta(days=1))]
    # long_term: nothing dated. until_used_up: watched by the daily zero-balance job.
    return []


def _notice_days_of_this_term(contract: Contract) -> set[date]:
    """The days a renewal notice of the contract's current term was planned for, under either
    rule (an objection turns a yearly extension into a fixed term, its notice stays due)."""
    end = contract.term_end
    if end is None:
        return set()
    return {end - timedelta(days=_notice_days(contract)), end - timedelta(days=_objection_days(contract) + OBJECTION_LEAD_DAYS)}


def plan_jobs(session: Session, contract: Contract) -> list[ContractJob]:
    jobs = []
    for kind, due in planned_jobs(contract):
        jobs.append(_add_job(session, contract, kind, due))
    return jobs


def _add_job(session: Session, contract: Contract, kind: str, due: date) -> ContractJob:
    job_id = f"contract:{contract.contract_no}:{kind}:{due.isoformat()}"
    taken = {job.job_id for job in contract.jobs}
    if job_id in taken:  # a job cancelled for that day (an objection, then a renewal to the same end): its id is kept
        job_id = next(f"{job_id}~{n}" for n in range(2, 100) if f"{job_id}~{n}" not in taken)
    job = ContractJob(contract=contract, kind=kind, due_on=due, job_id=job_id)
    session.add(job)
    return job


def lock_contract(session: Session, contract_id: int) -> Contract:
    """The contract, read afresh with its jobs and held until the transaction ends: the lock
    that a job's run, a paper renewal and a written objection each take before they look at the
    contract, so none decides on a state another is changing (found by a review: an expiry that
    had read its job before a renewal committed still ended the renewed contract and stopped its
    account). PostgreSQL: the contract's row, FOR NO KEY UPDATE (rows that merely refer to it,
    a new job, an invoice, are not kept waiting); SQLite: the database's write lock.

    Lock order: the contract first, then its account (`account_for_settings`, as a renewal and
    an expiry take it). No other transaction locks a contract's row, so none holds an account
    and waits for a contract (intake, the dispatcher and finance lock accounts only)."""
    begin_writing(session)
    query = (
        sa.select(Contract).where(Contract.id == contract_id).options(selectinload(Contract.jobs)).execution_options(populate_existing=True)
    )
    if is_postgresql(session):
        query = query.with_for_update(key_share=True)
    return session.scalars(query).one()


def _suspend_without_contract(session: Session, contract: Contract) -> bool:
    """An account whose last live contract ended stops sending (its balance stays, for a
    renewal); True if it was suspended now."""
    account = contract.account
    others = session.scalar(live_contracts_of(account.id, besides=contract.id))
    if others or account.status not in ("active", "awaiting_payment"):  # unpaid too: a late payment must not open it
        return False
    account.status = "suspended"
    return True


def run_contract_job(session: Session, job: ContractJob, *, objection_received_on: date | None = None) -> str:
    """Carry out one due action; idempotent (a job already done is not redone).
    `objection_received_on`: an expiry a written objection brought (the customer is told so).

    The contract is locked first and the job read again under the lock: a renewal or an
    objection that committed after the caller loaded the job has cancelled it (done), or changed
    the contract it acts on."""
    contract = lock_contract(session, job.contract_id)
    session.refresh(job)
    if job.done_at is not None:
        return job.outcome or "done"
    if contract.status in ENDED_CONTRACT_STATUSES:
        outcome = f"合同{contract.status_name}，跳过"  # (the name says 已到期 / 已终止 itself)
    elif job.kind == "renewal_notice" and job.due_on not in _notice_days_of_this_term(contract):
        # Planned for a term the contract has moved past (extended since, the scheduler down): a
        # notice now would announce the wrong end and take the real notice's key (a review).
        outcome = f"合同期已变更（现至 {contract.term_end}），本次提醒已过时，跳过"
    elif job.kind == "renewal_notice" and contract.term_end is not None and local_today() >= contract.term_end:
        # Run on the last day or later (the scheduler down): "将于 <that day> 到期，请在到期前联系"
        # would announce a day already here or past (found by an exploratory test). The expiry's
        # own notice tells a fixed term's customer; a yearly term extends as agreed.
        then = "合同将按约定自动顺延" if contract.renewal_rule == "yearly_auto_extend" else "到期时另发到期通知"
        outcome = f"续约提醒未按时运行（运行日 {local_today()}，合同最后一天 {contract.term_end}），不再预告到期，跳过；{then}"
        audit.record(
            session, "scheduler", "renewal_notice_skipped", "contract", contract.contract_no,
            term_end=str(contract.term_end), ran_on=str(local_today()),
        )  # fmt: skip
    elif job.kind == "renewal_notice":
        deadline = objection_deadline(contract)
        if deadline is not None and local_today() > deadline:
            deadline = None  # too late to object (a notice run late, a contract issued late): say so, name no past day
        if notifications.renewal_notice(session, contract, object_by=deadline, extends=contract.renewal_rule == "yearly_auto_extend"):
            outcome = f"续约提醒已发给客户：合同 {contract.contract_no} 将于 {contract.term_end} 到期"
        else:
            outcome = (
                f"续约提醒未能发出：客户没有电子邮箱或手机号码，请人工通知（合同 {contract.contract_no} 将于 {contract.term_end} 到期）"
            )
        audit.record(session, "scheduler", "renewal_notice", "contract", contract.contract_no, term_end=str(contract.term_end))
    elif job.kind == "expire":
        from backoffice.services.sending_settings import account_for_settings

        account_for_settings(session, contract.account.code)  # read afresh, locked (after the contract: see lock_contract)
        contract.status = "expired"
        suspended = _suspend_without_contract(session, contract)
        told = notifications.contract_expired(session, contract, suspended=suspended, objection_received_on=objection_received_on)
        outcome = (
            "合同到期终止"
            + ("，账户已暂停发送（余额保留）" if suspended else "")
            + ("" if told else "；客户没有电子邮箱或手机号码，未能通知，请人工通知")
        )
        audit.record(session, "scheduler", "expire", "contract", contract.contract_no, account_suspended=suspended)
    elif job.kind == "auto_extend":
        assert contract.term_end is not None
        old_end = contract.term_end
        contract.term_end = term_end(old_end + timedelta(days=1), 12)
        outcome = f"{EXTENDED}{contract.term_end}"
        audit.record(
            session, "scheduler", "auto_extend", "contract", contract.contract_no, old_end=str(old_end), new_end=str(contract.term_end)
        )
        plan_jobs(session, contract)
    else:
        outcome = f"未知任务类型 {job.kind}"
    job.done_at = utcnow()
    job.outcome = outcome
    return outcome


def stop_renewal(session: Session, contract: Contract, *, received_on: date, actor: str, today: date) -> ContractJob:
    """004 §8.5, §8.7: the customer objected in writing to the yearly extension: the contract
    ends at the end of its current term instead (its pending extension is cancelled, an expiry
    planned). An objection received after the deadline (30 days before the end) is refused.

    An objection received in time but recorded after the extension ran undoes the extension:
    the term goes back to its original end and the contract ends as if it had been recorded in
    time (the expiry runs now: the account stops sending, the customer is told). The returned
    expiry job is then already done."""
    contract = lock_contract(session, contract.id)  # (a job of the contract running meanwhile: see there)
    deadline = objection_deadline(contract)
    if deadline is None or contract.status in ENDED_CONTRACT_STATUSES:
        raise Conflict(f"合同 {contract.contract_no} 不是自动顺延的合同，或已到期、已终止，无需登记异议")
    if received_on > deadline:
        raise ValidationFailed(
            {"received_on": f"书面异议须在到期前 30 天提出（截止 {deadline}），{received_on} 收到的异议已过期限，合同将按约定顺延"}
        )
    if received_on > today:
        raise ValidationFailed({"received_on": "收到书面异议的日期不能晚于今天"})
    signed = max(contract.customer_signed_on, contract.provider_signed_on)
    if received_on < signed:  # a mistyped year silently ended the contract (found by a review)
        raise ValidationFailed({"received_on": f"收到书面异议的日期 {received_on} 早于合同签订日期 {signed}，请核对"})
    # A paper renewal recorded after the letter arrived is the later agreement: the letter cannot
    # undo it (found by a review: an old letter entered after a renewal undid the extension it
    # was about, and with it the renewal; the contract expired, the account stopped).
    renewal = _renewal_after(session, contract, received_on)
    if renewal is not None:
        renewed_on, new_end = renewal
        raise Conflict(
            f"合同 {contract.contract_no} 已于 {renewed_on} 续签至 {new_end}，续签晚于 {received_on} 收到的书面异议，以续签为准："
            "该异议不能撤销此前的顺延，也不能终止续签后的合同；客户如不再续约，须对续签后的合同另行提出书面异议"
        )
    # Extensions that ran after the letter arrived: it was meant for the term they extended
    # (found by a review: checked against the new term, it bound the customer for another year).
    # One an objection already undid is not undone again (its term is over).
    extended = sorted(
        (
            job
            for job in contract.jobs
            if job.kind == "auto_extend"
            and job.done_at is not None
            and job.due_on > received_on
            and (job.outcome or "").startswith(EXTENDED)
            and UNDONE not in (job.outcome or "")
        ),
        key=lambda job: job.due_on,
    )
    if extended:
        return _undo_extensions(session, contract, extended, received_on=received_on, actor=actor)
    end = contract.term_end
    assert end is not None
    now = utcnow()
    for job in contract.jobs:
        if job.kind == "auto_extend" and job.done_at is None:
            job.done_at, job.outcome = now, f"客户于 {received_on} 书面异议，不再顺延"
    contract.renewal_rule = "fixed_term"
    expire = _add_job(session, contract, "expire", end + timedelta(days=1))
    audit.record(session, actor, "stop_renewal", "contract", contract.contract_no, received_on=str(received_on), term_end=str(end))
    return expire


def _undo_extensions(session: Session, contract: Contract, extended: list[ContractJob], *, received_on: date, actor: str) -> ContractJob:
    """A written objection received in time for the term the first of `extended` extended, but
    recorded after it ran (004 §8.5: no extension when a side objected in writing): the term goes
    back to its original end and the contract expires at it, now; the jobs of the extended term
    are cancelled. One received after that term's deadline is refused, as it was in time."""
    original_end = extended[0].due_on - timedelta(days=1)
    original_deadline = original_end - timedelta(days=_objection_days(contract))
    extended_to = contract.term_end
    if received_on > original_deadline:
        raise ValidationFailed(
            {
                "received_on": f"书面异议须在到期前 {_objection_days(contract)} 天提出（当时的合同期至 {original_end}，截止 {original_deadline}），"
                f"{received_on} 收到的异议已过期限；合同已于 {extended[0].due_on} 按约定顺延至 {extended_to}"
            }
        )
    now = utcnow()
    undone = f"{UNDONE}客户于 {received_on} 在期限内书面异议"
    for job in extended:
        job.outcome = ((job.outcome or "") + undone)[:200]
    for job in contract.jobs:
        if job.done_at is None:  # the extended term's notice and next extension
            job.done_at, job.outcome = now, f"客户于 {received_on} 在期限内书面异议，顺延已撤销，取消"
    contract.term_end = original_end
    contract.renewal_rule = "fixed_term"
    # The extended term's notice, if one waits, would announce an end that no longer comes.
    notifications.withdraw(
        session, notifications.term_notice_keys(contract.contract_no, extended_to), why=f"客户于 {received_on} 在期限内书面异议，顺延已撤销"
    )
    audit.record(
        session, actor, "stop_renewal", "contract", contract.contract_no, received_on=str(received_on), term_end=str(original_end),
        undone_extension_to=str(extended_to), reason="在期限内收到的书面异议于顺延后登记：撤销顺延，合同按原期限到期终止",
    )  # fmt: skip
    expire = _add_job(session, contract, "expire", original_end + timedelta(days=1))
    session.flush()
    run_contract_job(session, expire, objection_received_on=received_on)
    return expire


def _renewal_after(session: Session, contract: Contract, received_on: date) -> tuple[date, str] | None:
    """The contract's latest paper renewal (`renew_contract`) if it was recorded after
    `received_on`: (the day it was recorded, its new end); else None."""
    entry = session.scalar(
        sa.select(AuditEntry)
        .where(
            AuditEntry.object_type == "contract",
            AuditEntry.object_id == contract.contract_no,
            AuditEntry.action == "renew_contract",
        )
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    if entry is None:
        return None
    detail = entry.detail or {}
    # `renewed_on`: the business day it was recorded (entries before it have only their time).
    renewed_on = date.fromisoformat(detail["renewed_on"]) if detail.get("renewed_on") else to_local(entry.at).date()
    return (renewed_on, str(detail.get("new_end"))) if renewed_on > received_on else None


#: The rules whose contracts run to a date, and can be renewed to a later one.
DATED_RULES = ("fixed_term", "yearly_auto_extend")
#: A renewal further than this beyond the old end is taken for a typo (2072 for 2027).
MAX_RENEWAL_YEARS = 10


@dataclass(frozen=True)
class Renewal:
    contract: Contract
    previous_end: date
    previous_status: str
    account_resumed: bool  # the expiry had stopped the account; it may send again
    jobs: list[ContractJob]  # the new term's
    customer_told: bool  # False: the customer has no e-mail nor mobile (`notifications.contract_renewed`)


def renew_contract(session: Session, contract: Contract, *, until: date, actor: str, today: date, reason: str | None = None) -> Renewal:
    """A dated contract renewed on paper to a later end (DESIGN: active → renewed): the same
    contract and account, a new last day `until`, the jobs of the old term cancelled and those of
    the new one planned by the template's rule (a notice; an expiry, or 004's yearly extension).
    An account the expiry stopped sends again; one an administrator suspended stays so (its
    reason is not the contract's). Who and why go to the audit log; the caller commits."""
    from backoffice.services.sending_settings import account_for_settings

    contract = lock_contract(session, contract.id)  # (an expiry running meanwhile: see there)
    # Read afresh and locked (as `account resume`), after the contract: a closing committed
    # meanwhile is seen (a review).
    account = account_for_settings(session, contract.account.code)
    if refusal := _why_not_renewable(contract, account):
        raise Conflict(refusal)
    rule = renewal_rule_for(contract.terms, contract.fields.get("auto_renew"))
    old_end = contract.term_end
    assert old_end is not None
    if until <= old_end:
        raise ValidationFailed({"until": f"续签后的到期日须晚于原到期日 {old_end}"})
    if until <= today:
        raise ValidationFailed({"until": f"续签后的到期日 {until} 不晚于今天，请核对"})
    if until > date(old_end.year + MAX_RENEWAL_YEARS, 12, 31):
        raise ValidationFailed({"until": f"续签后的到期日 {until} 距原到期日超过 {MAX_RENEWAL_YEARS} 年，请核对"})
    why = audit.reason_text(reason) if reason is not None and reason.strip() else None
    resume = account.status == "suspended" and _stopped_by_expiry(session, account)
    now = utcnow()
    for job in contract.jobs:
        if job.done_at is None:
            job.done_at, job.outcome = now, f"合同已续签至 {until}，原合同期的任务取消"
    previous_status = contract.status
    contract.term_end = until
    contract.status = "renewed"
    contract.renewal_rule = rule
    if resume:  # never paid: it opens when the money arrives, as a new account does (as `account resume`)
        account.status = "awaiting_payment" if account.receivable > 0 and account.balance <= 0 else "active"
    # The old term's notices not sent yet (held until 09:00, or failed) would tell the customer
    # the contract ends or ended (found by an exploratory test: renewed at 06:28, the customer was
    # told at 09:00 that it had expired).
    notifications.withdraw(session, notifications.term_notice_keys(contract.contract_no, old_end), why=f"合同已于 {today} 续签至 {until}")
    told = notifications.contract_renewed(session, contract, previous_end=old_end, resumed=resume)
    audit.record(
        session, actor, "renew_contract", "contract", contract.contract_no, previous_end=str(old_end), new_end=str(until),
        previous_status=previous_status, reason=why, account_resumed=resume, renewed_on=str(today),
    )  # fmt: skip
    return Renewal(contract, old_end, previous_status, resume, plan_jobs(session, contract), told)


def renewable(contract: Contract) -> bool:
    """Whether the contract can be renewed (its page offers it)."""
    return _why_not_renewable(contract, contract.account) is None


def _why_not_renewable(contract: Contract, account: EnterpriseAccount) -> str | None:
    """Why the contract cannot be renewed on paper, or None: it runs to no date under its
    template, it was terminated, or its account was closed (its balance forfeited, it sends no
    more; a review: the renewal was offered and recorded, and said nothing of it)."""
    rule = renewal_rule_for(contract.terms, contract.fields.get("auto_renew"))
    if rule not in DATED_RULES or contract.term_end is None:
        return f"合同 {contract.contract_no} 为“{RENEWAL_NAMES.get(rule, rule)}”，没有固定的到期日，无需续签"
    if contract.status == "terminated":
        return f"合同 {contract.contract_no} 已终止，不能续签；请签发新合同"
    if account.status == "closed":
        return f"合同 {contract.contract_no} 的账户 {account.code} 已关闭（余额已不予退还），不能续签；请签发新合同"
    return None


def earliest_renewal_end(contract: Contract, today: date) -> date:
    """The first last day a renewal may give (the form's minimum): after the old end and after today."""
    assert contract.term_end is not None
    return max(contract.term_end, today) + timedelta(days=1)


def _stopped_by_expiry(session: Session, account: EnterpriseAccount) -> bool:
    """Whether the account's suspension is the expiry's (a contract's `expire` that suspended it
    is the latest of the changes to its sending status), not an administrator's."""
    numbers = list(session.scalars(sa.select(Contract.contract_no).where(Contract.account_id == account.id)))
    entries = session.scalars(
        sa.select(AuditEntry)
        .where(
            sa.or_(
                sa.and_(
                    AuditEntry.object_type == "account",
                    AuditEntry.object_id == account.code,
                    AuditEntry.action.in_(("suspend_account", "resume_account")),
                ),
                sa.and_(AuditEntry.object_type == "contract", AuditEntry.object_id.in_(numbers), AuditEntry.action == "expire"),
            )
        )
        .order_by(AuditEntry.id.desc())
    )
    for entry in entries:
        if entry.action == "expire" and not (entry.detail or {}).get("account_suspended"):
            continue  # an expiry that found the account already stopped changed nothing
        return entry.action == "expire"
    return False


def parse_until(value: str | None) -> date:
    """A renewal's new last day, as a form or the command line gives it."""
    try:
        return date.fromisoformat((value or "").strip())
    except ValueError:
        raise ValidationFailed({"until": "请填写续签后的到期日（YYYY-MM-DD）"}) from None


def parse_received_on(value: str | None) -> date:
    """The day a written objection was received, as a form or the command line gives it."""
    try:
        return date.fromisoformat((value or "").strip())
    except ValueError:
        raise ValidationFailed({"received_on": "请填写收到书面异议的日期（YYYY-MM-DD）"}) from None
