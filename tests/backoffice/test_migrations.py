"""`flask db upgrade` prepares an empty instance, and the migrations match the models exactly
(tables, and the triggers that keep the send log append-only)."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask.testing import FlaskCliRunner

from backoffice import MIGRATIONS, create_app
from backoffice.models import Base, SendLog
from tests.conftest import FIXED_NOW, app_config, sample, write_json


def server_default_differs(
    context: MigrationContext,
    inspected_column: sa.Column,
    metadata_column: sa.Column,
    inspected_default: str | None,
    metadata_default: sa.schema.DefaultClause | None,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic's comparison of server defaults (None), less its one false positive here: SQLite
    reflects an empty string's default as ('') and Alembic unquotes only a non-empty one."""
    if context.dialect.name == "sqlite" and rendered_metadata_default == "" and inspected_default == "('')":
        return False
    return None


def schema_differences(engine: sa.Engine) -> list:
    """How the database's schema differs from the models (Alembic's autogenerate comparison),
    types and server defaults included: a raw INSERT, a trigger, a migration's backfill get the
    database's default, not the model's (defaults compared since a review: enterprise_accounts'
    contracted_credit and receivable had one in the database only)."""
    with engine.connect() as connection:
        options = {"compare_type": True, "compare_server_default": server_default_differs}
        return compare_metadata(MigrationContext.configure(connection, opts=options), Base.metadata)


