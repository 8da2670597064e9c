"""A customer in a real browser: the first login with the password issued with the contract,
the password page it leads to, then sending from the form (typed numbers and a CSV saved by
Excel in GBK, a line break in the text) and the messages with their charges."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.extensions import db
from backoffice.models import EnterpriseAccount, Message
from tests.backoffice.test_messaging import active_sender

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_a_customer_sets_a_password_sends_from_the_form_and_a_csv_and_sees_the_messages(
    app: Flask, live_server: str, browser_page: Any, tmp_path: Path
) -> None:
    made: dict[str, Any] = {}

    def prepare() -> None:  # in a thread of its own: the contract's PDF signature needs asyncio.run
        with app.app_context():
            from backoffice.services.accounts import hash_password

            sender = active_sender(app)
            sender.sub.password_hash = hash_password("Initial-Pass-1")  # as issued: to be changed at the first login
            db.session.commit()
            made.update(code=sender.account.code, login=sender.sub.login, balance=sender.account.balance)
            db.session.remove()

    worker = threading.Thread(target=prepare)
    worker.start()
    worker.join()
    csv_file = tmp_path / "客户名单.csv"
    csv_file.write_bytes("姓名,手机号码\n张三,13700137000\n李四,010-62781234\n".encode("gb18030"))

    page = browser_page
    page.goto(f"{live_server}/portal/login")
    page.fill('[name="username"]', made["login"])
    page.fill('[name="password"]', "Initial-Pass-1")
    page.click('button[type="submit"]')
    page.wait_for_selector("#first-login")  # straight to the password page, whatever was asked for
    page.goto(f"{live_server}/portal/send")
    page.wait_for_selector("#first-login")
    page.fill('[name="current"]', "Initial-Pass-1")
    page.fill('[name="new"]', "my-own-pass-2026")
    page.fill('[name="confirm"]', "my-own-pass-2026")
    page.click("#password-form button[type=submit]")
    page.wait_for_selector("text=密码已修改")

    page.goto(f"{live_server}/portal/send")
    page.fill("#recipients", "13800138000、13900139000")
    page.fill("#content", "【蓉城会员】您的验证码是 482913，\n5 分钟内有效。")
    page.set_input_files("#file", str(csv_file))
    page.click("main form button[type=submit]")  # not the header's logout button
    page.wait_for_selector("#send-ok")
    assert "本次扣费 0.135 元" in page.inner_text("#send-ok")
    assert "第 3 行" in page.content() and "固定电话" in page.content()  # the CSV's landline, reported by its line
    page.goto(f"{live_server}/portal/messages")
    rows = page.locator("#messages tbody tr")
    assert rows.count() == 3
    assert page.inner_text("#balance") == f"{made['balance'] - Decimal('0.135'):.3f}"

    db.session.expire_all()
    contents = set(db.session.scalars(sa.select(Message.content)))
    assert contents == {"【蓉城会员】您的验证码是 482913，\n5 分钟内有效。"}  # one line break, as on the phone
    balance = db.session.scalar(sa.select(EnterpriseAccount.balance).where(EnterpriseAccount.code == made["code"]))
    assert balance == made["balance"] - Decimal("0.135")
