"""Scheduled jobs: APScheduler 3 with a persistent SQLAlchemy job store in the application
database. One dedicated process runs them (`flask --app wsgi jobs run`); other processes only
arm jobs in the store."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from datetime import datetime, time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.date import DateTrigger
from flask import Flask, current_app

from backoffice.clock import SHANGHAI, utcnow
from backoffice.extensions import db
from backoffice.models import Contract, ContractJob
from backoffice.services.notifications import NOTICE_HOURS
from backoffice.services.renewal import run_contract_job

JOB_HOUR = NOTICE_HOURS[0]  # notices go out in working hours (those made at night wait for it)
#: A contract's term ends with its last day (自…起至…止): its expiry or extension takes effect at
#: the first moment of the next (found by a review: at 09:00 the account sent and was charged for
#: nine hours past its contract).
AT_TERM_END = {"expire": time(0, 0), "auto_extend": time(0, 0)}
# A run missed while the scheduler was down still runs once when it returns, however late
# (misfire_grace_time None); coalesce folds several missed runs into one.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
_app: Flask | None = None


def _persistent_store(app: Flask) -> SQLAlchemyJobStore:
    """The job store in the application's database. No pool: APScheduler shuts its stores down
    before its own thread has stopped, and a pooled connection that thread opens after the
    engine's disposal would be left open; unpooled, each is closed when given back."""
    engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.pool.NullPool, hide_parameters=True)
    return SQLAlchemyJobStore(engine=engine, tablename="apscheduler_jobs")


def make_scheduler(app: Flask, scheduler_class: type[BaseScheduler] = BackgroundScheduler) -> BaseScheduler:
    return scheduler_class(
        jobstores={"default": _persistent_store(app), "memory": MemoryJobStore()},
        job_defaults=JOB_DEFAULTS,
        timezone=SHANGHAI,
    )


def contract_job(job_row_id: int) -> None:
    """APScheduler entry point (referenced by name in the job store). The job loaded here may be
    stale by the time it runs (a renewal or an objection committing meanwhile, at 00:00 or as the
    scheduler catches up): run_contract_job locks the contract and reads the job again first."""
    app = _app or current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        job = db.session.get(ContractJob, job_row_id)
        if job is not None:
            run_contract_job(db.session, job)
            db.session.commit()


def _job_store(app: Flask, scheduler: BaseScheduler) -> SQLAlchemyJobStore:
    store = _persistent_store(app)
    store.start(scheduler, "default")
    return store


def arm_pending(app: Flask) -> int:
    """Put every contract job not yet in the persistent job store into it: new ones, and armed
    ones the store lost (a run that failed is removed by APScheduler; it is retried this way).
    Called after the issuing transaction commits and every minute by the scheduler process, so a
    crash in between loses no job; job ids are deterministic, so arming twice is harmless.

    Writes to the store directly instead of starting a scheduler here: a started scheduler,
    even paused, could run a past-due job inside the web process when it shuts down."""
    pending = db.session.execute(
        sa.select(ContractJob.id, ContractJob.job_id, ContractJob.kind, ContractJob.due_on, Contract.contract_no)
        .join(Contract, ContractJob.contract_id == Contract.id)
        .where(ContractJob.done_at.is_(None))
    ).all()
    # End the read before the job store (its own connection) writes: SQLite allows one writer.
    db.session.commit()
    if not pending:
        return 0
    scheduler = make_scheduler(app)
    store = _job_store(app, scheduler)
    armed = []
    try:
        stored = {job.id for job in store.get_all_jobs()}
        for row_id, job_id, kind, due_on, contract_no in pending:
            if job_id in stored:
                continue
            at = AT_TERM_END.get(kind, JOB_HOUR)
            trigger = DateTrigger(run_date=datetime.combine(due_on, at, tzinfo=SHANGHAI), timezone=SHANGHAI)
            job = Job(
                scheduler,
                id=job_id,
                func="backoffice.jobs:contract_job",
                trigger=trigger,
                executor="default",
                args=[row_id],
                kwargs={},
                name=f"{kind} {contract_no}",
                next_run_time=trigger.run_date,
                **JOB_DEFAULTS,
            )
            try:
                store.add_job(job)
            except ConflictingIdError:
                store.update_job(job)
            armed.append(row_id)
    finally:
        store.shutdown()
    if armed:
        db.session.execute(sa.update(ContractJob).where(ContractJob.id.in_(armed)).values(armed_at=utcnow()))
        db.session.commit()
    return len(armed)


