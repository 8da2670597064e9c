"""Migrations on PostgreSQL: the concurrent index build of f1d7c3a9e5b2 (found by a review: an
interrupted build left an INVALID index that the re-run took for done)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from backoffice import create_app
from backoffice.extensions import db
from tests.conftest import app_config

pytestmark = pytest.mark.postgresql


def test_an_index_left_invalid_by_an_interrupted_concurrent_build_is_built_again(
    tmp_path: Path, signing_files: tuple, postgresql_url: str
) -> None:
    """CREATE INDEX CONCURRENTLY that fails (cancelled, lock_timeout, deadlock, the deploy killed)
    leaves an INVALID index behind and the revision unrecorded; the re-run's IF NOT EXISTS skips it,
    records the revision, and the index stays invalid for good (never used, still written)."""
    app = create_app(app_config(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "e9c5a1d7b3f8"]).exit_code == 0
    blocking = sa.create_engine(postgresql_url)
    blocker = blocking.connect()  # a long report: REPEATABLE READ, a snapshot held
    blocker.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
    blocker.exec_driver_sql("SELECT count(*) FROM enterprise_accounts").scalar()

    done = threading.Event()

    def cancel_the_build() -> None:  # an operator's Ctrl-C, a deploy's timeout
        watching = sa.create_engine(postgresql_url, isolation_level="AUTOCOMMIT")
        with watching.connect() as watcher:
            while not done.wait(0.2):
                watcher.exec_driver_sql(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE '%%CREATE INDEX CONCURRENTLY%%' AND pid <> pg_backend_pid()"
                ).all()
        watching.dispose()

    canceller = threading.Thread(target=cancel_the_build)
    canceller.start()
    first = runner.invoke(args=["db", "upgrade"])
    done.set()
    canceller.join()
    assert first.exit_code != 0  # the build waited for the old snapshot and was cancelled
    blocker.rollback()
    blocker.close()
    blocking.dispose()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        with db.engine.connect() as connection:
            valid = connection.exec_driver_sql(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_messages_account_id_id'::regclass"
            ).scalar()
        db.engine.dispose()
    assert valid, "the upgrade succeeded and left ix_messages_account_id_id INVALID"