def head_revision() -> str:
    """The revision `flask db upgrade` ends at."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    scripts = AlembicConfig()
    scripts.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(scripts).get_current_head()
    assert head is not None
    return head


def test_upgrade_then_issue_from_the_command_line(tmp_path: Path, signing_files: tuple) -> None:
    instance = tmp_path / "fresh" / "instance"  # does not exist yet: upgrade makes it
    app = create_app(app_config(instance, signing_files))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        from backoffice.extensions import db

        diff = schema_differences(db.engine)
        assert diff == [], f"models and migrations differ: {diff}"
        issued = runner.invoke(
            args=[
                "contract",
                "issue",
                "gateway_api_partner",
                "--data",
                str(write_json(tmp_path / "c.json", sample("gateway_api_partner"))),
                "--json",
            ]
        )
        assert issued.exit_code == 0, issued.output
        assert json.loads(issued.output)["contract_no"] == "HT-2026-000001"
        assert runner.invoke(args=["ledger", "check"]).exit_code == 0
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"contracts", "enterprise_accounts", "ledger_events", "apscheduler_jobs"} <= tables
        db.engine.dispose()


def triggers(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name LIKE 'send_log%'"))
        return {name: sql for name, sql in rows}


def test_upgrade_makes_the_send_log_append_only_as_create_all_does(tmp_path: Path, signing_files: tuple) -> None:
    """`flask db upgrade` on a fresh database creates the same triggers the tests' `create_all`
    does; downgrading one step removes them, upgrading again puts them back."""
    from backoffice.extensions import db

    made = create_app(app_config(tmp_path / "made", signing_files))
    with made.app_context():
        db.create_all()
        expected = triggers(db.engine)
        db.engine.dispose()
    assert set(expected) == {
        "send_log_no_update", "send_log_no_delete", "send_log_head_no_delete", "send_log_head_forward",
        "send_log_archives_no_update", "send_log_archives_no_delete", "send_log_archives_next_part",
        "send_log_no_replace", "send_log_head_no_replace", "send_log_archives_no_replace",
    }  # fmt: skip

    app = create_app(app_config(tmp_path / "fresh", signing_files))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    with app.app_context():
        assert triggers(db.engine) == expected
        row = {"seq": 1, "logged_at": FIXED_NOW, "account_code": "E000001", "recipient": "13800138000",
               "content": "【蓉城会员】测试", "result": "accepted", "prev_hash": "0" * 64, "hash": "1" * 64}  # fmt: skip
        with db.engine.begin() as connection:
            connection.execute(sa.insert(SendLog.__table__), row)  # appending is allowed
        for change in (sa.update(SendLog.__table__).values(result="forged"), sa.delete(SendLog.__table__)):
            with pytest.raises(sa.exc.IntegrityError, match="send_log is append-only"), db.engine.begin() as connection:
                connection.execute(change)
        with db.engine.connect() as connection:
            assert connection.execute(sa.select(SendLog.__table__.c.result)).scalars().all() == ["accepted"]
        assert runner.invoke(args=["db", "downgrade", "2d1c591f4330"]).exit_code == 0
        assert triggers(db.engine) == {}
        assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
        assert triggers(db.engine) == expected
        db.engine.dispose()


def test_every_migration_downgrades_and_upgrades_again(tmp_path: Path, signing_files: tuple) -> None:
    from backoffice.extensions import db

    app = create_app(app_config(tmp_path / "instance", signing_files))
    runner = app.test_cli_runner()
    for step in (["db", "upgrade"], ["db", "downgrade", "base"]):
        result = runner.invoke(args=step)
        assert result.exit_code == 0, (step, result.output, result.exception)
    with app.app_context():
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    with app.app_context():
        assert schema_differences(db.engine) == []
        db.engine.dispose()


def test_upgrading_a_database_in_use_keeps_every_row_and_reference(tmp_path: Path, signing_files: tuple) -> None:
    """Migrations that rebuild a table (SQLite's batch mode) on a database whose rows refer to
    it: a contract issued, a receipt confirmed and invoiced, at the revision before this
    session's receipts migration; then upgraded to the head."""
    from backoffice.cli import after_commit_catch_up
    from backoffice.extensions import db
    from backoffice.models import Contract, Invoice, Receipt
    from backoffice.services.templates import get_template
    from tests.conftest import make_contract

    app = create_app(app_config(tmp_path / "instance", signing_files))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "c8a4f0e6d2b7"]).exit_code == 0
    with app.app_context():
        issued = make_contract(app, "enterprise_sms_center")
        code, amount = issued.contract.account.code, f"{issued.contract.initial_amount:.2f}"
        # As a contract issued before contracts kept the bank they printed (e8c2a4b6d1f3).
        issued.contract.terms = {k: v for k, v in issued.contract.terms.items() if not k.startswith("provider_bank")}
        db.session.commit()
        db.session.remove()
    args = ["finance", "receipt", "--account", code, "--amount", amount, "--bank-ref", "MIG-1", "--date", "2026-11-22", "--json"]
    recorded = json.loads(runner.invoke(args=args).output)
    confirmed = runner.invoke(args=["finance", "confirm", str(recorded["id"]), "--json"])
    assert confirmed.exit_code == 0, confirmed.output
    with app.app_context():
        assert after_commit_catch_up(app) == []
        before = {table: db.session.scalar(sa.select(sa.func.count()).select_from(sa.table(table))) for table in ("receipts", "invoices")}
        db.session.remove()
        db.engine.dispose()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        assert db.session.connection().exec_driver_sql("PRAGMA foreign_key_check").all() == []
        assert db.session.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # enforced again
        assert {t: db.session.scalar(sa.select(sa.func.count()).select_from(sa.table(t))) for t in before} == before
        receipt = db.session.get(Receipt, recorded["id"])
        assert receipt.status == "confirmed" and db.session.scalar(sa.select(Invoice.receipt_id)) == receipt.id
        assert runner.invoke(args=["ledger", "check"]).exit_code == 0
        terms = db.session.scalar(sa.select(Contract.terms))
        assert terms["provider_bank_name"] == get_template("enterprise_sms_center").provider["bank_name"]  # what it printed
        db.session.remove()
        db.engine.dispose()


def test_a_reference_broken_before_the_migrations_does_not_fail_them(tmp_path: Path, signing_files: tuple) -> None:
    """From a review: the check after the migrations blamed them for an orphan row that was there
    before, and every later `db upgrade` failed too, with nothing to do."""
    from backoffice.extensions import db

    app = create_app(app_config(tmp_path / "instance", signing_files))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "f2b7d9e1c3a4"]).exit_code == 0
    with app.app_context():
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.exec_driver_sql("INSERT INTO message_parts (message_id, seq, total, resent) VALUES (999999, 1, 1, 0)")
            connection.commit()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        db.engine.dispose()
    for _ in range(2):  # the upgrade, then nothing to do
        result = runner.invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        assert db.session.connection().exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
        db.session.remove()
        db.engine.dispose()


BREAKS_A_REFERENCE = """
import sqlalchemy as sa
from alembic import op

revision = "0bad0bad0bad"
down_revision = "{head}"


def upgrade():
    op.add_column("login_failures", sa.Column("probe", sa.Integer()))
    op.execute("INSERT INTO message_parts (message_id, seq, total, resent) VALUES (999999, 1, 1, 0)")


def downgrade():
    pass
"""