def disarm_done(app: Flask, contract_no: str) -> int:
    """Take the contract's jobs that are done (cancelled by an objection or a renewal) out of the
    persistent store, so that `jobs list` no longer shows them due; one left there (this failed)
    does nothing when it runs. Called after the cancelling transaction commits."""
    done = set(
        db.session.scalars(
            sa.select(ContractJob.job_id)
            .join(Contract, ContractJob.contract_id == Contract.id)
            .where(Contract.contract_no == contract_no, ContractJob.done_at.is_not(None))
        )
    )
    db.session.commit()  # (end the read before the store's own connection writes: SQLite allows one writer)
    store = _job_store(app, make_scheduler(app))
    removed = 0
    try:
        for job in store.get_all_jobs():
            if job.id in done:
                with contextlib.suppress(JobLookupError):  # (ran meanwhile)
                    store.remove_job(job.id)
                    removed += 1
    finally:
        store.shutdown()
    return removed


def stored_jobs(app: Flask) -> list[Job]:
    """The jobs in the persistent store, read without starting a scheduler."""
    store = _job_store(app, make_scheduler(app))
    try:
        return store.get_all_jobs()
    finally:
        store.shutdown()


def daily_books() -> None:
    """Every morning: today's balance assertions from the database, post whatever is pending,
    then check the books (persistent job: runs once after downtime; idempotent). The check
    also warms beancount's cache of the closed months, so the slow first check after a month
    turns over is paid here at 00:10, not by finance during the day (the check keeps a
    summary of each month, so the next one reloads only what changed)."""
    from pathlib import Path

    from backoffice.clock import local_today
    from backoffice.services.bookkeeping import check_and_reconcile, post_pending
    from backoffice.services.credit import assertion_due, record_balance_assertions
    from backoffice.services.usage import book_usage

    app = _app or current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        recover_documents(app)
        # The check runs whatever happened before it: a failed posting (a full disk) stopped the
        # job, and no "nightly ledger check failed" was logged (found by a review).
        try:
            book_usage(db.session, before=local_today())  # yesterday's (and any earlier) usage
            db.session.commit()
            if assertion_due(local_today(), app.config["LEDGER_BALANCE_ASSERTIONS"]):
                record_balance_assertions(db.session, local_today())
                db.session.commit()
            post_pending(db.session, Path(app.config["LEDGER_PATH"]))
        except Exception:
            db.session.rollback()
            app.logger.exception("nightly posting to the books failed: checking them all the same")
        report = check_and_reconcile(db.session, Path(app.config["LEDGER_PATH"]))
        if not report.ok:
            app.logger.error("nightly ledger check failed: %s", report)


def recover_documents(app: Flask) -> None:
    """Committed documents left `.pending` (their process died between the commit and the
    rename) put in place, and stale `.pending` files of transactions that never committed
    removed: at the scheduler's start and every night. A failure is logged, never raised: it
    must not stop the scheduler from starting nor the books from being checked."""
    from backoffice.services.staged_files import recover_staged_files

    try:
        recover_staged_files(db.session, Path(app.config["DOCUMENTS_PATH"]))
    except Exception:
        app.logger.exception("recovering the committed documents failed")
    finally:
        db.session.rollback()  # (it only read)


def mail_settings(app: Flask) -> Any:
    from pathlib import Path

    from backoffice.services.notifications import MailSettings

    c = app.config
    return MailSettings(
        host=c["SMTP_HOST"], port=int(c["SMTP_PORT"]), user=c["SMTP_USER"], password=c["SMTP_PASSWORD"], sender=c["MAIL_FROM"],
        outbox=Path(c["OUTBOX_PATH"]), documents_root=Path(c["DOCUMENTS_PATH"]), security=c.get("SMTP_SECURITY", ""),
    )  # fmt: skip


