"""Every test of tests/backoffice/test_jobs.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_jobs import *  # noqa: F403


def test_a_scheduler_knows_when_its_lock_went_with_its_session(app: Flask) -> None:  # noqa: F405
    """Found by a review: the advisory lock's connection ended (server restart, failover, a
    dropped connection) and the scheduler went on running jobs beside the standby that took it."""
    import sqlalchemy as sa

    from backoffice import jobs
    from backoffice.extensions import db

    first, second = jobs.SchedulerLock(app), jobs.SchedulerLock(app)
    try:
        assert first.acquire() and first.held()
        with db.engine.connect() as admin:
            ended = admin.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = :low"),
                {"low": jobs.SCHEDULER_LOCK_KEY & 0xFFFFFFFF},
            ).all()
        assert ended
        assert not first.held()  # its periodic check stops the scheduler
        assert second.acquire()
    finally:
        first.release()  # no error for a connection already gone
        second.release()


def test_a_scheduler_whose_lock_went_with_its_session_stands_by_and_takes_it_again(app: Flask, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F405
    """Found by a review: the scheduler exited when its lock's session ended (a database
    restart), and nothing ran renewals, notices or the books until someone started it again."""
    import threading
    import time

    import sqlalchemy as sa

    from backoffice import jobs
    from backoffice.extensions import db

    def holders() -> list[int]:
        with db.engine.connect() as admin:
            return list(
                admin.execute(
                    sa.text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :low AND granted"),
                    {"low": jobs.SCHEDULER_LOCK_KEY & 0xFFFFFFFF},
                ).scalars()
            )

    def wait_for(condition, seconds: float = 15.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + seconds
        while not (found := condition()):
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)
        return found

    monkeypatch.setattr(jobs, "LOCK_CHECK_SECONDS", 0.2)
    stop = threading.Event()
    scheduler = threading.Thread(target=jobs.run_scheduler, args=(app,), kwargs={"standby_poll": 0.2, "stop": stop})
    scheduler.start()
    try:
        (first,) = wait_for(holders)
        with db.engine.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        (again,) = wait_for(lambda: [pid for pid in holders() if pid != first])  # taken again, by a new session
        assert scheduler.is_alive() and again != first
    finally:
        stop.set()
        scheduler.join(10)
    assert not scheduler.is_alive() and holders() == []  # stopped on purpose: the lock released