def test_migrations_that_break_a_reference_leave_the_database_as_it_was(tmp_path: Path, signing_files: tuple) -> None:
    """The check of foreign keys after the migrations fails the run and undoes all of it: on SQLite
    Alembic committed each migration as it ran, so the failed run stayed applied and recorded, and
    the next `db upgrade` passed with a warning (found by a review). A revision added after the
    head adds a column and a message part of no message."""
    from backoffice.extensions import db

    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0bad0bad0bad_breaks_a_reference.py").write_text(BREAKS_A_REFERENCE.format(head=head_revision()))
    app = create_app(app_config(tmp_path / "instance", signing_files))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    for _ in range(2):  # and again: still nothing applied
        result = runner.invoke(args=["db", "upgrade", "--directory", str(migrations)])
        assert result.exit_code != 0 and "Error: the migrations broke foreign keys" in result.output, result.output
        with app.app_context(), db.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
            assert "probe" not in {column["name"] for column in sa.inspect(connection).get_columns("login_failures")}
            assert connection.exec_driver_sql("SELECT count(*) FROM message_parts").scalar() == 0
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with app.app_context():
        db.engine.dispose()


def test_an_offline_upgrade_on_sqlite_says_it_cannot_be_done(tmp_path: Path, signing_files: tuple) -> None:
    """`flask db upgrade --sql` on SQLite: Alembic's batch mode rebuilds a table from the one it reads
    in the database, which a script cannot. From a review: half a script, then Alembic's error
    about batch mode; the command now says at once what works instead, and writes no SQL."""
    app = create_app(app_config(tmp_path / "instance", signing_files))
    result = app.test_cli_runner().invoke(args=["db", "upgrade", "--sql"])
    assert result.exit_code != 0
    assert "Error: --sql (offline) works on PostgreSQL only" in result.output
    assert "CREATE TABLE" not in result.stdout


#: Statement lines as imported before references were upper-cased (6f437f8), by id: the reference,
#: the day and the amount as imported, and the reference d8e4a2c6f0b3 leaves each with.
LINES_BEFORE_UPPER_CASE = {
    1: ("k-html-1", "2026-11-20", "100.00", "K-HTML-1"),  # upper-cased
    2: ("K2", "2026-11-21", "100.00", "K2"),  # normal already
    3: ("k2", "2026-11-21", "100.00", "k2"),  # line 2's transfer imported twice: left, reported
    4: ("k2", "2026-11-21", "200.00", "K2"),  # another amount: another transfer
    5: ("ab", "2026-11-22", "100.00", "AB"),
    6: ("aB", "2026-11-22", "100.00", "aB"),  # line 5's once that is upper-cased, in the same run: left
    7: ("k 2026\t3", "2026-11-23", "100.00", "K20263"),  # spaced: as the parser reads it now
    8: ("straße-1", "2026-11-23", "100.00", "STRASSE-1"),  # (from before the import refused non-ASCII)
    9: ("ß" * 33, "2026-11-23", "100.00", "ß" * 33),  # SS×33: too long for the column, left, reported
}
LEFT_AS_THEY_ARE = (3, 6, 9)


def import_lines_before_upper_case(engine: sa.Engine) -> None:
    """LINES_BEFORE_UPPER_CASE in a database at b2d4f6a8c0e3 (before d8e4a2c6f0b3)."""
    from datetime import date
    from decimal import Decimal

    from backoffice.models import StatementImport, StatementLine

    statement = {"id": 1, "file_name": "old.csv", "file_sha256": "0" * 64, "layout": "generic", "imported_by": "staff:finance",
                 "imported_at": FIXED_NOW, "line_count": len(LINES_BEFORE_UPPER_CASE), "skipped_debits": 0, "duplicate_lines": 0}  # fmt: skip
    lines = [
        {"id": ident, "statement_id": 1, "line_no": ident + 1, "booked_on": date.fromisoformat(day), "amount": Decimal(amount),
         "payer_name": "甲", "payer_account": None, "reference": reference, "memo": ""}
        for ident, (reference, day, amount, _) in LINES_BEFORE_UPPER_CASE.items()
    ]  # fmt: skip
    with engine.begin() as connection:
        connection.execute(sa.insert(StatementImport.__table__), statement)
        connection.execute(sa.insert(StatementLine.__table__), lines)


