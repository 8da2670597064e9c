"""Migrations on PostgreSQL: the concurrent index builds of f2b7d9e1c3a4, b9d3f5a7c1e8,
f1d7c3a9e5b2 and c4e6a8b0d2f5 (found by reviews: an interrupted build left an INVALID index that
the re-run took for done, or failed on for good)."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner

from backoffice import create_app
from backoffice.extensions import db
from backoffice.models import Contract, Receipt
from backoffice.services.templates import get_template
from tests.backoffice.test_migrations import (
    LEFT_AS_THEY_ARE,
    LINES_BEFORE_UPPER_CASE,
    at_lines_before_upper_case,
    head_revision,
    schema_differences,
    statement_references,
)
from tests.conftest import app_config, make_contract
from tests.postgresql.server import run_script

pytestmark = pytest.mark.postgresql

#: Every revision that builds an index CONCURRENTLY, by the revision before it and the index.
CONCURRENT_BUILDS = [
    ("e6a2c4d8f0b1", "ix_message_parts_smsc_message_id_id"),  # f2b7d9e1c3a4
    ("a7c1e9f3b5d2", "ix_messages_recipient_account"),  # b9d3f5a7c1e8
    ("e9c5a1d7b3f8", "ix_messages_account_id_id"),  # f1d7c3a9e5b2
    ("a3c9e5f1b7d4", "ix_message_parts_unanswered"),  # c4e6a8b0d2f5
    ("f3b5d7a9c1e4", "ix_mobile_originated_account_received"),  # a6c8e0b2d4f7
]


def index_valid(connection: sa.Connection, name: str) -> bool | None:
    """Whether the index is valid (None: there is none)."""
    return connection.exec_driver_sql(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %(name)s", {"name": name}
    ).scalar()


@pytest.mark.parametrize(("before", "index"), CONCURRENT_BUILDS)
def test_an_index_left_invalid_by_an_interrupted_concurrent_build_is_built_again(
    tmp_path: Path, signing_files: tuple, postgresql_url: str, before: str, index: str
) -> None:
    """CREATE INDEX CONCURRENTLY that fails (cancelled, lock_timeout, deadlock, the deploy killed)
    leaves an INVALID index behind and the revision unrecorded; the re-run's IF NOT EXISTS skipped it,
    recorded the revision, and the index stayed invalid for good (never used, still written); the
    re-run of f2b7d9e1c3a4 and b9d3f5a7c1e8, without IF NOT EXISTS, failed with DuplicateTable for
    good (found by a review)."""
    app = create_app(app_config(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", before]).exit_code == 0
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
    with app.app_context():
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == before
            assert index_valid(connection, index) is False  # what the cancelled build left
        db.engine.dispose()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        with db.engine.connect() as connection:
            valid = index_valid(connection, index)
        assert schema_differences(db.engine) == []
        db.engine.dispose()
    assert valid, f"the upgrade succeeded and left {index} INVALID"


@pytest.mark.parametrize(
    ("before", "table", "new", "columns", "old"),
    [
        ("e6a2c4d8f0b1", "message_parts", "ix_message_parts_smsc_message_id_id", "smsc_message_id, id", "ix_message_parts_smsc_message_id"),
        ("a7c1e9f3b5d2", "messages", "ix_messages_recipient_account", "recipient, account_id, accepted_at", "ix_messages_recipient"),
    ],
)
def test_a_run_stopped_after_an_index_replaced_another_finishes_when_run_again(
    tmp_path: Path, signing_files: tuple, postgresql_url: str, before: str, table: str, new: str, columns: str, old: str
) -> None:
    """The concurrent build and drop commit one by one, outside the transaction that records the
    revision: a run killed after the drop left the new index and no old one, and the re-run failed
    for good on the drop (found by a review)."""
    app = create_app(app_config(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", before]).exit_code == 0
    with app.app_context():
        with db.engine.connect() as connection:  # what the killed run had done
            connection.exec_driver_sql(f"CREATE INDEX {new} ON {table} ({columns})")
            connection.exec_driver_sql(f"DROP INDEX {old}")
            connection.commit()
        db.engine.dispose()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        assert schema_differences(db.engine) == []
        db.engine.dispose()


def upgrade_script(runner: FlaskCliRunner, *revisions: str) -> str:
    """The SQL of `flask db upgrade --sql [revisions]`, which must succeed."""
    result = runner.invoke(args=["db", "upgrade", "--sql", *revisions])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def downgrade_script(runner: FlaskCliRunner, revisions: str) -> str:
    """The SQL of `flask db downgrade --sql revisions`, which must succeed."""
    result = runner.invoke(args=["db", "downgrade", "--sql", revisions])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_the_sql_of_an_offline_upgrade_builds_the_models(tmp_path: Path, signing_files: tuple, postgresql_url: str) -> None:
    """`flask db upgrade --sql` writes the script through to the head, and psql running it on an
    empty database builds what the models declare (and the downgrade's script takes it all down
    again). From a review: the migrations that read the database (a check, a backfill, the state
    of an index) failed offline with a traceback."""
    app = create_app(app_config(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    script = upgrade_script(app.test_cli_runner())
    assert f"UPDATE alembic_version SET version_num='{head_revision()}'" in script
    ran = run_script(postgresql_url, script)
    assert ran.returncode == 0, ran.stderr
    with app.app_context():
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
        assert schema_differences(db.engine) == []
        db.engine.dispose()
    ran = run_script(postgresql_url, downgrade_script(app.test_cli_runner(), f"{head_revision()}:base"))
    assert ran.returncode == 0, ran.stderr
    with app.app_context():
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()


def test_an_offline_upgrade_gives_contracts_the_bank_they_printed(tmp_path: Path, signing_files: tuple, postgresql_url: str) -> None:
    """The backfill of e8c2a4b6d1f3, offline: the script gives a contract issued before it the bank
    of its template's details, as the online upgrade does."""
    app = create_app(app_config(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "d5f1b3a7c9e2"]).exit_code == 0
    with app.app_context():
        issued = make_contract(app, "gateway_api_partner")
        issued.contract.terms = {k: v for k, v in issued.contract.terms.items() if not k.startswith("provider_bank")}
        db.session.commit()
        db.session.remove()
    ran = run_script(postgresql_url, upgrade_script(runner, "d5f1b3a7c9e2:e8c2a4b6d1f3"))
    assert ran.returncode == 0, ran.stderr
    with app.app_context():
        terms = db.session.scalar(sa.select(Contract.terms))
        provider = get_template("gateway_api_partner").provider
        assert (terms["provider_bank_name"], terms["provider_bank_account"]) == (provider["bank_name"], provider["bank_account"])
        assert terms["provider_bank_name"]  # a real bank, not the empty one of a template without details
        db.session.remove()
        db.engine.dispose()


