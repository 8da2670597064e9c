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
