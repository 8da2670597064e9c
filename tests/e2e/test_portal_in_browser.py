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


def _customer(app: Flask) -> str:
    """An active, funded account whose login is past its first password change; its login."""
    made: dict[str, str] = {}

    def prepare() -> None:  # in a thread of its own: the contract's PDF signature needs asyncio.run
        with app.app_context():
            from backoffice.services.accounts import hash_password

            sender = active_sender(app)
            sender.sub.password_hash = hash_password("my-own-pass-2026")
            sender.sub.must_change_password = False
            db.session.commit()
            made["login"] = sender.sub.login
            db.session.remove()

    worker = threading.Thread(target=prepare)
    worker.start()
    worker.join()
    return made["login"]


def _log_in(page: Any, live_server: str, login: str) -> None:
    page.goto(f"{live_server}/portal/login")
    page.fill('[name="username"]', login)
    page.fill('[name="password"]', "my-own-pass-2026")
    page.click('button[type="submit"]')
    page.wait_for_url(f"{live_server}/portal/")


def _fill_send_form(page: Any, live_server: str, recipients_file: Path) -> None:
    page.goto(f"{live_server}/portal/send")
    page.fill("#recipients", "13900139000")
    page.fill("#content", "【蓉城会员】周六会员日，全场八折。")
    page.fill("#send_at", "2026-11-25T10:00")
    page.set_input_files("#file", str(recipients_file))


def _typed(page: Any) -> tuple[str, str, str]:
    return page.input_value("#recipients"), page.input_value("#content"), page.input_value("#send_at")


TYPED = ("13900139000", "【蓉城会员】周六会员日，全场八折。", "2026-11-25T10:00")


def test_a_recipients_file_over_the_limit_is_caught_before_sending_and_nothing_typed_is_lost(
    app: Flask, live_server: str, browser_page: Any, tmp_path: Path
) -> None:
    """Found by a customer: a recipients' file over the request limit came back as a 413 page
    offering only 返回首页, and the send form with everything typed gone. The page now knows
    the limit (from the configuration) and says so when the file is chosen and at the submit,
    which it does not send."""
    login = _customer(app)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # read at each request: the page and the server's check alike
    big, small = tmp_path / "会员名单.csv", tmp_path / "small.csv"
    big.write_bytes(b"13800138000\n" * 10_000)  # 120,000 bytes
    small.write_bytes(b"13800138000\n")
    page = browser_page
    _log_in(page, live_server, login)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    _fill_send_form(page, live_server, big)

    warning = page.locator("#file-size-error")
    assert warning.is_visible()  # as soon as the file is chosen
    said = warning.inner_text()
    assert "“会员名单.csv”有 118 KB" in said and "超过一次提交的上限 64 KB" in said and "未提交" in said
    page.click("#send-form button[type=submit]")
    page.wait_for_timeout(500)
    assert page.url == f"{live_server}/portal/send" and not [r for r in requests if r.startswith("POST")]
    assert warning.is_visible() and _typed(page) == TYPED
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0

    page.set_input_files("#file", str(small))  # a file within the limit: the warning goes, the form sends
    assert not warning.is_visible()
    page.click("#send-form button[type=submit]")
    page.wait_for_selector("#send-ok")
    assert len([r for r in requests if r.startswith("POST")]) == 1
    db.session.expire_all()
    assert set(db.session.scalars(sa.select(Message.recipient))) == {"13800138000", "13900139000"}


