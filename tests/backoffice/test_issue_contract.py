"""Issuing a contract end to end from the command line, one test per template: documents,
account and sub-accounts, books and renewal jobs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from docx import Document
from flask import Flask
from flask.testing import FlaskCliRunner
from pypdf import PdfReader

from backoffice.extensions import db
from backoffice.models import Contract, ContractJob, EnterpriseAccount
from backoffice.money import capitals
from backoffice.services.templates import get_template
from ledger import ledger_balances
from tests.conftest import TEMPLATE_IDS, login, sample, write_json


def pdf_text(path: Path) -> str:
    return re.sub(r"\s+", "", "".join(page.extract_text() or "" for page in PdfReader(path).pages))


def docx_text(path: Path) -> str:
    document = Document(str(path))
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts += [cell.text for cell in row.cells]
    return re.sub(r"\s+", "", "".join(parts))


def issue(runner: FlaskCliRunner, tmp_path: Path, template_id: str, data: dict) -> dict:
    result = runner.invoke(args=["contract", "issue", template_id, "--data", str(write_json(tmp_path / "c.json", data)), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # warnings go to stderr


def cn(day: str) -> str:
    y, m, d = (int(x) for x in day.split("-"))
    return f"{y}年{m}月{d}日"


@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_issue_each_template_end_to_end(app: Flask, runner: FlaskCliRunner, tmp_path: Path, template_id: str) -> None:
    data = sample(template_id)
    out = issue(runner, tmp_path, template_id, data)
    template = get_template(template_id)

    assert re.fullmatch(r"HT-2026-\d{6}", out["contract_no"])
    price = Decimal(str(data["price_per_message"]))
    amount = Decimal(out["initial_amount"])
    expected_text = [
        data["customer"]["name"],
        f"{price.normalize():f}",
        f"{amount:.2f}",
        capitals(amount),
        data["customer_signer"],
        data["provider_signer"],
    ]
    if data.get("term_start"):
        expected_text.append(cn(data["term_start"]))
    if template.prints_contract_no:
        expected_text.append(out["contract_no"])
    text_pdf, text_docx = pdf_text(Path(out["pdf"])), docx_text(Path(out["docx"]))
    for expected in expected_text:
        assert re.sub(r"\s+", "", expected) in text_pdf, f"PDF lacks {expected}"
        assert re.sub(r"\s+", "", expected) in text_docx, f"DOCX lacks {expected}"
    if template_id == "sms_genie_user":
        assert "信息安全保障责任书" in text_pdf and "信息安全保障责任书" in text_docx
    # Both signatures and the provider's seal are in both documents.
    assert sum(len(page.images) for page in PdfReader(out["pdf"]).pages) >= 3
    assert len(Document(out["docx"]).inline_shapes) >= 3

    contract = db.session.scalar(sa.select(Contract).where(Contract.contract_no == out["contract_no"]))
    assert contract is not None and contract.status == "issued"
    assert contract.pdf_sha256 == out["sha256"]["pdf"]
    import hashlib

    assert hashlib.sha256(Path(out["pdf"]).read_bytes()).hexdigest() == contract.pdf_sha256
    assert hashlib.sha256(Path(out["docx"]).read_bytes()).hexdigest() == contract.docx_sha256
    assert contract.renewal_rule == template.terms["term_rule"]

    account = db.session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == out["account_code"]))
    assert account is not None and account.status == "awaiting_payment" and account.balance == 0
    assert account.price_per_message == price
    assert len(account.sub_accounts) == len(out["sub_accounts"]) == 1 + int(data.get("sub_accounts") or 0)
    for sub in out["sub_accounts"]:
        assert sub["password"] not in json.dumps([s.password_hash for s in account.sub_accounts])
        client = app.test_client()
        response = login(client, sub["login"], sub["password"], portal=True)
        assert response.status_code == 302 and response.headers["Location"].endswith("/portal/")
        first = client.get("/portal/")  # the initial password is changed before anything else
        assert first.status_code == 302 and first.headers["Location"].endswith("/password")
        new = {"current": sub["password"], "new": "own-pass-2026", "confirm": "own-pass-2026"}
        assert client.post("/password", data=new).status_code == 302
        home = client.get("/portal/")
        assert out["account_code"] in home.get_data(as_text=True)
        assert login(app.test_client(), sub["login"], sub["password"], portal=True).status_code == 200  # the old one is refused
        assert login(app.test_client(), sub["login"], "own-pass-2026", portal=True).status_code == 302

    check = runner.invoke(args=["ledger", "check"])
    assert check.exit_code == 0, check.output
    balances = ledger_balances(Path(app.config["LEDGER_PATH"]) / "main.beancount")
    fee = Decimal(out["opening_fee"])
    assert balances[f"Assets:Receivable:{out['account_code']}"] == amount + fee
    assert balances[f"Liabilities:Contracted:{out['account_code']}"] == -amount
    assert balances.get(f"Liabilities:Prepaid:{out['account_code']}", Decimal(0)) == 0

    shown = runner.invoke(args=["account", "show", out["account_code"], "--json"])
    summary = json.loads(shown.output)
    assert summary["contract_no"] == out["contract_no"]
    assert summary["balance"] == "0.00" and summary["status"] == "awaiting_payment"
    assert summary["renewal_rule"] == template.terms["term_rule"]

    verify = runner.invoke(args=["contract", "verify", out["pdf"]])
    assert verify.exit_code == 0 and "完好" in verify.output


def test_renewal_jobs_are_armed_in_the_persistent_job_store(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    out = issue(runner, tmp_path, "sms_business_service", sample("sms_business_service", term_start="2026-12-01", term_end="2027-11-30"))
    jobs = db.session.scalars(sa.select(ContractJob).order_by(ContractJob.due_on)).all()
    assert [(j.kind, j.due_on.isoformat()) for j in jobs] == [("renewal_notice", "2027-10-16"), ("auto_extend", "2027-12-01")]
    assert all(j.armed_at is not None for j in jobs)
    listed = json.loads(runner.invoke(args=["jobs", "list", "--json"]).output)
    assert {j["id"] for j in listed} == {j.job_id for j in jobs}
    runs = sorted(j["next_run"][:16] for j in listed)  # the notice in working hours; the extension as the term ends
    assert runs == ["2027-10-16T09:00", "2027-12-01T00:00"]
    assert out["renewal_rule"] == "yearly_auto_extend"


def test_opting_out_of_auto_renewal_makes_a_fixed_term(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    out = issue(runner, tmp_path, "sms_business_service", sample("sms_business_service", auto_renew=False))
    assert out["renewal_rule"] == "fixed_term"
    kinds = {j.kind for j in db.session.scalars(sa.select(ContractJob))}
    assert kinds == {"renewal_notice", "expire"}


def test_lingxuntong_books_the_opening_fee_as_income(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    data = sample("lingxuntong_service")
    out = issue(runner, tmp_path, "lingxuntong_service", data)
    balances = ledger_balances(Path(app.config["LEDGER_PATH"]) / "main.beancount")
    assert balances["Income:OpeningFee"] == -Decimal(str(data["opening_fee"]))
    text = pdf_text(Path(out["pdf"]))
    assert out["account_code"] in text
    for sub in out["sub_accounts"]:
        assert sub["login"] in text
        assert sub["password"] not in text  # the password is never printed


def test_yuan_zheng_is_printed_only_for_whole_yuan(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    """Found by a review: "900.45 元整" — 整 says there are no 角 or 分; the seeds' "元整" stays for whole amounts."""
    out = issue(runner, tmp_path, "enterprise_sms_center", sample("enterprise_sms_center", initial_messages=20010, initial_amount="900.45"))
    text = pdf_text(Path(out["pdf"]))
    assert "首次信息充值费人民币900.45元（大写：玖佰元肆角伍分）" in text and "900.45元整" not in text
    whole = issue(runner, tmp_path, "enterprise_sms_center", sample("enterprise_sms_center"))
    assert "首次信息充值费人民币900.00元整（大写：玖佰元整）" in pdf_text(Path(whole["pdf"]))