def test_an_offline_upgrade_refuses_a_bank_reference_live_twice(tmp_path: Path, signing_files: tuple, postgresql_url: str) -> None:
    """The check of a7c1e9f3b5d2, offline: the script stops before the unique index, naming the
    reference, as the online upgrade does."""
    app = create_app(app_config(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "f2b7d9e1c3a4"]).exit_code == 0
    with app.app_context():
        account_id = make_contract(app, "gateway_api_partner").contract.account_id
        receipt = {"account_id": account_id, "amount": 100, "paid_on": date(2026, 11, 20), "payer_name": "付款人",
                   "bank_reference": "TWICE-1", "status": "pending", "recorded_by": "finance"}  # fmt: skip
        db.session.execute(sa.insert(Receipt.__table__), [{**receipt, "bank": "icbc"}, {**receipt, "bank": "cmb"}])
        db.session.commit()
        db.session.remove()
    ran = run_script(postgresql_url, upgrade_script(runner, "f2b7d9e1c3a4:a7c1e9f3b5d2"))
    assert (
        ran.returncode != 0 and "bank references live in more than one receipt (reject or reverse all but one first): TWICE-1" in ran.stderr
    )
    with app.app_context():
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "f2b7d9e1c3a4"
        db.engine.dispose()


def test_references_of_lines_imported_before_they_were_upper_cased_are_upper_cased(
    tmp_path: Path, signing_files: tuple, postgresql_url: str
) -> None:
    """d8e4a2c6f0b3 online on PostgreSQL: as on SQLite (tests/backoffice/test_migrations.py), the
    unique bank_transaction never hit, every line kept."""
    app, runner = at_lines_before_upper_case(tmp_path, signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url)
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        assert statement_references(db.engine) == {ident: expected for ident, (*_, expected) in LINES_BEFORE_UPPER_CASE.items()}
        db.engine.dispose()
    for ident in LEFT_AS_THEY_ARE:
        assert f"statement line {ident}: reference {LINES_BEFORE_UPPER_CASE[ident][0]!r} left as it is" in result.stderr, result.stderr


def test_an_offline_upgrade_upper_cases_the_references_of_lines_imported_before(
    tmp_path: Path, signing_files: tuple, postgresql_url: str
) -> None:
    """d8e4a2c6f0b3 offline: the script does what the online upgrade does for ASCII references,
    whatever the server's locale, and leaves (and names) the others."""
    app, runner = at_lines_before_upper_case(tmp_path, signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url)
    ran = run_script(postgresql_url, upgrade_script(runner, "b2d4f6a8c0e3:d8e4a2c6f0b3"))
    assert ran.returncode == 0, ran.stderr
    with app.app_context():
        after = statement_references(db.engine)
        db.engine.dispose()
    expected = {ident: new if old.isascii() else old for ident, (old, _, _, new) in LINES_BEFORE_UPPER_CASE.items()}
    assert after == expected
    assert "statement line 3: reference 'k2' left as it is: line 2 has 'K2' for the same date and amount" in ran.stderr, ran.stderr
    assert "statement line 6: reference 'aB' left as it is: line 5 has 'AB'" in ran.stderr
    for ident in (8, 9):  # not ASCII: left, named
        assert f"statement line {ident}: reference '{LINES_BEFORE_UPPER_CASE[ident][0]}' left as it is: not ASCII" in ran.stderr
    with app.app_context():
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "d8e4a2c6f0b3"
        db.engine.dispose()
