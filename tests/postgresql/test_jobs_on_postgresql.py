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
