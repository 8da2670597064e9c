"""`flask demo load` (run by `make run`): staff, and once per instance a demo customer whose
account is active, funded, and reachable with the API key it prints."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from backoffice.extensions import db
from backoffice.models import Contract, EnterpriseAccount, Invoice


def test_demo_load_makes_a_working_customer_once(app: Flask, runner: FlaskCliRunner, client: FlaskClient) -> None:
    first = runner.invoke(args=["demo", "load"])
    assert first.exit_code == 0, first.output
    key = re.search(r"API 密钥（Authorization: Bearer …）：(\S+)", first.output).group(1)  # type: ignore[union-attr]
    second = runner.invoke(args=["demo", "load"])
    assert second.exit_code == 0 and "API 密钥" not in second.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contract)) == 1
    account = db.session.scalar(sa.select(EnterpriseAccount))
    assert account.status == "active" and account.balance > 0
    assert db.session.scalar(sa.select(Invoice.status)) == "paid"
    credentials = Path(app.config["INSTANCE_PATH"]) / "demo-credentials.txt"
    assert key in credentials.read_text(encoding="utf-8") and credentials.stat().st_mode & 0o777 == 0o600
    balance = client.get("/api/v1/balance", headers={"Authorization": f"Bearer {key}"})
    assert balance.status_code == 200, balance.get_json()
