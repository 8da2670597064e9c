"""Renewal rules carried out by the scheduled jobs: expiry, yearly auto-extension, a missed job
run once when the scheduler comes back."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice import jobs
from backoffice.extensions import db
from backoffice.models import AuditEntry, ContractJob
from backoffice.services.renewal import run_contract_job
from tests.conftest import make_contract


def job(kind: str) -> ContractJob:
    """The latest pending job of that kind."""
    return db.session.scalars(
        sa.select(ContractJob).where(ContractJob.kind == kind, ContractJob.done_at.is_(None)).order_by(ContractJob.due_on.desc())
    ).first()


def test_fixed_term_contract_expires_once(app: Flask) -> None:
    issued = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None)
    assert issued.contract.term_end == date(2027, 11, 30)
    expire = job("expire")
    assert expire.due_on == date(2027, 12, 1)
    run_contract_job(db.session, expire)
    db.session.commit()
    assert issued.contract.status == "expired"
    first_outcome = expire.outcome
    assert run_contract_job(db.session, expire) == first_outcome  # a second run changes nothing
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == "expire")) == 1


def test_yearly_contract_extends_and_plans_the_next_year(app: Flask) -> None:
    issued = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30")
    run_contract_job(db.session, job("auto_extend"))
    db.session.commit()
    assert issued.contract.term_end == date(2028, 11, 30)
    assert job("auto_extend").due_on == date(2028, 12, 1)
    assert job("renewal_notice").due_on == date(2028, 10, 31)
    assert jobs.arm_pending(app) == 2


def test_long_term_and_until_used_up_arm_no_dated_jobs(app: Flask) -> None:
    make_contract(app, "lingxuntong_service")
    make_contract(app, "sms_genie_user")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ContractJob)) == 0


@pytest.mark.parametrize("days_late", [1, 400])
def test_a_job_missed_while_down_runs_exactly_once_when_the_scheduler_returns(app: Flask, days_late: int) -> None:
    """A job that fell due while the scheduler was down (a day, or over a year ago) runs once
    when the scheduler starts again, and never a second time."""
    issued = make_contract(app, "enterprise_sms_center")
    expire = job("expire")
    # The job fell due while the scheduler was down: move it to yesterday 09:00 in the store.
    store = jobs._job_store(app, jobs.make_scheduler(app))
    store.remove_job(expire.job_id)
    store.shutdown()
    expire.due_on = (datetime.now(UTC) - timedelta(days=days_late)).date()
    db.session.commit()
    assert jobs.arm_pending(app) == 1  # re-armed: a job missing from the store is never lost

    ran = threading.Event()
    jobs._app = app
    try:
        restarted = jobs.make_scheduler(app)
        restarted.add_listener(lambda event: ran.set(), mask=4096 | 8192)  # EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
        restarted.start()
        assert ran.wait(15)
        restarted.shutdown(wait=True)
        assert expire.job_id not in {j.id for j in jobs.stored_jobs(app)}  # consumed: never runs twice
    finally:
        jobs._app = None
    db.session.expire_all()
    assert db.session.get(ContractJob, expire.id).done_at is not None
    assert issued.contract.status == "expired"


def test_the_nightly_books_job_asserts_posts_and_checks(app: Flask) -> None:
    from pathlib import Path

    from backoffice.models import LedgerEvent

    issued = make_contract(app, "sms_business_service")
    jobs._app = app
    try:
        jobs.daily_books()
        jobs.daily_books()  # a second run (after downtime, say) changes nothing
    finally:
        jobs._app = None
    code = issued.contract.account.code
    assertions = db.session.scalars(sa.select(LedgerEvent).where(LedgerEvent.kind == "balance")).all()
    assert [(e.event_id, e.posted_at is not None) for e in assertions] == [(f"balance-{code}-2026-11-23", True)]
    month = Path(app.config["LEDGER_PATH"]) / "2026" / "2026-11.beancount"
    assert f"2026-11-23 balance Liabilities:Prepaid:{code}" in month.read_text(encoding="utf-8")