def at_lines_before_upper_case(tmp_path: Path, signing_files: tuple, **config: Any) -> tuple[Flask, FlaskCliRunner]:
    """An instance migrated to b2d4f6a8c0e3 holding LINES_BEFORE_UPPER_CASE, and its command runner."""
    from backoffice.extensions import db

    app = create_app(app_config(tmp_path / "instance", signing_files, **config))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "b2d4f6a8c0e3"]).exit_code == 0
    with app.app_context():
        import_lines_before_upper_case(db.engine)
        db.engine.dispose()
    return app, runner


def statement_references(engine: sa.Engine) -> dict[int, str]:
    with engine.connect() as connection:
        return dict(connection.exec_driver_sql("SELECT id, reference FROM statement_lines").all())


def test_references_of_lines_imported_before_they_were_upper_cased_are_upper_cased(tmp_path: Path, signing_files: tuple) -> None:
    """Lines imported before 6f437f8 kept the case of the bank's export, so k-html-1 and K-HTML-1
    were two lines of one transfer. The migration stores them as normal_reference does; a line
    whose normal reference another line of the same date and amount holds (the unique
    bank_transaction: one transfer imported twice) is left as it is and named, the run goes through."""
    from backoffice.extensions import db
    from reports.bank_statements import normal_reference

    app, runner = at_lines_before_upper_case(tmp_path, signing_files)
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        after = statement_references(db.engine)
        db.engine.dispose()
    assert after == {ident: expected for ident, (*_, expected) in LINES_BEFORE_UPPER_CASE.items()}
    assert all(after[i] == normal_reference(LINES_BEFORE_UPPER_CASE[i][0]) for i in after if i not in LEFT_AS_THEY_ARE)
    for ident in LEFT_AS_THEY_ARE:
        assert f"statement line {ident}: reference {LINES_BEFORE_UPPER_CASE[ident][0]!r} left as it is" in result.stderr, result.stderr
    assert "line 2 has 'K2' for the same date and amount" in result.stderr and "line 5 has 'AB'" in result.stderr
    assert "statement line 4:" not in result.stderr
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0  # nothing more to do


def test_notices_queued_before_they_were_marked_are_marked_and_left_out_of_the_customers_list(tmp_path: Path, signing_files: tuple) -> None:
    """Notices were queued as free messages of the customer's account with no charge kind, and
    listed to the customer as its sends (an exploratory test): a4e8c2f6d0b9 marks those already
    queued as send_notification_sms marks them since; the customer's own messages, a free refused
    one included, stay as they were; the downgrade takes the mark off again."""
    from backoffice.extensions import db
    from backoffice.jobs import deliver_notifications_now
    from backoffice.models import Message
    from backoffice.services.messaging import add_unsubscribe, recent_messages
    from tests.backoffice.test_messaging import active_sender, send

    app = create_app(app_config(tmp_path / "instance", signing_files))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "d8e4a2c6f0b3"]).exit_code == 0
    with app.app_context():
        from backoffice.models import KeywordListVersion

        KeywordListVersion.__table__.create(db.engine)  # today's intake reads it; a later migration makes it
        sender = active_sender(app, "sms_business_service")  # its invoice notice to 18910448682
        assert deliver_notifications_now(app)["sent"] == 1
        send(sender, ["13800138000"])  # the customer's own, charged
        add_unsubscribe(db.session, sender.account.id, "13900139000", source="mo")
        send(sender, ["13900139000"])  # the customer's too, free: the number had unsubscribed
        db.session.execute(sa.update(Message).values(charge_kind=None).where(Message.charge == 0))  # as queued before the mark
        db.session.commit()
        account_id = sender.account.id
        before = {m.id: m.charge_kind for m in db.session.scalars(sa.select(Message))}
        assert sorted(m.charge for m in db.session.scalars(sa.select(Message))) == [0, 0, Decimal("0.035")]
        assert len(recent_messages(db.session, account_id)) == len(before)  # the notice listed as the customer's
        notice = db.session.scalar(sa.select(Message.id).where(Message.recipient == "18910448682"))
        db.session.remove()
        KeywordListVersion.__table__.drop(db.engine)
        db.engine.dispose()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        after = {m.id: m.charge_kind for m in db.session.scalars(sa.select(Message))}
        assert after == {**before, notice: "notice"}
        assert notice not in {m.id for m in recent_messages(db.session, account_id)}
        db.session.remove()
        db.engine.dispose()
    assert runner.invoke(args=["db", "downgrade", "d8e4a2c6f0b3"]).exit_code == 0
    with app.app_context():
        assert {m.id: m.charge_kind for m in db.session.scalars(sa.select(Message))} == before
        db.session.remove()
        db.engine.dispose()
