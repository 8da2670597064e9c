"""Finance in a real browser (issue #4): log in, import the bank's statement, confirm the match
the system proposes, download the invoice."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from pypdf import PdfReader

from backoffice.extensions import db
from backoffice.models import EnterpriseAccount, Receipt
from backoffice.services.receipts import record_receipt
from tests.conftest import make_contract

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_finance_imports_a_statement_confirms_the_match_and_downloads_the_invoice(
    app: Flask, staff: dict, live_server: str, browser_page: Any, tmp_path: Path
) -> None:
    def prepare() -> None:
        # In a thread of its own: Playwright's event loop runs in this one, and the contract's
        # PDF signature (pyHanko) needs asyncio.run.
        with app.app_context():
            issued = make_contract(app, "sms_business_service")  # invoice first: FP-2026-000001, unpaid
            code = issued.contract.account.code
            record_receipt(
                db.session, account_code=code, amount="1750.00", paid_on="2026-11-23", payer_name=None, bank_reference="CMB9988776655",
                bank="CMB", voucher=None, recorded_by=f"sub:{code}", documents_root=Path(app.config["DOCUMENTS_PATH"]),
                max_voucher_bytes=10**6,
            )  # fmt: skip
            db.session.commit()
            made.update(code=code, customer=issued.contract.customer_name)
            db.session.remove()

    made: dict[str, str] = {}
    worker = threading.Thread(target=prepare)
    worker.start()
    worker.join()
    code = made["code"]
    statement = tmp_path / "statement.csv"
    statement.write_text(
        "date,amount,payer_name,payer_account,reference,memo\n"
        f"2026-11-23,1750.00,{made['customer']},6214830100001234,CMB9988776655,{code} 短信费\n",
        encoding="utf-8",
    )

    page = browser_page
    page.goto(f"{live_server}/login")
    page.fill('[name="username"]', "finance")
    page.fill('[name="password"]', staff["finance"])
    page.click('button[type="submit"]')
    page.goto(f"{live_server}/finance/statements")
    page.set_input_files("#statement", str(statement))
    page.click("#statement-form button[type=submit]")
    page.wait_for_selector("text=已导入对账单")
    row = page.locator("#proposals tbody tr").first
    assert "银行流水号一致" in row.inner_text() and code in row.inner_text()
    row.locator("button.confirm-match").click()
    page.wait_for_selector("text=已确认入账")
    assert page.inner_text("#receipt-status") == "已确认入账"
    with page.expect_download() as download_info:
        page.click("#invoice-link", modifiers=["Alt"])  # Alt-click: save the link instead of opening it
    path = download_info.value.path()
    text = "".join(p.extract_text() for p in PdfReader(path).pages).replace(" ", "")
    assert "FP-2026-000001" in text and "已付款" in text and "1,750.00" in text

    db.session.expire_all()
    assert db.session.scalar(sa.select(EnterpriseAccount.status).where(EnterpriseAccount.code == code)) == "active"
    assert db.session.scalar(sa.select(Receipt.status)) == "confirmed"


def test_a_voucher_statement_or_seal_over_its_limit_is_caught_in_the_page_and_nothing_typed_is_lost(
    app: Flask, staff: dict, live_server: str, browser_page: Any, tmp_path: Path
) -> None:
    """Found by a review: the page checked only the portal's recipients' file. A voucher (or a
    statement, a seal) over the server's limit went up whole and came back refused, to be chosen
    again. The file field now names its limit, and the page says so when the file is chosen
    and at the submit, which it does not send; a file within the limit goes."""
    made: dict[str, str] = {}

    def prepare() -> None:  # a thread of its own: the contract's PDF signature needs asyncio.run
        with app.app_context():
            made["code"] = make_contract(app, "enterprise_sms_center").contract.account.code
            db.session.remove()

    worker = threading.Thread(target=prepare)
    worker.start()
    worker.join()
    app.config["VOUCHER_MAX_BYTES"] = 64 * 1024  # read at each request: the page and the server alike
    big, small = tmp_path / "汇款凭证.pdf", tmp_path / "small.pdf"
    big.write_bytes(b"%PDF-1.4\n" + b"0" * 100_000 + b"\n%%EOF\n")  # 98 KB
    small.write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF\n")
    page = browser_page
    page.goto(f"{live_server}/login")
    page.fill('[name="username"]', "finance")
    page.fill('[name="password"]', staff["finance"])
    page.click('button[type="submit"]')
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)

    page.goto(f"{live_server}/finance/receipts")
    typed = {"#f-account": made["code"], "#f-amount": "1750.00", "#f-paid_on": "2026-11-20", "#f-bank_reference": "CMB-V-1"}
    for selector, value in typed.items():
        page.fill(selector, value)
    page.set_input_files("#f-voucher", str(big))
    warning = page.locator("#voucher-size-error")
    assert warning.is_visible()  # as soon as the file is chosen
    said = warning.inner_text()
    assert "“汇款凭证.pdf”有 98 KB，超过汇款凭证的上限 64 KB：未提交" in said and "您填写的汇款信息都还在" in said
    page.click("#receipt-form button[type=submit]")
    page.wait_for_timeout(500)
    assert posts == [] and warning.is_visible()
    assert {selector: page.input_value(selector) for selector in typed} == typed
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Receipt)) == 0

    page.set_input_files("#f-voucher", str(small))  # within the limit: the warning goes, the form sends
    assert not warning.is_visible()
    page.click("#receipt-form button[type=submit]")
    page.wait_for_load_state()
    assert len(posts) == 1
    db.session.expire_all()
    assert db.session.scalar(sa.select(Receipt.bank_reference)) == "CMB-V-1"

    statement = tmp_path / "对账单.csv"  # over the 10 MB a statement may have
    statement.write_bytes(b"date,amount,payer_name,payer_account,reference,memo\n" + b"#" * (10 * 1024 * 1024))
    page.goto(f"{live_server}/finance/statements")
    page.set_input_files("#statement", str(statement))
    said = page.inner_text("#statement-size-error")
    assert "“对账单.csv”有 10.1 MB，超过对账单文件的上限 10 MB：未提交" in said
    page.click("#statement-form button[type=submit]")
    page.wait_for_timeout(500)
    assert len(posts) == 1

    page.context.clear_cookies()  # the administrator's turn: the provider's seal
    page.goto(f"{live_server}/login")
    page.fill('[name="username"]', "admin")
    page.fill('[name="password"]', staff["admin"])
    page.click('button[type="submit"]')
    page.wait_for_load_state()
    sent = len(posts)
    seal = tmp_path / "公章.png"
    seal.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 2_050_000)  # 2.05 MB: over the seal's 2 MB (decimal, as the server says it)
    page.goto(f"{live_server}/admin/provider/sms_business_service")
    page.set_input_files("#f-seal", str(seal))
    assert "“公章.png”有 2.1 MB，超过公章图片的上限 2 MB：未提交" in page.inner_text("#seal-size-error")
    page.click("#provider-form button[type=submit]")
    page.wait_for_timeout(500)
    assert len(posts) == sent