def install_sms_sender(app: Flask) -> None:
    """SMS notifications go out as free messages of the customer's account through the
    dispatcher's queue (issue #4); a sender already installed (a test's) is kept."""
    from backoffice.services.dispatcher import notification_sender

    app.extensions.setdefault("sms_notification_sender", notification_sender(app.config))


def deliver_notifications_now(app: Flask) -> dict[str, int]:
    """Send the notifications that are due: e-mail, and SMS through the dispatcher's queue."""
    from backoffice.services.notifications import deliver_pending

    install_sms_sender(app)
    with app.app_context():
        sms = app.extensions.get("sms_notification_sender")
        return deliver_pending(db.session, mail_settings(app), send_sms=sms)


def _deliver_notifications_job() -> None:
    deliver_notifications_now(_app or current_app._get_current_object())  # type: ignore[attr-defined]


POST_PENDING_MINUTES = 5  # how long a book event a money action could not post waits at most


def post_pending_now(app: Flask) -> int:
    """Post the book events still pending (a money action whose own catch-up failed, a process
    that died after its commit): at the scheduler's start and every few minutes, not only at the
    next money action or 00:10. Nothing pending, the usual case, is one indexed read: no lock,
    no file. Otherwise `post_pending` reads the queue again under the books' lock, which the
    web's posting takes too, so an event is never posted twice."""
    from backoffice.models import LedgerEvent
    from backoffice.services.bookkeeping import post_pending

    with app.app_context():
        try:
            waiting = db.session.scalar(sa.select(LedgerEvent.id).where(LedgerEvent.posted_at.is_(None)).limit(1))
            db.session.rollback()  # (the queue is read afresh under the lock)
            return post_pending(db.session, Path(app.config["LEDGER_PATH"])) if waiting is not None else 0
        except Exception:
            db.session.rollback()
            app.logger.exception("posting the pending book events failed (tried again in %s minutes)", POST_PENDING_MINUTES)
            return 0


def _post_pending_job() -> None:
    post_pending_now(_app or current_app._get_current_object())  # type: ignore[attr-defined]


def _arm_pending_job() -> None:
    app = _app or current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        arm_pending(app)


LOCK_CHECK_SECONDS = 15  # how often the scheduler checks it still holds its lock
#: Any fixed number: the PostgreSQL advisory lock the scheduler process holds for its life.
SCHEDULER_LOCK_KEY = 0x5D5_B0FF1CE


class SchedulerLock:
    """One scheduler per installation (DESIGN: scale-out): PostgreSQL's session advisory lock on a
    connection of its own, SQLite's lock file in the instance folder. Either is released by the
    operating system or the server when the process dies, so a standby takes over."""

    def __init__(self, app: Flask) -> None:
        self.url = app.config["SQLALCHEMY_DATABASE_URI"]
        self.path = Path(app.config["INSTANCE_PATH"]) / "scheduler.lock"
        self._connection: sa.Connection | None = None
        self._file: Any = None

    def acquire(self) -> bool:
        """Take the lock if free; True if this process holds it now."""
        if self.url.startswith("postgresql"):
            # Keepalives: a connection dropped on the way (a NAT, a failover) is noticed, and `held` says so.
            keepalive = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
            engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool, connect_args=keepalive, hide_parameters=True)
            connection = engine.connect()
            if connection.execute(sa.select(sa.func.pg_try_advisory_lock(SCHEDULER_LOCK_KEY))).scalar():
                connection.commit()  # the lock is the session's; nothing else is held open
                self._connection = connection
                return True
            connection.close()
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the life of the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def held(self) -> bool:
        """Whether this process still holds the lock: on PostgreSQL the session that took it may
        have ended (server restart, failover, a dropped connection), releasing it to a standby."""
        if self._file is not None:
            return True
        if self._connection is None:
            return False
        try:
            mine = self._connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                    " AND classid = :high AND objid = :low AND granted"
                ),
                {"high": (SCHEDULER_LOCK_KEY >> 32) & 0xFFFFFFFF, "low": SCHEDULER_LOCK_KEY & 0xFFFFFFFF},
            ).scalar()
            self._connection.commit()
            return bool(mine)
        except sa.exc.DBAPIError:
            return False

    def release(self) -> None:
        if self._connection is not None:
            # Unlocked before the session ends: a closed connection's server process lets go of
            # the lock only once it has exited, later on a busy server, and a standby waited.
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # already gone with its session
                self._connection.execute(sa.select(sa.func.pg_advisory_unlock(SCHEDULER_LOCK_KEY)))
                self._connection.commit()
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._connection.close()  # ends the session, and its lock
            self._connection = None
        if self._file is not None:
            self._file.close()
            self._file = None


