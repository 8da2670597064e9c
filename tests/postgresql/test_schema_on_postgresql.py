"""The schema on PostgreSQL: `flask db upgrade` builds exactly the models (the partial unique
index of live receipts, the rate rows, …), and the send log is append-only in the database."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from backoffice import create_app
from backoffice.extensions import db
from backoffice.models import SendLog
from tests.backoffice.test_migrations import schema_differences
from tests.conftest import FIXED_NOW, app_config

pytestmark = pytest.mark.postgresql


def test_upgrade_builds_the_models_and_downgrades_to_empty(tmp_path: Path, signing_files: tuple, postgresql_url: str) -> None:
    app = create_app(app_config(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        diff = schema_differences(db.engine)
        assert diff == [], f"models and migrations differ on PostgreSQL: {diff}"
        indexes = {i["name"]: i for i in sa.inspect(db.engine).get_indexes("receipts")}
        live = indexes["uq_receipts_live_bank_reference"]
        assert live["unique"] and "pending" in live["dialect_options"]["postgresql_where"]
        row = {"seq": 1, "logged_at": FIXED_NOW, "account_code": "E000001", "recipient": "13800138000",
               "content": "【蓉城会员】测试", "result": "accepted", "prev_hash": "0" * 64, "hash": "1" * 64}  # fmt: skip
        with db.engine.begin() as connection:
            connection.execute(sa.insert(SendLog.__table__), row)
        for change in (sa.update(SendLog.__table__).values(result="forged"), sa.delete(SendLog.__table__), sa.text("TRUNCATE send_log")):
            with pytest.raises(sa.exc.IntegrityError, match="send_log is append-only"), db.engine.begin() as connection:
                connection.execute(change)
        db.engine.dispose()
    result = runner.invoke(args=["db", "downgrade", "base"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()
