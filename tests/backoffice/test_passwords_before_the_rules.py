"""A password set before today's rules (by older code, demo data, a database from before
password_problem) is judged at the login that types it: a weak one is changed before anything
else, for staff and customers; API keys go on."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from backoffice.extensions import db
from backoffice.models import AuditEntry, StaffUser, SubAccount
from backoffice.services.accounts import hash_password
from backoffice.services.api_keys import create_api_key
from tests.backoffice.test_messaging import active_sender
from tests.conftest import login


def set_old_password(record: StaffUser | SubAccount, password: str, *, must_change: bool = False) -> None:
    """A password written as older code did: no policy applied."""
    record.password_hash = hash_password(password)
    record.must_change_password = must_change
    db.session.commit()


def staff_user(name: str) -> StaffUser:
    db.session.expire_all()
    user = db.session.scalar(sa.select(StaffUser).where(StaffUser.username == name))
    assert user is not None
    return user


def sent_to_password_page(response: TestResponse) -> bool:
    return response.status_code == 302 and response.headers["Location"].endswith("/password")


@pytest.mark.parametrize(
    ("weak", "why"),
    [
        pytest.param("12345678", "员工账号的密码应为 10–128 个字符", id="short"),
        pytest.param("Password@123", "这个密码太常见", id="common"),
        pytest.param("abcdef123456", "连续或重复", id="key-run"),
        pytest.param("finance-pass-1", None, id="fine"),
    ],
)
def test_a_staff_user_whose_password_fails_todays_rules_changes_it_before_anything_else(
    app: Flask, client: FlaskClient, staff: dict, weak: str, why: str | None
) -> None:
    """Found by a review: password_problem was applied when a password was set, so one set
    before it could be used forever. The login that types it now sends its session to the
    password page, on every page, until it is changed; a password that passes goes on as before."""
    set_old_password(staff_user("finance"), weak)
    assert login(client, "finance", weak).status_code == 302
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "login").order_by(AuditEntry.id.desc()))
    assert entry is not None and entry.detail == ({"weak_password": True} if why else {})
    if why is None:
        assert client.get("/finance/receipts").status_code == 200
        assert 'id="weak-password"' not in client.get("/password").get_data(as_text=True)
        return
    for path in ("/finance/receipts", "/finance/books", "/", "/sales/", "/finance/receipts"):  # again and again
        assert sent_to_password_page(client.get(path)), path
    assert sent_to_password_page(client.post("/finance/receipts", data={}))
    page = client.get("/password").get_data(as_text=True)
    assert 'id="weak-password"' in page and "不符合现行的密码规则" in page and why in page and 'id="first-login"' not in page

    refused = client.post("/password", data={"current": weak, "new": "abcd1234abcd", "confirm": "abcd1234abcd"})
    assert refused.status_code == 422 and sent_to_password_page(client.get("/finance/receipts"))  # still weak: still held
    changed = client.post("/password", data={"current": weak, "new": "my-own-pass-9", "confirm": "my-own-pass-9"})
    assert changed.status_code == 302
    assert client.get("/finance/receipts").status_code == 200
    assert 'id="weak-password"' not in client.get("/password").get_data(as_text=True)
    assert not staff_user("finance").must_change_password  # the row says nothing of it

    again = app.test_client()
    assert login(again, "finance", "my-own-pass-9").status_code == 302
    assert again.get("/finance/receipts").status_code == 200


def test_each_login_with_the_weak_password_is_held_and_a_logout_ends_it(app: Flask, client: FlaskClient, staff: dict) -> None:
    set_old_password(staff_user("sales"), "abcdef123456")
    other = app.test_client()
    for browser in (client, other):
        assert login(browser, "sales", "abcdef123456").status_code == 302
        assert sent_to_password_page(browser.get("/sales/"))
    assert client.post("/logout").status_code == 302  # allowed while held
    assert client.get("/sales/").headers["Location"].startswith("/login")
    assert sent_to_password_page(other.get("/sales/"))  # the other session is held still
    # The browser that logged out logs in as someone else: judged afresh, not held.
    assert login(client, "admin", staff["admin"]).status_code == 302
    assert client.get("/admin/users").status_code == 200


def test_a_customer_whose_password_fails_todays_rules_changes_it_and_its_api_key_goes_on(app: Flask, client: FlaskClient) -> None:
    sender = active_sender(app)
    _, secret = create_api_key(db.session, sender.sub, label="系统对接", actor="test")
    set_old_password(sender.sub, "12345678")  # once a customer's first own password, before the rules
    assert login(client, sender.sub.login, "12345678", portal=True).status_code == 302
    for path in ("/portal/", "/portal/receipts", "/portal/"):
        assert sent_to_password_page(client.get(path)), path
    page = client.get("/password").get_data(as_text=True)
    assert 'id="weak-password"' in page and "连续或重复" in page
    api = app.test_client().get("/api/v1/balance", headers={"Authorization": f"Bearer {secret}"})
    assert api.status_code == 200 and "balance" in api.get_json()  # API keys are not held up

    changed = client.post("/password", data={"current": "12345678", "new": "Lan-yu-2026!", "confirm": "Lan-yu-2026!"})
    assert changed.status_code == 302
    assert client.get("/portal/").status_code == 200


def test_an_initial_password_that_is_also_weak_is_changed_once(app: Flask, client: FlaskClient) -> None:
    """A login on a password somebody else set and weak too: the page says the first (it is
    what the user knows), and one change ends both."""
    sender = active_sender(app)
    set_old_password(sender.sub, "11111111", must_change=True)
    assert login(client, sender.sub.login, "11111111", portal=True).status_code == 302
    page = client.get("/password").get_data(as_text=True)
    assert 'id="first-login"' in page and 'id="weak-password"' not in page
    assert client.post("/password", data={"current": "11111111", "new": "Lan-yu-2026!", "confirm": "Lan-yu-2026!"}).status_code == 302
    assert client.get("/portal/").status_code == 200