def run_scheduler(app: Flask, *, standby_poll: float = 10.0, stop: threading.Event | None = None) -> None:
    """The scheduler process: waits for the installation's scheduler lock (a second process is a
    standby), arms anything pending, then runs due jobs (missed ones included). A lock lost with
    its database session stops the jobs at once and the process stands by to take it again: it
    used to exit, and after one database restart nothing ran renewals, notices or the books until
    someone started it by hand (found by a review). `stop` ends it (tests); so do SIGTERM and ^C."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    stop = stop or threading.Event()
    lock = SchedulerLock(app)
    while not stop.is_set():
        if not _take_lock(app, lock, standby_poll, stop):
            return
        lost = threading.Event()
        try:
            scheduler = scheduler_for(app, BlockingScheduler)

            def still_ours(scheduler: BaseScheduler = scheduler, lost: threading.Event = lost) -> None:
                if stop.is_set():
                    scheduler.shutdown(wait=False)
                elif not lock.held():  # a standby may run jobs now: this one stops at once
                    app.logger.critical("the scheduler lock was lost (database session ended): stopping the jobs, standing by")
                    lost.set()
                    scheduler.shutdown(wait=False)

            scheduler.add_job(still_ours, "interval", seconds=LOCK_CHECK_SECONDS, id="lock-check", replace_existing=True, jobstore="memory")
            scheduler.start()
        except sa.exc.DBAPIError as error:  # the database went away while the jobs were armed
            app.logger.error("the scheduler could not start its jobs (%s): standing by", error.__class__.__name__)
            lost.set()
        finally:
            lock.release()
        if not lost.is_set():
            return  # shut down on purpose
        stop.wait(standby_poll)


def _take_lock(app: Flask, lock: SchedulerLock, poll: float, stop: threading.Event) -> bool:
    """Wait until this process holds the scheduler lock (True), or `stop` is set (False); a
    database that cannot be reached is waited for too."""
    waiting = False
    while not stop.is_set():
        try:
            if lock.acquire():
                if waiting:
                    app.logger.warning("the scheduler lock is taken: starting the jobs")
                return True
            reason = "another scheduler process holds the lock"
        except sa.exc.DBAPIError as error:
            lock.release()
            reason = f"the database cannot be reached ({error.__class__.__name__})"
        if not waiting:
            app.logger.warning("%s: standing by", reason)
            waiting = True
        stop.wait(poll)
    return False


def scheduler_for(app: Flask, scheduler_class: type[BaseScheduler]) -> BaseScheduler:
    """The scheduler process's scheduler, its jobs added, not started."""
    global _app
    _app = app
    with app.app_context():
        arm_pending(app)
        recover_documents(app)
    post_pending_now(app)
    scheduler = make_scheduler(app, scheduler_class)
    # Also wakes the loop every minute, so jobs armed by other processes are seen promptly.
    scheduler.add_job(_arm_pending_job, "interval", minutes=1, id="arm-pending", replace_existing=True, jobstore="memory")
    # Added only when the store has none: replacing it would compute its next run from now and
    # drop a run missed while the scheduler was down (found by a review); stored, it runs once.
    if not any(job.id == "daily-books" for job in stored_jobs(app)):
        scheduler.add_job("backoffice.jobs:daily_books", "cron", hour=0, minute=10, id="daily-books")
    scheduler.add_job(_deliver_notifications_job, "interval", seconds=30, id="notifications", replace_existing=True, jobstore="memory")
    scheduler.add_job(
        _post_pending_job, "interval", minutes=POST_PENDING_MINUTES, id="post-pending", replace_existing=True, jobstore="memory"
    )
    return scheduler