def test_a_long_unbroken_customer_name_keeps_the_signature_block_on_the_page(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    """Found by a review: an 84-character Latin name widened the signature table and pushed the
    provider's signature, date and seal off the right edge of the page."""
    import subprocess

    name = "SHENZHENHUAXINGINTERNATIONALTRADINGANDTECHNOLOGYDEVELOPMENTCOLTD深圳华兴国际贸易有限公司"
    out = issue(runner, tmp_path, "sms_business_service", sample("sms_business_service", customer__name=name))
    bbox = subprocess.run(["pdftotext", "-bbox", out["pdf"], "-"], capture_output=True, text=True, check=True).stdout
    width = float(re.search(r'<page width="([0-9.]+)"', bbox).group(1))  # type: ignore[union-attr]
    right_edges = [float(x) for x in re.findall(r'xMax="([0-9.]+)"', bbox)]
    margin = 20 / 25.4 * 72  # the template's 20 mm; the tables' cells once reached 3 pt into it (a review: padding outside 50 %)
    assert right_edges and max(right_edges) <= width - margin + 0.5, (max(right_edges), width - margin)  # inside the text column


@pytest.mark.parametrize(
    ("template_id", "last_clause"), [("gateway_api_partner", "本协议一式二份"), ("sms_business_service", "本协议一式贰份")]
)
def test_the_signatures_share_a_page_with_the_last_clause_and_are_not_stretched(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, template_id: str, last_clause: str
) -> None:
    """Found by a review: the signature table began a page of its own (a page of signatures alone
    can be put after other clauses), and a typed signature wider than 4:1 was squeezed to 14 mm x
    55 mm in the PDF while the DOCX kept its shape."""
    import subprocess

    out = issue(runner, tmp_path, template_id, sample(template_id, customer_signer="Alexander Schmidt"))
    reader = PdfReader(out["pdf"])
    signed_on = [i for i, page in enumerate(reader.pages) if "Alexander" in (page.extract_text() or "")]
    assert signed_on, "no page shows the signer"
    assert last_clause in re.sub(r"\s+", "", reader.pages[signed_on[0]].extract_text() or "")
    listed = subprocess.run(["pdfimages", "-list", out["pdf"]], capture_output=True, text=True, check=True).stdout.splitlines()[2:]
    ppi = [(int(row.split()[12]), int(row.split()[13])) for row in listed if row.split()[2] == "image"]
    assert len(ppi) >= 3 and all(abs(x - y) <= 0.02 * y for x, y in ppi), ppi  # scaled alike both ways
    paragraphs = Document(out["docx"]).paragraphs
    clause = next(p for p in reversed(paragraphs) if last_clause in re.sub(r"\s+", "", p.text))
    assert clause.paragraph_format.keep_with_next


def test_a_long_provider_name_stays_inside_the_text_column(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    """Found by a review: the signature and party cells' padding came on top of their 50 %, so
    the right-hand cell ran 3 pt into the page's 20 mm margin with a long provider name."""
    import subprocess

    from backoffice.services.provider import save_provider

    save_provider(db.session, "sms_business_service", {"name": "北京英格密科技发展有限公司" + "国际控股集团" * 12}, actor="test")
    db.session.commit()
    out = issue(runner, tmp_path, "sms_business_service", sample("sms_business_service"))
    bbox = subprocess.run(["pdftotext", "-bbox", out["pdf"], "-"], capture_output=True, text=True, check=True).stdout
    width = float(re.search(r'<page width="([0-9.]+)"', bbox).group(1))  # type: ignore[union-attr]
    right_edges = [float(x) for x in re.findall(r'xMax="([0-9.]+)"', bbox)]
    assert max(right_edges) <= width - 20 / 25.4 * 72 + 0.5, max(right_edges)


def test_a_long_unbroken_token_in_additional_terms_wraps_inside_the_page(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    """Found by a review: a 152-character token (a link) in 003's 附加信息 ran off the page: the
    signed PDF lost part of a clause the DOCX showed whole."""
    import subprocess

    token = "Contract" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" * 4
    out = issue(runner, tmp_path, "sms_genie_user", sample("sms_genie_user", additional_terms=f"代发信息见：{token}"))
    bbox = subprocess.run(["pdftotext", "-bbox", out["pdf"], "-"], capture_output=True, text=True, check=True).stdout
    width = float(re.search(r'<page width="([0-9.]+)"', bbox).group(1))  # type: ignore[union-attr]
    assert max(float(x) for x in re.findall(r'xMax="([0-9.]+)"', bbox)) <= width - 20
    shown = subprocess.run(["pdftotext", out["pdf"], "-"], capture_output=True, text=True, check=True).stdout
    assert token in re.sub(r"\s", "", shown)  # all of it on the page


def test_sales_is_told_when_the_customer_already_has_an_account(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    """Found by a review: a second contract of a customer silently opened a second account, its balance apart."""
    first = issue(runner, tmp_path, "enterprise_sms_center", sample("enterprise_sms_center"))
    data = write_json(tmp_path / "again.json", {**sample("enterprise_sms_center"), "submission_id": "second"})
    result = runner.invoke(args=["contract", "issue", "enterprise_sms_center", "--data", str(data), "--json"])
    assert result.exit_code == 0
    assert f"已有企业号 {first['account_code']}" in result.stderr and "余额互不相通" in result.stderr
    other = runner.invoke(
        args=[
            "contract",
            "issue",
            "enterprise_sms_center",
            "--data",
            str(write_json(tmp_path / "o.json", sample("enterprise_sms_center", customer__name="另一家公司"))),
            "--json",
        ]
    )
    assert other.exit_code == 0 and "已有企业号" not in other.stderr


def test_contract_numbers_are_sequential_per_year(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    numbers = [
        issue(runner, tmp_path, "gateway_api_partner", sample("gateway_api_partner", customer__name=f"客户{i}"))["contract_no"]
        for i in range(3)
    ]
    assert numbers == ["HT-2026-000001", "HT-2026-000002", "HT-2026-000003"]


def test_templates_command_lists_five_templates_with_fields(runner: FlaskCliRunner) -> None:
    listed = json.loads(runner.invoke(args=["contract", "templates", "--json"]).output)
    assert [t["id"] for t in listed] == TEMPLATE_IDS
    for t in listed:
        names = {f["name"] for f in t["fields"]}
        assert {"customer.name", "price_per_message", "customer_signer", "provider_signed_on"} <= names


def test_verify_detects_a_changed_contract(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    out = issue(runner, tmp_path, "enterprise_sms_center", sample("enterprise_sms_center"))
    tampered = tmp_path / "tampered.pdf"
    data = bytearray(Path(out["pdf"]).read_bytes())
    index = data.find(b"stream", 2000)
    data[index + 20] ^= 0x01
    tampered.write_bytes(bytes(data))
    result = runner.invoke(args=["contract", "verify", str(tampered)])
    assert result.exit_code == 1
    assert "无效" in result.output or "修改" in result.output


def test_ledger_check_fails_when_a_booked_contract_is_missing_from_the_books(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    out = issue(runner, tmp_path, "sms_business_service", sample("sms_business_service"))
    month = Path(app.config["LEDGER_PATH"]) / "2026" / "2026-11.beancount"
    text = month.read_text(encoding="utf-8")
    month.write_text(text[: text.index("\n2026-11-23 *")] + "\n", encoding="utf-8")
    result = runner.invoke(args=["ledger", "check", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert any("记账程序之外被修改" in e for e in report["errors"])
    assert {d["account"] for d in report["differences"]} == {
        f"Assets:Receivable:{out['account_code']}",
        f"Liabilities:Contracted:{out['account_code']}",
    }
    month.write_text(text, encoding="utf-8")  # restore, so the teardown check sees consistent books


def test_concurrent_issuing_is_gapless_and_the_books_reconcile(app: Flask, tmp_path: Path) -> None:
    import threading

    from backoffice.cli import after_commit_catch_up, signing_identity
    from backoffice.services.contracts import issue_contract

    failures: list[BaseException] = []

    def sales_person(n: int) -> None:
        with app.app_context():
            try:
                for i in range(2):
                    issue_contract(
                        db.session,
                        "gateway_api_partner",
                        sample("gateway_api_partner", customer__name=f"并发客户{n}-{i}"),
                        issued_by=f"t{n}",
                        documents_root=Path(app.config["DOCUMENTS_PATH"]),
                        signing_identity=signing_identity(app),
                    )
                    db.session.commit()
                    after_commit_catch_up(app)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=sales_person, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    numbers = sorted(db.session.scalars(sa.select(Contract.contract_no)))
    assert numbers == [f"HT-2026-{i:06d}" for i in range(1, 7)]
    assert len(list(Path(app.config["DOCUMENTS_PATH"]).rglob("*.pdf"))) == 6


def test_a_contract_never_tells_the_customer_to_pay_into_a_blank_account(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    """Found by a review: an administrator could save 004's bank details blank, and its contracts
    then printed 账号：开户行： with nothing. Saving them blank is refused; a profile saved blank
    before refuses the issue, naming what is missing."""
    from backoffice.errors import ValidationFailed
    from backoffice.models import ProviderProfile
    from backoffice.services.provider import provider_of, save_provider

    with pytest.raises(ValidationFailed) as refused:
        save_provider(db.session, "sms_business_service", {"bank_account": "", "bank_name": ""}, actor="admin")
    assert set(refused.value.errors) == {"bank_account", "bank_name"}
    db.session.rollback()
    signed = issue(runner, tmp_path, "sms_business_service", sample("sms_business_service"))  # a customer of before
    identity = {**provider_of(db.session, "sms_business_service").identity, "bank_account": "", "contact_name": ""}
    db.session.add(ProviderProfile(template_id="sms_business_service", identity=identity))  # as saved before the check
    db.session.commit()
    data = write_json(tmp_path / "c.json", sample("sms_business_service", customer__name="另一家公司", service_code="106575000124"))
    result = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(data), "--json"])
    assert result.exit_code != 0 and "银行账号为空" in result.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contract)) == 1
    # The earlier customer's payment is still confirmed, its invoice made (a review of the first
    # version: the check sat where invoices read the provider too, and refused every confirmation).
    paid = ["--account", signed["account_code"], "--amount", "1750.00", "--bank-ref", "LEGACY-1", "--date", "2026-11-22", "--json"]
    recorded = json.loads(runner.invoke(args=["finance", "receipt", *paid]).output)
    confirmed = runner.invoke(args=["finance", "confirm", str(recorded["id"]), "--json"])
    assert confirmed.exit_code == 0 and json.loads(confirmed.output)["credited"], confirmed.output


def test_a_full_disk_while_staging_the_documents_leaves_no_file(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: everything rolled back but a half-written .pending DOCX."""
    import errno

    from backoffice.services import staged_files

    real_fsync, calls = staged_files.os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the DOCX, after the PDF was staged
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(staged_files.os, "fsync", fsync)
    data = write_json(tmp_path / "c.json", sample("sms_business_service"))
    result = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(data)])
    assert result.exit_code != 0
    assert [p.name for p in Path(app.config["DOCUMENTS_PATH"]).rglob("*") if p.is_file()] == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contract)) == 0


def test_the_logins_passwords_are_hashed_before_the_write_lock_is_taken(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the 51 hashes of a contract with 50 sub-accounts were made after the
    contract number was taken, holding SQLite's write lock 2.3 s (intake and dispatcher waited)."""
    from backoffice.services import accounts, contracts

    hashed: list[str] = []
    at_number: list[int] = []
    real_hash, real_next = accounts.hash_password, contracts.next_number
    monkeypatch.setattr(accounts, "hash_password", lambda password: hashed.append(password) or real_hash(password))
    monkeypatch.setattr(contracts, "next_number", lambda *args, **kwargs: at_number.append(len(hashed)) or real_next(*args, **kwargs))
    out = issue(runner, tmp_path, "lingxuntong_service", sample("lingxuntong_service", sub_accounts=5))
    assert at_number == [6] and len(hashed) == 6  # all six before the number, none after
    from backoffice.services.accounts import authenticate_sub_account

    assert len(out["sub_accounts"]) == 6  # and each password opens its own login
    assert all(authenticate_sub_account(db.session, o["login"], o["password"]) is not None for o in out["sub_accounts"])


def test_a_service_code_a_live_account_has_or_nests_with_is_not_given_again(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, staff: dict
) -> None:
    """Found by a review: two accounts could be given the same service code, and replies (found
    by the longest code their address begins with) then all went to the later account: the first
    customer's replies and unsubscribes shown to and kept by the second. A code another live
    account has, or one nesting with it (a prefix of it or it a prefix of the new one), is refused
    with the account named, from the command line and the form alike, and nothing is opened; a
    closed account's code may be given again, and its replies go to the live account."""
    from backoffice.services.messaging import record_reply
    from tests.backoffice.test_bad_input import form_data
    from tests.e2e.signature import SIGNATURE_DATA_URI

    first = issue(runner, tmp_path, "sms_business_service", sample("sms_business_service"))
    taken = sample("sms_business_service")["service_code"]
    tries = {
        taken: f"服务代码：{taken} 已由账户 {first['account_code']}（北京创联致信科技有限公司）使用",
        taken[:-2]: f"服务代码：{taken[:-2]} 与账户 {first['account_code']}（北京创联致信科技有限公司）的服务代码 {taken} 前缀重叠",
        taken + "01": f"服务代码：{taken}01 与账户 {first['account_code']}（北京创联致信科技有限公司）的服务代码 {taken} 前缀重叠",
    }
    shared = app.config["SMSC_DEFAULT_SOURCE"]  # the platform's own address: its replies are no one account's
    tries[shared[:4]] = f"服务代码：{shared[:4]} 是平台共用发送号码 {shared} 的开头部分"
    tries[shared] = f"服务代码：{shared} 是平台共用发送号码 {shared} 的开头部分"
    # The platform's notice address: its replies are the platform's; a code nesting with it either way is refused
    notice = app.config["SMSC_NOTICE_SOURCE"]
    tries[notice] = f"服务代码：{notice} 是平台通知发送号码 {notice} 的开头部分"
    tries[notice + "01"] = f"服务代码：{notice}01 以平台通知发送号码 {notice} 开头"
    for n, (code, said) in enumerate(tries.items()):
        data = write_json(tmp_path / f"{n}.json", sample("sms_business_service", customer__name=f"乙营销{n}有限公司", service_code=code))
        result = runner.invoke(args=["contract", "issue", "sms_business_service", "--data", str(data)])
        assert result.exit_code != 0 and said in result.output, result.output
    client = app.test_client()
    login(client, "sales", staff["sales"])
    form = form_data("sms_business_service", customer__name="乙营销有限公司")
    form.update(customer_signature=SIGNATURE_DATA_URI, provider_signature=SIGNATURE_DATA_URI)
    for action in ("preview", "issue"):
        response = client.post("/sales/new/sms_business_service", data={**form, "action": action})
        assert response.status_code == 422 and tries[taken] in response.get_data(as_text=True), action
    assert db.session.scalars(sa.select(EnterpriseAccount.code)).all() == [first["account_code"]]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contract)) == 1

    db.session.execute(sa.update(EnterpriseAccount).values(status="closed"))  # the first customer leaves
    db.session.commit()
    second = issue(runner, tmp_path, "sms_business_service", sample("sms_business_service", customer__name="乙营销有限公司"))
    reply = record_reply(db.session, sender="13800138000", destination=taken, content="TD")
    db.session.commit()
    assert reply.account_id == db.session.scalar(sa.select(EnterpriseAccount.id).where(EnterpriseAccount.code == second["account_code"]))


def _two_sales_people_at_once(app: Flask, issuing: Callable[[int, int], dict[str, Any]], field: str) -> list[str]:
    """Three rounds of two contracts issued at the same moment (real threads, real database):
    what each came to, "issued" or the refusal of `field`. `issuing(round, n)`: issue_contract's
    template data (`data`) and further keyword arguments."""
    import threading

    from backoffice.cli import after_commit_catch_up, signing_identity
    from backoffice.errors import ValidationFailed
    from backoffice.services.contracts import issue_contract

    outcomes: list[str] = []
    for round_ in range(3):
        barrier = threading.Barrier(2)

        def sales_person(n: int, round_: int = round_) -> None:
            with app.app_context():
                try:
                    given = issuing(round_, n)
                    barrier.wait()
                    issue_contract(
                        db.session, "sms_business_service", given.pop("data"), issued_by=f"t{n}",
                        documents_root=Path(app.config["DOCUMENTS_PATH"]), signing_identity=signing_identity(app), **given,
                    )  # fmt: skip
                    db.session.commit()
                    after_commit_catch_up(app)
                    outcomes.append("issued")
                except ValidationFailed as refused:
                    db.session.rollback()
                    outcomes.append(refused.errors.get(field, repr(refused.errors)))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    outcomes.append(repr(exc))
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=sales_person, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    return outcomes


def test_two_contracts_given_the_same_service_code_at_once_open_one_account(app: Flask, tmp_path: Path) -> None:
    """Found by a review (service codes given twice): the check and the new account are in one
    transaction, but two issued at the same moment both passed the check. Asked again under the
    account counter's lock, the second is refused. Real threads, real database."""
    outcomes = _two_sales_people_at_once(
        app,
        lambda round_, n: {
            "data": sample("sms_business_service", customer__name=f"并发客户{round_}-{n}", service_code=f"10657500{round_}")
        },
        "service_code",
    )
    assert outcomes.count("issued") == 3, outcomes
    assert sorted(o.split(" 已由账户")[0] for o in outcomes if o != "issued") == [f"服务代码：10657500{r}" for r in range(3)], outcomes
    codes = db.session.scalars(sa.select(EnterpriseAccount.service_code).order_by(EnterpriseAccount.service_code)).all()
    assert codes == [f"10657500{r}" for r in range(3)]


def test_two_tabs_signing_one_customer_at_once_open_one_account(app: Flask) -> None:
    """Two sales tabs submitting the same new customer's form at the same moment both passed the
    existing-customer check (neither had committed), and each opened an account. Asked again
    under the account counter's lock, the second is refused until the box is ticked. Real
    threads, real database."""
    from backoffice.services.contracts import CONFIRM_ANOTHER_ACCOUNT

    outcomes = _two_sales_people_at_once(
        app,
        lambda round_, n: {
            "data": sample("sms_business_service", customer__name=f"两页客户{round_}有限公司", service_code=f"1065750{round_}{n}"),
            "submission_key": f"tab-{round_}-{n}",
            "refuse_existing_customer": True,
        },
        CONFIRM_ANOTHER_ACCOUNT,
    )
    assert outcomes.count("issued") == 3, outcomes
    refused = sorted(o for o in outcomes if o != "issued")
    assert [o.split(" 已有企业号")[0] for o in refused] == [f"两页客户{r}有限公司" for r in range(3)], outcomes
    names = db.session.scalars(sa.select(EnterpriseAccount.customer_name).order_by(EnterpriseAccount.customer_name)).all()
    assert names == [f"两页客户{r}有限公司" for r in range(3)]
