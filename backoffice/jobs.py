"""Scheduled jobs: APScheduler 3 with a persistent SQLAlchemy job store in the application
database. One dedicated process runs them (`flask --app wsgi jobs run`); other processes only
arm jobs in the store."""

from __future__ import annotations

from datetime import datetime, time

import sqlalchemy as sa
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.date import DateTrigger
from flask import Flask, current_app

from backoffice.clock import SHANGHAI, utcnow
from backoffice.extensions import db
from backoffice.models import ContractJob
from backoffice.services.renewal import run_contract_job

JOB_HOUR = time(9, 0)
# A missed run (the scheduler was down) still runs once when it returns, within a week.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 7 * 24 * 3600}
_app: Flask | None = None


def make_scheduler(app: Flask, scheduler_class: type[BaseScheduler] = BackgroundScheduler) -> BaseScheduler:
    return scheduler_class(
        jobstores={
            "default": SQLAlchemyJobStore(url=app.config["SQLALCHEMY_DATABASE_URI"], tablename="apscheduler_jobs"),
            "memory": MemoryJobStore(),
        },
        job_defaults=JOB_DEFAULTS,
        timezone=SHANGHAI,
    )


def contract_job(job_row_id: int) -> None:
    """APScheduler entry point (referenced by name in the job store)."""
    app = _app or current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        job = db.session.get(ContractJob, job_row_id)
        if job is not None:
            run_contract_job(db.session, job)
            db.session.commit()


def arm_pending(app: Flask) -> int:
    """Put every not-yet-armed contract job into the persistent job store (idempotent: job ids
    are deterministic and an existing one is replaced). Called after the issuing transaction
    commits, and every minute by the scheduler process, so a crash in between loses no job.

    Writes to the store directly instead of starting a scheduler here: a started scheduler,
    even paused, could run a past-due job inside the web process when it shuts down."""
    rows = db.session.scalars(sa.select(ContractJob).where(ContractJob.armed_at.is_(None), ContractJob.done_at.is_(None))).all()
    if not rows:
        return 0
    scheduler = make_scheduler(app)
    store = SQLAlchemyJobStore(url=app.config["SQLALCHEMY_DATABASE_URI"], tablename="apscheduler_jobs")
    store.start(scheduler, "default")
    try:
        for row in rows:
            trigger = DateTrigger(run_date=datetime.combine(row.due_on, JOB_HOUR, tzinfo=SHANGHAI), timezone=SHANGHAI)
            job = Job(
                scheduler, id=row.job_id, func="backoffice.jobs:contract_job", trigger=trigger, executor="default",
                args=[row.id], kwargs={}, name=f"{row.kind} {row.contract.contract_no}", next_run_time=trigger.run_date,
                **JOB_DEFAULTS,
            )
            try:
                store.add_job(job)
            except ConflictingIdError:
                store.update_job(job)
            row.armed_at = utcnow()
    finally:
        store.shutdown()
    db.session.commit()
    return len(rows)


def stored_jobs(app: Flask) -> list[Job]:
    """The jobs in the persistent store, read without starting a scheduler."""
    store = SQLAlchemyJobStore(url=app.config["SQLALCHEMY_DATABASE_URI"], tablename="apscheduler_jobs")
    store.start(make_scheduler(app), "default")
    try:
        return store.get_all_jobs()
    finally:
        store.shutdown()


def _arm_pending_job() -> None:
    app = _app or current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        arm_pending(app)


def run_scheduler(app: Flask) -> None:
    """The scheduler process: arms anything pending, then runs due jobs (missed ones included)."""
    global _app
    from apscheduler.schedulers.blocking import BlockingScheduler

    _app = app
    with app.app_context():
        arm_pending(app)
    scheduler = make_scheduler(app, BlockingScheduler)
    # Also wakes the loop every minute, so jobs armed by other processes are seen promptly.
    scheduler.add_job(_arm_pending_job, "interval", minutes=1, id="arm-pending", replace_existing=True, jobstore="memory")
    scheduler.start()
