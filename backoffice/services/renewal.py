"""Renewal rules: the dated actions each template's term rule requires, and what they do."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy.orm import Session

from backoffice.clock import utcnow
from backoffice.models import Contract, ContractJob
from backoffice.services import audit
from backoffice.services.contract_fields import add_months


def renewal_rule_for(terms: dict, auto_renew: bool | None) -> str:
    rule = terms.get("term_rule", "fixed_term")
    if rule == "yearly_auto_extend" and auto_renew is False:
        return "fixed_term"
    return rule


def planned_jobs(contract: Contract) -> list[tuple[str, date]]:
    """(kind, due date) for the contract's current term."""
    end = contract.term_end
    notice = int(contract.terms.get("objection_notice_days") or contract.terms.get("renewal_notice_days") or 30)
    if contract.renewal_rule == "fixed_term" and end:
        return [("renewal_notice", end - timedelta(days=notice)), ("expire", end + timedelta(days=1))]
    if contract.renewal_rule == "yearly_auto_extend" and end:
        return [("renewal_notice", end - timedelta(days=notice)), ("auto_extend", end + timedelta(days=1))]
    # long_term: nothing dated. until_used_up: watched by the daily zero-balance job.
    return []


def plan_jobs(session: Session, contract: Contract) -> list[ContractJob]:
    jobs = []
    for kind, due in planned_jobs(contract):
        job = ContractJob(contract=contract, kind=kind, due_on=due, job_id=f"contract:{contract.contract_no}:{kind}:{due.isoformat()}")
        session.add(job)
        jobs.append(job)
    return jobs


def run_contract_job(session: Session, job: ContractJob) -> str:
    """Carry out one due action; idempotent (a job already done is not redone)."""
    if job.done_at is not None:
        return job.outcome or "done"
    contract = job.contract
    if contract.status in ("terminated", "expired"):
        outcome = f"合同已{contract.status_name}，跳过"
    elif job.kind == "renewal_notice":
        outcome = f"续约提醒：合同 {contract.contract_no} 将于 {contract.term_end} 到期"
        audit.record(session, "scheduler", "renewal_notice", "contract", contract.contract_no, term_end=str(contract.term_end))
    elif job.kind == "expire":
        contract.status = "expired"
        outcome = "合同到期终止"
        audit.record(session, "scheduler", "expire", "contract", contract.contract_no)
    elif job.kind == "auto_extend":
        assert contract.term_end is not None
        old_end = contract.term_end
        contract.term_end = add_months(old_end + timedelta(days=1), 12) - timedelta(days=1)
        outcome = f"无书面异议，自动顺延一年至 {contract.term_end}"
        audit.record(
            session, "scheduler", "auto_extend", "contract", contract.contract_no, old_end=str(old_end), new_end=str(contract.term_end)
        )
        plan_jobs(session, contract)
    else:
        outcome = f"未知任务类型 {job.kind}"
    job.done_at = utcnow()
    job.outcome = outcome
    return outcome
