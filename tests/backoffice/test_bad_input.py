"""Bad input gets a clear message naming the field, on the command line and in the form, and
leaves no contract, account, file or ledger entry behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from backoffice.extensions import db
from backoffice.models import AuditEntry, Contract, ContractJob, DocumentSequence, EnterpriseAccount, LedgerEvent, SubAccount
from tests.conftest import login, make_contract, sample, write_json

BAD_CASES = [
    pytest.param({"customer__name": None}, "customer.name", "不能为空", id="missing-customer-name"),
    pytest.param({"price_per_message": "0"}, "price_per_message", "大于 0", id="price-zero"),
    pytest.param({"price_per_message": "-0.01"}, "price_per_message", "大于 0", id="price-negative"),
    pytest.param({"price_per_message": "0.03501"}, "price_per_message", "4 位小数", id="price-5-decimals"),
    pytest.param({"initial_amount": "1800.00"}, "initial_amount", "条数 × 单价", id="amount-mismatch"),
    pytest.param({"term_start": "2026-12-01", "term_end": "2026-06-30"}, "term_end", "不能早于", id="end-before-start"),
    pytest.param({"customer__phone": "010-123"}, "customer.phone", "电话号码", id="bad-phone"),
    pytest.param({"customer__contact_phone": "2380013800"}, "customer.contact_phone", "电话号码", id="bad-mobile"),
    pytest.param({"customer__email": "cai@@example"}, "customer.email", "邮箱", id="bad-email"),
    pytest.param({"customer__name": "<script>alert('x')</script>"}, "customer.name", "HTML", id="script"),
    pytest.param({"customer__address": '<img src="http://127.0.0.1:1/track.png">'}, "customer.address", "HTML", id="html-img"),
    pytest.param({"customer_signed_on": "2026-12-24"}, "customer_signed_on", "晚于今天", id="signed-in-future"),
    pytest.param({"term_start": "2020-01-01", "term_end": None}, "term_end", "已到期", id="term-already-over"),
    pytest.param({"customer__name": "北京\u202e创联"}, "customer.name", "格式字符", id="rtl-override"),
    pytest.param({"customer_signed_on": "2000-01-01"}, "customer_signed_on", "早于一年前", id="signed-long-ago"),
    pytest.param({"customer__name": "𠮷野家餐饮有限公司"}, "customer.name", "无法打印的字：𠮷", id="glyph-no-font-has"),
    pytest.param({"term_start": "2099-12-01", "term_end": None}, "term_start", "晚于一年后", id="starts-far-ahead"),
]


def snapshot(app: Flask) -> dict[str, Any]:
    """Everything an issue could leave behind: rows, numbers taken, files, books."""
    counts = {
        m.__name__: db.session.scalar(sa.select(sa.func.count()).select_from(m))
        for m in (Contract, EnterpriseAccount, SubAccount, LedgerEvent, ContractJob, AuditEntry)
    }
    sequences = [
        (s.series, s.year, s.last_value) for s in db.session.scalars(sa.select(DocumentSequence).order_by(DocumentSequence.series))
    ]
    root = Path(app.config["INSTANCE_PATH"])
    files = {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix not in (".sqlite3", ".sqlite3-wal", ".sqlite3-shm")
        and "-wal" not in p.name
        and "-shm" not in p.name
        and p.name != ".lock"
    }
    return {"counts": counts, "sequences": sequences, "files": files}


@pytest.fixture
def with_one_contract(app: Flask) -> None:
    """A contract already issued, so 'nothing changed' covers books and numbering too."""
    make_contract(app, "sms_business_service", customer__name="已有客户有限公司")


@pytest.mark.parametrize("overrides, field, words", BAD_CASES)
def test_command_line_refuses_bad_input_and_changes_nothing(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, with_one_contract: None, overrides: dict, field: str, words: str
) -> None:
    before = snapshot(app)
    data_file = write_json(tmp_path / "bad.json", sample("sms_business_service", **overrides))
    result = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(data_file), "--json"])
    assert result.exit_code != 0
    error = json.loads(result.output)["error"]
    assert field in error["fields"] and words in error["fields"][field]
    plain = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(data_file)])
    assert plain.exit_code != 0 and field in plain.output and words in plain.output
    db.session.expire_all()
    assert snapshot(app) == before


def test_unknown_template_is_refused(app: Flask, runner: FlaskCliRunner, tmp_path: Path, with_one_contract: None) -> None:
    before = snapshot(app)
    result = runner.invoke(
        args=["contract", "issue", "no_such_template", "--data", str(write_json(tmp_path / "d.json", sample("sms_business_service")))]
    )
    assert result.exit_code != 0 and "未知的合同模板" in result.output
    assert snapshot(app) == before


def test_unreadable_data_file_is_refused(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    result = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(broken)])
    assert result.exit_code != 0 and "JSON" in result.output


def test_the_same_submission_twice_issues_once(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    data_file = write_json(tmp_path / "c.json", sample("sms_business_service"))
    first = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(data_file), "--json"])
    assert first.exit_code == 0
    before = snapshot(app)
    second = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(data_file), "--json"])
    assert second.exit_code != 0
    assert json.loads(first.output)["contract_no"] in json.loads(second.output)["error"]["message"]
    db.session.expire_all()
    assert snapshot(app) == before


@pytest.mark.parametrize("failing", ["render_contract_docx", "plan_jobs"])
def test_a_crash_midway_leaves_nothing(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, with_one_contract: None, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A crash after numbering and account opening (the DOCX fails), or after both files were
    staged (planning the jobs fails), rolls everything back: rows, numbers, files, books."""
    from backoffice.services import contracts, documents

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(documents if failing == "render_contract_docx" else contracts, failing, broken)
    before = snapshot(app)
    result = runner.invoke(
        args=[
            "contract",
            "issue",
            "sms_business_service",
            "--data",
            str(write_json(tmp_path / "c.json", sample("sms_business_service", customer__name="新客户"))),
        ]
    )
    assert result.exit_code != 0 and isinstance(result.exception, OSError)
    assert not list(Path(app.config["DOCUMENTS_PATH"]).rglob("*.pending"))
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "content",
    [
        pytest.param('{"customer": {"name": "\\ud800"}}', id="lone-surrogate"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param("\udcff", id="not-utf8"),
    ],
)
def test_garbage_data_files_are_refused_with_a_message(app: Flask, runner: FlaskCliRunner, tmp_path: Path, content: str) -> None:
    data_file = tmp_path / "garbage.json"
    data_file.write_bytes(content.encode("utf-8", "surrogateescape"))
    result = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(data_file), "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["error"]["code"] == "invalid"