def test_without_scripts_an_oversized_file_gets_a_page_naming_the_limit_and_back_keeps_the_form(
    app: Flask, live_server: str, browser_page: Any, tmp_path: Path
) -> None:
    """With scripts off the server's 413 is what the customer sees: it names the limit, says
    nothing was sent, and sends them back (the browser's history) to the form as they filled it."""
    login = _customer(app)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    big = tmp_path / "big.csv"
    big.write_bytes(b"13800138000\n" * 100_000)  # 1.1 MB
    context = browser_page.context.browser.new_context(locale="zh-CN", java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        _log_in(page, live_server, login)
        _fill_send_form(page, live_server, big)
        page.click("main form button[type=submit]")  # (not the header's logout)
        page.wait_for_selector("text=出错了（413）")
        said = page.inner_text("main")
        assert "一次提交最多 64 KB" in said and "本次未发送，也未扣费" in said and "后退" in said
        assert page.get_attribute("#go-back", "href") == f"{live_server}/portal/send"
        page.go_back()
        page.wait_for_selector("#content")
        assert _typed(page) == TYPED
    finally:
        context.close()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_on_a_phone_the_portal_pages_do_not_slide_sideways_and_a_wide_table_scrolls_in_place(
    app: Flask, live_server: str, browser_page: Any
) -> None:
    """Found by an exploratory test: on a 375 px screen 发送记录 was 583 px wide, so the whole page
    slid sideways (its header with it) to reach the status and cost columns."""
    login = _customer(app)

    def send_some() -> None:
        with app.app_context():
            from backoffice.models import SubAccount
            from backoffice.services.messaging import accept_messages

            sub = db.session.scalar(sa.select(SubAccount).where(SubAccount.login == login))
            content = "【蓉城会员】周六会员日，全场八折，欢迎光临本店各门店选购。"
            accept_messages(db.session, sub_account=sub, recipients=["13800138000", "13900139000"], content=content)
            db.session.commit()
            db.session.remove()

    worker = threading.Thread(target=send_some)
    worker.start()
    worker.join()
    page = browser_page
    page.set_viewport_size({"width": 375, "height": 740})
    _log_in(page, live_server, login)
    for path in (
        "/portal/",
        "/portal/send",
        "/portal/messages",
        "/portal/replies",
        "/portal/api-keys",
        "/portal/receipts",
        "/portal/statement",
    ):
        page.goto(f"{live_server}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    page.goto(f"{live_server}/portal/messages")
    table = page.locator("#messages")
    assert table.evaluate("t => t.scrollWidth > t.clientWidth")  # its own scroll bar reaches the last columns
    table.evaluate("t => { t.scrollLeft = t.scrollWidth }")
    assert page.locator("#messages tbody tr").first.locator("td").nth(6).is_visible()


def test_revoking_an_api_key_asks_first_and_a_dismissed_question_keeps_the_key(app: Flask, live_server: str, browser_page: Any) -> None:
    """Found by an exploratory test: one click on 吊销 beside a key revoked it at once, with no
    way back: the customer's sending program stopped on a slip of the mouse."""
    login = _customer(app)
    page = browser_page
    _log_in(page, live_server, login)
    page.goto(f"{live_server}/portal/api-keys")
    page.fill('[name="label"]', "生产系统")
    page.click("main form button[type=submit]")
    page.wait_for_selector("text=新密钥（只显示这一次）")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.locator("tr", has_text="生产系统").locator("button").click()
    page.wait_for_timeout(300)
    assert asked and "吊销密钥" in asked[0] and "不能恢复" in asked[0]
    page.goto(f"{live_server}/portal/api-keys")
    assert "有效" in page.locator("tr", has_text="生产系统").inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr", has_text="生产系统").locator("button").click()
    page.wait_for_selector("text=已吊销")
    assert "已吊销" in page.locator("tr", has_text="生产系统").inner_text()


def test_the_send_form_counts_the_parts_and_the_cost_as_intake_will_charge_them(app: Flask, live_server: str, browser_page: Any) -> None:
    """Found by an exploratory test: the form said nothing of what a message would cost; the
    customer learned it from the charge, after sending it to every number. The count under the
    message is checked against the dispatcher's own splitting, at each boundary."""
    import re

    from dispatch.segments import TooLong, encode_segments

    login = _customer(app)

    def sign() -> None:  # this account's signature, added by intake when a text lacks it
        with app.app_context():
            from backoffice.models import SubAccount

            account = db.session.scalar(sa.select(EnterpriseAccount).join(SubAccount).where(SubAccount.login == login))
            account.sms_signature, account.add_signature = "蓉城会员", True
            db.session.commit()
            db.session.remove()

    worker = threading.Thread(target=sign)
    worker.start()
    worker.join()
    page = browser_page
    _log_in(page, live_server, login)
    page.goto(f"{live_server}/portal/send")
    texts = [
        "您的验证码是 482913",  # the signature added: 【蓉城会员】 + text
        "【蓉城会员】" + "会" * 64,  # 70 UCS-2 units: one part
        "【蓉城会员】" + "会" * 65,  # 71: two parts of 67
        "【蓉城会员】" + "会" * 60 + "😀" + "会" * 66,  # 134 units, but the pair is not split at 67: three parts
        "【蓉城会员】" + "会" * 400,  # over six parts: refused
        "  " + "【蓉城会员】" + "会" * 64 + "\n",  # trimmed as intake trims
    ]
    for text in texts:
        page.fill("#content", text)
        said = page.locator("#content-count").inner_text()
        signed = text.strip() if "【蓉城会员】" in text else "【蓉城会员】" + text.strip()
        try:
            expected = encode_segments(signed, 6).parts
        except TooLong as long:
            expected = long.parts
        assert f"按 {expected} 条计费" in said, (text[:20], said)
        if expected > 6:
            assert "将被拒发" in said
        else:
            cost = (Decimal("0.045") * expected).normalize()
            assert re.search(rf"每个号码 {cost:f}0* 元", said), said
    page.fill("#content", "您的验证码是 482913")
    assert "含自动添加的签名【蓉城会员】" in page.locator("#content-count").inner_text()
