"""Invariants of DESIGN.md that the issuing path touches: money is Decimal (never float), a
balance cannot go below zero, times are stored in UTC, documents never interpret field text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from pypdf import PdfReader

from backoffice.clock import to_local
from backoffice.extensions import db
from backoffice.models import EnterpriseAccount
from backoffice.models.base import Money, UTCDateTime
from tests.conftest import make_contract


def test_money_column_refuses_floats_and_sub_fen_noise() -> None:
    with pytest.raises(TypeError):
        Money().process_bind_param(0.035, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Money().process_bind_param(Decimal("0.00001"), None)  # type: ignore[arg-type]
    assert Money().process_bind_param(Decimal("0.0355"), None) == 355  # type: ignore[arg-type]
    assert Money().process_result_value(355, None) == Decimal("0.0355")  # type: ignore[arg-type]


def test_stored_amounts_come_back_as_decimal(app: Flask) -> None:
    issued = make_contract(app, "sms_business_service")
    db.session.expire_all()
    account = db.session.get(EnterpriseAccount, issued.contract.account_id)
    assert type(account.price_per_message) is Decimal and account.price_per_message == Decimal("0.035")
    assert type(issued.contract.initial_amount) is Decimal


def test_balance_below_zero_is_refused_by_the_database(app: Flask) -> None:
    issued = make_contract(app, "sms_business_service")
    with pytest.raises(sa.exc.IntegrityError):
        db.session.execute(
            sa.update(EnterpriseAccount)
            .where(EnterpriseAccount.id == issued.contract.account_id)
            .values(balance=EnterpriseAccount.balance - Decimal("0.01"))
        )
        db.session.flush()
    db.session.rollback()


def test_times_are_stored_in_utc_and_shown_in_beijing(app: Flask) -> None:
    with pytest.raises(ValueError):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1, 8, 0), None)  # type: ignore[arg-type]
    beijing = datetime(2026, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    assert UTCDateTime().process_bind_param(beijing, None) == datetime(2026, 1, 1, 0, 0)  # type: ignore[arg-type]
    issued = make_contract(app, "sms_business_service")
    db.session.expire_all()
    assert issued.contract.issued_at.tzinfo == UTC
    assert to_local(issued.contract.issued_at).hour == 10  # the fixed clock: 02:00 UTC = 10:00 Beijing


def test_markup_reaching_the_renderer_prints_as_text_and_fetches_nothing(app: Flask, tmp_path: Path) -> None:
    """Validation refuses markup; if some slipped past (defence in depth), the PDF shows it as
    text and the renderer fetches no URL."""
    from backoffice.services import documents
    from backoffice.services.contract_fields import validate_contract_fields
    from backoffice.services.templates import get_template
    from reports.pdf import SafeURLFetcher, render_pdf
    from tests.conftest import sample

    template = get_template("sms_business_service")
    values = validate_contract_fields(template, sample("sms_business_service"))
    values["customer.name"] = '<img src="http://127.0.0.1:9/x.png"><script>alert(1)</script>'
    context = documents.build_context(
        template,
        values,
        contract_no="HT-TEST",
        provider=template.provider,
        account_code="E1",
        sub_logins=[],
        customer_signature=None,
        provider_signature=None,
        seal=None,
    )
    html = documents.render_contract_html(template, context)
    fetcher = SafeURLFetcher(allowed_roots=[])
    pdf = tmp_path / "x.pdf"
    pdf.write_bytes(render_pdf(html, fetcher=fetcher))
    text = "".join(p.extract_text() or "" for p in PdfReader(pdf).pages)
    assert "<script>alert(1)</script>" in text and '<img src="http://127.0.0.1:9/x.png">' in text
    assert fetcher.refused == []  # escaped: there was nothing to fetch


def test_passwords_are_stored_at_production_cost() -> None:
    """The tests hash at a lower cost (conftest: cheap_password_hashes); the code as it runs
    elsewhere hashes with scrypt at N=16384, and checks a stored hash at the cost it names."""
    import subprocess
    import sys

    program = (
        "from werkzeug.security import check_password_hash\n"
        "from backoffice.services.accounts import hash_password\n"
        "stored = hash_password('s3cret-pass'); print(stored.split('$')[0], check_password_hash(stored, 's3cret-pass'))"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.split() == ["scrypt:16384:8:1", "True"]