def form_data(template_id: str, **overrides: Any) -> dict[str, Any]:
    from backoffice.services.contract_fields import flatten

    data = {k: v for k, v in flatten(sample(template_id, **overrides)).items()}
    data = {k: ("true" if v is True else "" if v is False else v) for k, v in data.items()}
    data.update(submission_id="form-1", action="issue", customer_signature="", provider_signature="")
    return data


@pytest.mark.parametrize("overrides, field, words", BAD_CASES)
def test_web_form_shows_the_error_in_chinese_and_changes_nothing(
    app: Flask, client: FlaskClient, staff: dict, with_one_contract: None, overrides: dict, field: str, words: str
) -> None:
    from tests.e2e.signature import SIGNATURE_DATA_URI

    login(client, "sales", staff["sales"])
    before = snapshot(app)
    data = form_data("sms_business_service", **overrides)
    data.update(customer_signature=SIGNATURE_DATA_URI, provider_signature=SIGNATURE_DATA_URI)
    response = client.post("/sales/new/sms_business_service", data=data)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert words in page and "请修改以下内容" in page
    if "script" in str(overrides):
        assert "<script>alert" not in page  # shown as text, never interpreted
    db.session.expire_all()
    assert snapshot(app) == before


def test_web_form_requires_both_signatures(app: Flask, client: FlaskClient, staff: dict) -> None:
    login(client, "sales", staff["sales"])
    response = client.post("/sales/new/sms_business_service", data=form_data("sms_business_service"))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "请甲方签字" in page and "请乙方签字" in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contract)) == 0


def test_web_resubmission_of_the_same_form_issues_once(app: Flask, client: FlaskClient, staff: dict) -> None:
    from tests.e2e.signature import SIGNATURE_DATA_URI

    login(client, "sales", staff["sales"])
    data = form_data("sms_business_service")
    data.update(customer_signature=SIGNATURE_DATA_URI, provider_signature=SIGNATURE_DATA_URI)
    first = client.post("/sales/new/sms_business_service", data=data)
    assert first.status_code == 200 and "已签发" in first.get_data(as_text=True)
    before = snapshot(app)
    second = client.post("/sales/new/sms_business_service", data=data)
    assert second.status_code == 422 and "已提交过" in second.get_data(as_text=True)
    db.session.expire_all()
    assert snapshot(app) == before


def test_a_signature_that_is_not_an_image_is_refused(app: Flask, client: FlaskClient, staff: dict) -> None:
    login(client, "sales", staff["sales"])
    data = form_data("sms_business_service")
    data.update(customer_signature="data:image/png;base64,bm90IGFuIGltYWdl", provider_signature="data:text/html;base64,PGI+")
    response = client.post("/sales/new/sms_business_service", data=data)
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contract)) == 0


def test_a_blank_signature_is_refused(app: Flask, client: FlaskClient, staff: dict) -> None:
    import base64
    import io

    from PIL import Image

    from tests.e2e.signature import SIGNATURE_DATA_URI

    login(client, "sales", staff["sales"])
    out = io.BytesIO()
    Image.new("RGBA", (300, 100), (255, 255, 255, 0)).save(out, "PNG")
    data = form_data("sms_business_service")
    data.update(
        customer_signature="data:image/png;base64," + base64.b64encode(out.getvalue()).decode(), provider_signature=SIGNATURE_DATA_URI
    )
    response = client.post("/sales/new/sms_business_service", data=data)
    assert response.status_code == 422 and "空白" in response.get_data(as_text=True)


def test_every_network_unticked_is_refused_not_taken_for_the_default(app: Flask, client: FlaskClient, staff: dict) -> None:
    """Found by a review: unticking every network in the form quietly printed the template's default ones."""
    from tests.e2e.signature import SIGNATURE_DATA_URI

    login(client, "sales", staff["sales"])
    before = snapshot(app)
    data = {k: v for k, v in form_data("enterprise_sms_center").items() if not k.startswith("networks")}
    data.update(customer_signature=SIGNATURE_DATA_URI, provider_signature=SIGNATURE_DATA_URI)
    response = client.post("/sales/new/enterprise_sms_center", data=data)
    assert response.status_code == 422 and "请至少选择一个运营商" in response.get_data(as_text=True)
    db.session.expire_all()
    assert snapshot(app) == before
