"""Scheduled jobs: APScheduler 3 with a persistent SQLAlchemy job store in the application
database. One dedicated process runs them (`flask --app wsgi jobs run`); other processes only
arm jobs in the store."""

from __future__ import annotations

from datetime import datetime, time

import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from flask import Flask, current_app

from backoffice.clock import SHANGHAI, utcnow
from backoffice.extensions import db
from backoffice.models import ContractJob
from backoffice.services.renewal import run_contract_job

JOB_HOUR = time(9, 0)
_app: Flask | None = None


def make_scheduler(app: Flask, scheduler_class: type[BaseScheduler] = BackgroundScheduler) -> BaseScheduler:
    return scheduler_class(
        jobstores={"default": SQLAlchemyJobStore(url=app.config["SQLALCHEMY_DATABASE_URI"], tablename="apscheduler_jobs")},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 7 * 24 * 3600},
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
    are deterministic and replace_existing is set). Called after the issuing transaction commits,
    and by the scheduler at start-up, so a crash between the two cannot lose a job."""
    rows = db.session.scalars(sa.select(ContractJob).where(ContractJob.armed_at.is_(None), ContractJob.done_at.is_(None))).all()
    if not rows:
        return 0
    scheduler = make_scheduler(app)
    scheduler.start(paused=True)
    try:
        for row in rows:
            run_at = datetime.combine(row.due_on, JOB_HOUR, tzinfo=SHANGHAI)
            scheduler.add_job(
                "backoffice.jobs:contract_job", trigger="date", run_date=run_at, args=[row.id],
                id=row.job_id, name=f"{row.kind} {row.contract.contract_no}", replace_existing=True,
            )
            row.armed_at = utcnow()
    finally:
        scheduler.shutdown(wait=False)
    db.session.commit()
    return len(rows)


def run_scheduler(app: Flask) -> None:
    """The scheduler process: arms anything pending, then runs due jobs (missed ones included)."""
    global _app
    from apscheduler.schedulers.blocking import BlockingScheduler

    _app = app
    with app.app_context():
        arm_pending(app)
    scheduler = make_scheduler(app, BlockingScheduler)
    scheduler.start()
