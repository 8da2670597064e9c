"""`flask db upgrade` prepares an empty instance, and the migrations match the models exactly."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from backoffice import create_app
from backoffice.models import Base
from tests.conftest import app_config, sample, write_json


def test_upgrade_then_issue_from_the_command_line(tmp_path: Path, signing_files: tuple) -> None:
    instance = tmp_path / "fresh" / "instance"  # does not exist yet: upgrade makes it
    app = create_app(app_config(instance, signing_files))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    with app.app_context():
        from backoffice.extensions import db

        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
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
