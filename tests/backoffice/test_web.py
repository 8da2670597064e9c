"""Staff login, roles, CSRF, the generated form, preview and downloads."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from backoffice import create_app
from backoffice.extensions import db
from backoffice.models import AuditEntry
from tests.backoffice.test_bad_input import form_data
from tests.conftest import app_config, login, make_contract
from tests.e2e.signature import SIGNATURE_DATA_URI


def test_pages_require_login(client: FlaskClient) -> None:
    response = client.get("/sales/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_wrong_password_is_refused_in_chinese(client: FlaskClient, staff: dict) -> None:
    response = login(client, "sales", "wrong")
    assert response.status_code == 200 and "用户名或密码错误" in response.get_data(as_text=True)


def test_login_is_audited(client: FlaskClient, staff: dict) -> None:
    assert login(client, "sales", staff["sales"]).status_code == 302
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "login"))
    assert entry is not None and entry.actor == "staff:sales"


def test_finance_cannot_issue_contracts(client: FlaskClient, staff: dict) -> None:
    login(client, "finance", staff["finance"])
    assert client.get("/sales/new/sms_business_service").status_code == 403


def test_customer_cannot_see_staff_pages_or_other_contracts(app: Flask, client: FlaskClient) -> None:
    mine = make_contract(app, "sms_business_service", customer__name="甲公司")
    other = make_contract(app, "sms_business_service", customer__name="乙公司")
    primary = next(o for o in mine.logins if o.is_primary)
    login(client, primary.login, primary.password, portal=True)
    assert client.get("/sales/").status_code == 403
    with client.get(f"/portal/contracts/{mine.contract.contract_no}.pdf") as own:
        assert own.status_code == 200 and own.data.startswith(b"%PDF")
    with client.get(f"/portal/contracts/{other.contract.contract_no}.pdf") as foreign:
        assert foreign.status_code == 404


def test_form_is_generated_from_the_schema(client: FlaskClient, staff: dict) -> None:
    login(client, "sales", staff["sales"])
    page = client.get("/sales/new/lingxuntong_service").get_data(as_text=True)
    for name in ("customer.name", "price_per_message", "opening_fee", "sms_signature", "reserved_mobile", "sub_accounts"):
        assert f'name="{name}"' in page
    assert "canvas" in page and "submission_id" in page


def test_preview_renders_the_contract_without_issuing(app: Flask, client: FlaskClient, staff: dict) -> None:
    login(client, "sales", staff["sales"])
    data = form_data("sms_business_service", customer__name="预览测试有限公司")
    data["action"] = "preview"
    response = client.post("/sales/new/sms_business_service", data=data)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "合同预览" in page and "预览测试有限公司" in page
    assert not (Path(app.config["INSTANCE_PATH"]) / "ledger").exists()


def test_issue_through_the_form_then_download(app: Flask, client: FlaskClient, staff: dict) -> None:
    login(client, "sales", staff["sales"])
    data = form_data("enterprise_sms_center")
    data.update(customer_signature=SIGNATURE_DATA_URI, provider_signature=SIGNATURE_DATA_URI)
    page = client.post("/sales/new/enterprise_sms_center", data=data).get_data(as_text=True)
    assert "已签发" in page and "初始密码" in page
    with client.get("/sales/contracts/HT-2026-000001.pdf") as pdf:
        assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    with client.get("/sales/contracts/HT-2026-000001.docx") as docx:
        assert docx.status_code == 200 and docx.data.startswith(b"PK")
    register = client.get("/sales/").get_data(as_text=True)
    assert "HT-2026-000001" in register


def test_csrf_token_is_required_when_enabled(tmp_path: Path, signing_files: tuple) -> None:
    instance = tmp_path / "csrf"
    instance.mkdir()
    app = create_app(app_config(instance, signing_files, WTF_CSRF_ENABLED=True))
    with app.app_context():
        db.create_all()
        response = app.test_client().post("/login", data={"username": "x", "password": "y"})
        assert response.status_code == 400 and "表单可能已过期" in response.get_data(as_text=True)
        db.engine.dispose()


def test_login_never_redirects_off_site(client: FlaskClient, staff: dict) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        response = client.post(f"/login?next={target}", data={"username": "sales", "password": staff["sales"]})
        assert response.status_code == 302 and response.headers["Location"] == "/sales/", target
        client.post("/logout")
    response = client.post("/login?next=/sales/contracts/HT-2026-000001", data={"username": "sales", "password": staff["sales"]})
    assert response.headers["Location"] == "/sales/contracts/HT-2026-000001"


def test_pages_with_initial_passwords_are_not_cached(client: FlaskClient, staff: dict) -> None:
    login(client, "sales", staff["sales"])
    data = form_data("enterprise_sms_center")
    data.update(customer_signature=SIGNATURE_DATA_URI, provider_signature=SIGNATURE_DATA_URI)
    response = client.post("/sales/new/enterprise_sms_center", data=data)
    assert "初始密码" in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
