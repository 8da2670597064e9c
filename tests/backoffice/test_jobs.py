"""Renewal rules carried out by the scheduled jobs: expiry, yearly auto-extension, a missed job
run once when the scheduler comes back."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from backoffice import jobs
from backoffice.clock import SHANGHAI
from backoffice.extensions import db
from backoffice.models import AuditEntry, ContractJob, Notification
from backoffice.services.renewal import run_contract_job
from tests.conftest import login, make_contract


def job(kind: str) -> ContractJob:
    """The latest pending job of that kind."""
    return db.session.scalars(
        sa.select(ContractJob).where(ContractJob.kind == kind, ContractJob.done_at.is_(None)).order_by(ContractJob.due_on.desc())
    ).first()


def pay_what_is_owed(app: Flask, account: Any, bank_ref: str) -> None:
    """The customer pays what its contract says it owes; committed and posted to the books."""
    from backoffice.services.bookkeeping import post_pending
    from backoffice.services.credit import credit_receipt

    credit_receipt(
        db.session, account_code=account.code, amount=account.receivable, bank="CMB", bank_ref=bank_ref,
        received_on=date(2026, 11, 23), actor="t",
    )  # fmt: skip
    db.session.commit()
    post_pending(db.session, Path(app.config["LEDGER_PATH"]))


def reachable(account: Any) -> None:
    """000's sample gives a landline and no e-mail: give the account both channels."""
    account.contact_email, account.reserved_mobile = "cai@example.com", "13912345678"
    db.session.commit()


def test_fixed_term_contract_expires_once(app: Flask) -> None:
    issued = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None)
    assert issued.contract.term_end == date(2027, 11, 30)
    expire = job("expire")
    assert expire.due_on == date(2027, 12, 1)
    run_contract_job(db.session, expire)
    db.session.commit()
    assert issued.contract.status == "expired"
    first_outcome = expire.outcome
    assert run_contract_job(db.session, expire) == first_outcome  # a second run changes nothing
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == "expire")) == 1


def test_yearly_contract_extends_and_plans_the_next_year(app: Flask) -> None:
    issued = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30")
    run_contract_job(db.session, job("auto_extend"))
    db.session.commit()
    assert issued.contract.term_end == date(2028, 11, 30)
    assert job("auto_extend").due_on == date(2028, 12, 1)
    assert job("renewal_notice").due_on == date(2028, 10, 16)  # 15 days before the last day to object (30 days before the end)
    assert jobs.arm_pending(app) == 2


def test_the_renewal_notice_reaches_the_customer_with_what_happens_at_the_end(app: Flask) -> None:
    """Found by a review: the notice job wrote an audit line and told the customer nothing."""
    yearly = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30")
    notice = job("renewal_notice")
    assert notice.due_on == date(2027, 10, 16)  # the customer may object until 2027-10-31 (004 §8.7: 30 days)
    run_contract_job(db.session, notice)
    db.session.commit()
    notes = {n.channel: n for n in db.session.scalars(sa.select(Notification).where(Notification.key.like("renewal-notice-%")))}
    assert set(notes) == {"email", "sms"}
    assert "2027年11月30日 到期" in notes["email"].body and "2027年10月31日 前书面通知" in notes["email"].body
    assert notes["email"].recipient == yearly.contract.account.contact_email
    assert "自动顺延一年" in notes["sms"].body
    run_contract_job(db.session, notice)  # done: not queued again
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Notification).where(Notification.key.like("renewal-notice-%"))) == 2

    fixed = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None)
    reachable(fixed.contract.account)
    run_contract_job(db.session, job("renewal_notice"))
    db.session.commit()
    (email,) = db.session.scalars(
        sa.select(Notification).where(Notification.key == f"renewal-notice-{fixed.contract.contract_no}-2027-11-30:email")
    )
    assert "到期后合同终止" in email.body and "顺延" not in email.body


def test_an_expired_contract_stops_its_account_sending(app: Flask) -> None:
    """Found by a review: the contract said expired, the account kept sending and being charged."""
    from backoffice.models import EnterpriseAccount
    from backoffice.services.messaging import SendingForbidden, accept_messages

    issued = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None)
    account = issued.contract.account
    reachable(account)
    pay_what_is_owed(app, account, "EXP1")
    db.session.refresh(account)
    assert account.status == "active"
    outcome = run_contract_job(db.session, job("expire"))
    db.session.commit()
    account = db.session.get(EnterpriseAccount, account.id)
    assert account.status == "suspended" and "暂停" in outcome and account.balance > 0  # the balance stays
    (sms,) = db.session.scalars(
        sa.select(Notification).where(Notification.key == f"contract-expired-{issued.contract.contract_no}-2027-11-30:sms")
    )
    assert "已到期终止" in sms.body and "余额" in sms.body
    sub = account.sub_accounts[0]
    with pytest.raises(SendingForbidden):
        accept_messages(db.session, sub_account=sub, recipients="13800138000", content="【创联】测试")
    db.session.rollback()
    # Renewed on paper: recorded as a renewal, which lets the account send again (found by a
    # review: nothing could; then by an exploratory test: `account resume`, the way it was done,
    # left the account sending for ever, with no term, notice or expiry).
    from backoffice.services.staff import create_staff_user

    create_staff_user(db.session, "li.ming", "李明", "sales-pass-1", "sales", actor="test")
    create_staff_user(db.session, "wang.cai", "王财", "finance-pass-1", "finance", actor="test")
    db.session.commit()
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["account", "resume", account.code, "--reason", " ", "--json"])
    assert refused.exit_code == 2 and "reason" in json.loads(refused.output)["error"]["fields"]
    refused = runner.invoke(args=["account", "resume", account.code, "--reason", "已续签 HT-2027-000001", "--json"])
    message = json.loads(refused.output)["error"]["message"]
    assert refused.exit_code == 1 and f"合同 {issued.contract.contract_no} 已到期" in message and "contract renew" in message, message
    number = issued.contract.contract_no
    for args, field in (
        (["--until", "2028-11-30", "--by", "wang.cai"], "by"),  # finance records no renewal
        (["--until", "2027-11-30", "--by", "li.ming"], "until"),  # not after the old end
        (["--until", "30/11/2028", "--by", "li.ming"], "until"),
    ):
        bad = runner.invoke(args=["contract", "renew", number, *args, "--json"])
        assert bad.exit_code == 2 and field in json.loads(bad.output)["error"]["fields"], (args, bad.output)
    renewed = runner.invoke(
        args=["contract", "renew", number, "--until", "2028-11-30", "--by", "li.ming", "--reason", "续签协议 2027-11-28", "--json"]
    )
    assert renewed.exit_code == 0, renewed.output
    out = json.loads(renewed.output)
    assert out["status"] == "renewed" and out["term_end"] == "2028-11-30" and out["previous_end"] == "2027-11-30"
    assert out["account_resumed"] is True and out["account_status"] == "active"
    assert out["jobs"] == [{"kind": "renewal_notice", "due_on": "2028-10-31"}, {"kind": "expire", "due_on": "2028-12-01"}]
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "renew_contract"))
    assert entry.actor == "staff:li.ming" and entry.detail["reason"] == "续签协议 2027-11-28" and entry.detail["new_end"] == "2028-11-30"
    assert {f"contract:{number}:renewal_notice:2028-10-31", f"contract:{number}:expire:2028-12-01"} <= {j.id for j in jobs.stored_jobs(app)}
    db.session.expire_all()
    assert accept_messages(
        db.session,
        sub_account=db.session.get(EnterpriseAccount, account.id).sub_accounts[0],
        recipients="13800138000",
        content="【创联】测试",
    )
    db.session.commit()
    # The renewed term ends as any does: the account stops, the customer is told again.
    run_contract_job(db.session, job("expire"))
    db.session.commit()
    assert issued.contract.status == "expired" and db.session.get(EnterpriseAccount, account.id).status == "suspended"
    assert db.session.scalar(sa.select(Notification).where(Notification.key == f"contract-expired-{number}-2028-11-30:sms"))


def test_a_job_of_an_ended_contract_is_skipped_saying_so_in_plain_words(app: Flask) -> None:
    """Found by an exploratory test: the outcome read "合同已已到期，跳过"."""
    make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None)
    notice, expire = job("renewal_notice"), job("expire")
    run_contract_job(db.session, expire)
    assert run_contract_job(db.session, notice) == "合同已到期，跳过"
    db.session.commit()


def test_an_unpaid_account_whose_contract_expired_is_not_opened_by_a_late_payment(app: Flask) -> None:
    """Found by a review: an account still awaiting payment at expiry opened when the money came."""
    from backoffice.models import EnterpriseAccount

    issued = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None)
    account = issued.contract.account
    run_contract_job(db.session, job("expire"))
    db.session.commit()
    pay_what_is_owed(app, account, "LATE1")
    assert db.session.get(EnterpriseAccount, account.id).status == "suspended"


def test_a_written_objection_ends_a_yearly_contract_with_its_term(app: Flask, client: FlaskClient, staff: dict) -> None:
    """004 §8.5, §8.7: sales records the customer's written objection; it must come 30 days before the end."""
    issued = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30")
    number = issued.contract.contract_no
    login(client, "sales", staff["sales"])
    page = client.get(f"/sales/contracts/{number}").get_data(as_text=True)
    assert "2027-10-31 前收到" in page and 'id="stop-renewal"' in page
    late = client.post(f"/sales/contracts/{number}/stop-renewal", data={"received_on": "2027-11-01"})
    assert late.status_code == 422 and "已过期限" in late.get_data(as_text=True)
    for bad in ("", "明天", "2030-01-01"):
        refused = client.post(f"/sales/contracts/{number}/stop-renewal", data={"received_on": bad})
        assert refused.status_code == 422, bad
    db.session.expire_all()
    assert issued.contract.renewal_rule == "yearly_auto_extend" and job("auto_extend") is not None
    assert client.post(f"/sales/contracts/{number}/stop-renewal", data={"received_on": "2026-11-20"}).status_code == 302
    db.session.expire_all()
    assert job("auto_extend") is None and job("expire").due_on == date(2027, 12, 1)
    assert issued.contract.renewal_rule == "fixed_term"
    assert db.session.scalar(sa.select(AuditEntry.action).where(AuditEntry.action == "stop_renewal")) == "stop_renewal"
    again = client.post(f"/sales/contracts/{number}/stop-renewal", data={"received_on": "2026-11-20"})
    assert again.status_code == 422 and "无需登记异议" in again.get_data(as_text=True)
    run_contract_job(db.session, job("expire"))
    db.session.commit()
    assert issued.contract.status == "expired"


def test_the_command_line_records_a_written_objection(app: Flask, runner: FlaskCliRunner) -> None:
    issued = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30")
    number = issued.contract.contract_no
    refused = runner.invoke(args=["contract", "stop-renewal", number, "--received-on", "2027-11-15", "--json"])
    assert refused.exit_code == 2 and "received_on" in json.loads(refused.output)["error"]["fields"]  # bad input: 2
    done = runner.invoke(args=["contract", "stop-renewal", number, "--received-on", "2026-11-23", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["expires_on"] == "2027-12-01"


def test_long_term_and_until_used_up_arm_no_dated_jobs(app: Flask) -> None:
    make_contract(app, "lingxuntong_service")
    make_contract(app, "sms_genie_user")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ContractJob)) == 0


@pytest.mark.parametrize("days_late", [1, 400])
def test_a_job_missed_while_down_runs_exactly_once_when_the_scheduler_returns(app: Flask, days_late: int) -> None:
    """A job that fell due while the scheduler was down (a day, or over a year ago) runs once
    when the scheduler starts again, and never a second time."""
    issued = make_contract(app, "enterprise_sms_center")
    expire = job("expire")
    # The job fell due while the scheduler was down: move it to yesterday 09:00 in the store.
    store = jobs._job_store(app, jobs.make_scheduler(app))
    store.remove_job(expire.job_id)
    store.shutdown()
    expire.due_on = (datetime.now(UTC) - timedelta(days=days_late)).date()
    db.session.commit()
    assert jobs.arm_pending(app) == 1  # re-armed: a job missing from the store is never lost

    ran = threading.Event()
    jobs._app = app
    try:
        restarted = jobs.make_scheduler(app)
        restarted.add_listener(lambda event: ran.set(), mask=4096 | 8192)  # EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
        restarted.start()
        assert ran.wait(15)
        restarted.shutdown(wait=True)
        assert expire.job_id not in {j.id for j in jobs.stored_jobs(app)}  # consumed: never runs twice
    finally:
        jobs._app = None
    db.session.expire_all()
    assert db.session.get(ContractJob, expire.id).done_at is not None
    assert issued.contract.status == "expired"


def test_a_nightly_books_run_missed_while_down_is_kept_for_the_restart(app: Flask) -> None:
    """Found by a review: the scheduler replaced the stored daily-books job at start, computing
    its next run from now, so a run missed while it was down never happened."""
    from apscheduler.job import Job
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    try:
        fresh = jobs.scheduler_for(app, BackgroundScheduler)  # an empty store: the job is added
        assert "daily-books" in {j.id for j in fresh.get_jobs()}
        missed = datetime(2026, 11, 21, 0, 10, tzinfo=SHANGHAI)  # fell due two days ago, the scheduler down
        store = jobs._job_store(app, fresh)
        trigger = CronTrigger(hour=0, minute=10, timezone=SHANGHAI)
        store.add_job(
            Job(fresh, id="daily-books", func="backoffice.jobs:daily_books", trigger=trigger, executor="default", args=[],
                kwargs={}, name="daily_books", next_run_time=missed, **jobs.JOB_DEFAULTS)
        )  # fmt: skip
        store.shutdown()
        restarted = jobs.scheduler_for(app, BackgroundScheduler)
        assert "daily-books" not in {j.id for j in restarted.get_jobs(jobstore="default") if j.pending}  # nothing replaces it
        (stored,) = [j for j in jobs.stored_jobs(app) if j.id == "daily-books"]
        assert stored.next_run_time == missed  # still due: the restarted scheduler runs it once
    finally:
        jobs._app = None


def test_one_scheduler_holds_the_installations_lock_and_a_second_stands_by(app: Flask) -> None:
    """DESIGN (scale-out): one scheduler holding a lock; on PostgreSQL an advisory lock, on SQLite a lock file."""
    first, second = jobs.SchedulerLock(app), jobs.SchedulerLock(app)
    try:
        assert first.acquire() and first.held()
        assert not second.acquire() and not second.held()  # a second `jobs run` waits
        first.release()  # the first one stopped (or died: the server or the kernel releases it)
        assert second.acquire()
    finally:
        first.release()
        second.release()


def test_the_nightly_books_job_asserts_posts_and_checks(app: Flask) -> None:
    from pathlib import Path

    from backoffice.models import LedgerEvent

    issued = make_contract(app, "sms_business_service")
    jobs._app = app
    try:
        jobs.daily_books()
        jobs.daily_books()  # a second run (after downtime, say) changes nothing
    finally:
        jobs._app = None
    code = issued.contract.account.code
    assertions = db.session.scalars(sa.select(LedgerEvent).where(LedgerEvent.kind == "balance")).all()
    assert [(e.event_id, e.posted_at is not None) for e in assertions] == [(f"balance-{code}-2026-11-23", True)]
    month = Path(app.config["LEDGER_PATH"]) / "2026" / "2026-11.beancount"
    assert f"2026-11-23 balance Liabilities:Prepaid:{code}" in month.read_text(encoding="utf-8")


def test_a_customer_with_a_landline_only_is_not_left_untold(app: Flask, runner: FlaskCliRunner) -> None:
    """Found by a review: 000/001 ask for one phone (their example is a landline) and no e-mail;
    the renewal and expiry notices went nowhere while the job said they were sent, and nothing
    let staff add an address. The notice now waits in the outbox as failed, saying why; once an
    e-mail is added (`account contact`), it can be sent again."""
    from backoffice.errors import Conflict
    from backoffice.services.notifications import UNREACHABLE, requeue

    issued = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None)
    account = issued.contract.account
    assert account.contact_email is None and account.reserved_mobile is None and account.contact_phone.startswith("0")
    db.session.execute(sa.delete(Notification))  # (the invoice's notices, queued for nobody too)
    outcome = run_contract_job(db.session, job("renewal_notice"))
    db.session.commit()
    assert outcome.startswith("续约提醒未能发出")
    notes = {n.channel: n for n in db.session.scalars(sa.select(Notification))}
    assert {c: (n.status, n.recipient, n.last_error) for c, n in notes.items()} == {
        "email": ("failed", "", UNREACHABLE),
        "sms": ("failed", "", UNREACHABLE),
    }
    with pytest.raises(Conflict, match="account contact"):
        requeue(db.session, notes["email"].id)
    db.session.rollback()
    bad = runner.invoke(args=["account", "contact", account.code, "--email", "不是邮箱", "--json"])
    assert bad.exit_code != 0 and "电子邮箱格式不正确" in bad.output
    # Found by a fuzzing round: a local part the platform's mail cannot send to was kept.
    chinese = runner.invoke(args=["account", "contact", account.code, "--email", "张三@qq.com", "--json"])
    assert chinese.exit_code != 0 and "@ 前只能是英文字母、数字" in chinese.output
    # A mobile added: the SMS goes out on resend (a review found only the e-mail could be resent).
    mobile = runner.invoke(args=["account", "contact", account.code, "--mobile", "+86 139 0013 9000", "--json"])
    assert mobile.exit_code == 0 and json.loads(mobile.output)["sms_notices_to"] == "13900139000"
    assert requeue(db.session, notes["sms"].id).recipient == "13900139000"
    db.session.commit()
    with pytest.raises(Conflict, match="电子邮箱"):
        requeue(db.session, notes["email"].id)
    db.session.rollback()
    good = runner.invoke(args=["account", "contact", account.code, "--email", "Ｆｉｎａｎｃｅ＠Example.cn", "--json"])
    assert good.exit_code == 0, good.output  # typed full-width, as a Chinese input method does: meant half-width
    assert requeue(db.session, notes["email"].id).recipient == "Finance@example.cn"
    db.session.commit()
    assert "未能通知" not in run_contract_job(db.session, job("expire"))  # told, now


def test_an_objection_received_in_time_but_recorded_after_the_extension_undoes_it(
    app: Flask, runner: FlaskCliRunner, client: FlaskClient, staff: dict
) -> None:
    """004 §8.5: no written objection, one more year. Found by a review, then an exploratory test:
    004 from 2026-12-01 to 2027-11-30, the letter received 2027-10-20 (in time), entered on
    2027-12-05 after the extension ran, bound the customer until 2028-11-30 (first taken against
    the new term, then refused with nothing that could end the contract). It now undoes the
    extension: the contract ends at its original end as if recorded in time."""
    from backoffice.clock import set_clock
    from backoffice.errors import ValidationFailed
    from backoffice.models import EnterpriseAccount
    from backoffice.services.messaging import SendingForbidden, accept_messages
    from backoffice.services.renewal import stop_renewal

    contract = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    number = contract.contract_no
    reachable(contract.account)
    pay_what_is_owed(app, contract.account, "OBJ1")
    set_clock(lambda: datetime(2027, 12, 1, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("auto_extend"))
    db.session.commit()
    assert contract.term_end == date(2028, 11, 30)
    jobs.arm_pending(app)
    assert {j.id for j in jobs.stored_jobs(app)} >= {
        f"contract:{number}:auto_extend:2028-12-01",
        f"contract:{number}:renewal_notice:2028-10-16",
    }
    set_clock(lambda: datetime(2027, 12, 5, 2, 0, tzinfo=UTC))
    # Received after that term's deadline (2027-10-31): refused, as it was in time.
    with pytest.raises(ValidationFailed) as late:
        stop_renewal(db.session, contract, received_on=date(2027, 11, 5), actor="staff:sales", today=date(2027, 12, 5))
    assert "已过期限" in late.value.errors["received_on"] and "顺延至 2028-11-30" in late.value.errors["received_on"]
    db.session.rollback()
    # The web page says what a late-recorded objection does.
    login(client, "sales", staff["sales"])
    assert 'id="late-objection"' in client.get(f"/sales/contracts/{number}").get_data(as_text=True)
    client.post("/logout")

    done = runner.invoke(args=["contract", "stop-renewal", number, "--received-on", "2027-10-20", "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.output)
    assert out["extension_undone"] is True and out["term_end"] == "2027-11-30" and out["status"] == "expired"
    db.session.expire_all()
    assert contract.term_end == date(2027, 11, 30) and contract.status == "expired" and contract.renewal_rule == "fixed_term"
    account = db.session.get(EnterpriseAccount, contract.account_id)
    assert account.status == "suspended" and account.balance > 0  # as the expiry does: the balance stays
    assert db.session.scalars(sa.select(ContractJob).where(ContractJob.done_at.is_(None))).all() == []  # the extended term's jobs
    cancelled = {j.kind: j.outcome for j in contract.jobs if j.due_on > date(2027, 12, 1)}
    assert set(cancelled) == {"renewal_notice", "auto_extend"} and all("顺延已撤销" in o for o in cancelled.values())
    assert not any(j.id.startswith(f"contract:{number}:") for j in jobs.stored_jobs(app))
    (extension,) = [j for j in contract.jobs if j.kind == "auto_extend" and j.due_on == date(2027, 12, 1)]
    assert "已撤销" in extension.outcome
    (email,) = db.session.scalars(sa.select(Notification).where(Notification.key == f"contract-expired-{number}-2027-11-30:email"))
    assert "已于 2027年11月30日 到期终止" in email.body and "2027年10月20日 提出的书面异议已登记" in email.body and "暂停发送" in email.body
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "stop_renewal"))
    assert (
        entry.actor.startswith("cli")
        and entry.detail["undone_extension_to"] == "2028-11-30"
        and entry.detail["received_on"] == "2027-10-20"
    )
    assert "撤销顺延" in entry.detail["reason"]
    with pytest.raises(SendingForbidden):
        accept_messages(db.session, sub_account=account.sub_accounts[0], recipients="13800138000", content="【蓉城会员】测试")
    db.session.rollback()
    again = runner.invoke(args=["contract", "stop-renewal", number, "--received-on", "2027-10-20", "--json"])
    assert again.exit_code == 1 and "无需登记异议" in json.loads(again.output)["error"]["message"]


def test_an_objection_received_after_an_extension_is_for_the_new_term(app: Flask) -> None:
    from backoffice.clock import set_clock
    from backoffice.services.renewal import stop_renewal

    contract = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    set_clock(lambda: datetime(2027, 12, 1, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("auto_extend"))
    db.session.commit()
    set_clock(lambda: datetime(2027, 12, 5, 2, 0, tzinfo=UTC))
    expire = stop_renewal(db.session, contract, received_on=date(2027, 12, 3), actor="staff:sales", today=date(2027, 12, 5))
    assert expire.due_on == date(2028, 12, 1) and expire.done_at is None and contract.status == "issued"  # (never paid)
    db.session.commit()


def test_a_scheduler_waits_for_a_database_it_cannot_reach_before_taking_its_lock(app: Flask) -> None:
    """With the database down at start (or after losing its lock), the scheduler stands by and
    tries again instead of ending with a traceback."""
    import threading

    class Flaky:
        tries = 0

        def acquire(self) -> bool:
            self.tries += 1
            if self.tries < 3:
                raise sa.exc.OperationalError("connect", {}, Exception("connection refused"))
            return True

        def release(self) -> None:
            pass

    lock = Flaky()
    assert jobs._take_lock(app, lock, 0.01, threading.Event()) is True and lock.tries == 3  # type: ignore[arg-type]
    stopped = threading.Event()
    stopped.set()
    assert jobs._take_lock(app, Flaky(), 0.01, stopped) is False  # type: ignore[arg-type]


# --- found by a review of a contract's life over the years ----------------------------------------


def renewal_emails() -> list[Notification]:
    return list(
        db.session.scalars(
            sa.select(Notification)
            .where(Notification.channel == "email", Notification.key.like("renewal-notice-%"))
            .order_by(Notification.id)
        )
    )


def test_a_renewal_notice_run_after_the_objection_deadline_names_no_day_already_past(app: Flask) -> None:
    """The scheduler back on 10 November sent "please object in writing before 31 October"."""
    from backoffice.clock import set_clock

    contract = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    reachable(contract.account)
    set_clock(lambda: datetime(2027, 11, 10, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("renewal_notice"))
    db.session.commit()
    (email,) = renewal_emails()
    assert "2027年10月31日" not in email.body and "书面异议的期限已过，合同将按约定自动顺延一年" in email.body


def test_a_renewal_notice_of_a_term_extended_since_is_skipped_and_leaves_next_years_notice_its_key(app: Flask) -> None:
    """With the scheduler down over the end of the term, the extension ran before the old notice,
    which then announced the new term's end and took its key: next year's notice queued nothing."""
    from backoffice.clock import set_clock

    contract = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    reachable(contract.account)
    old_notice, extension = job("renewal_notice"), job("auto_extend")
    set_clock(lambda: datetime(2027, 12, 3, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, extension)
    assert "已过时" in run_contract_job(db.session, old_notice)
    db.session.commit()
    assert renewal_emails() == []
    set_clock(lambda: datetime(2028, 10, 16, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("renewal_notice"))
    db.session.commit()
    (email,) = renewal_emails()
    assert "2028年11月30日" in email.body and "2028年10月31日 前书面通知" in email.body


@pytest.mark.parametrize("order", ["notice first", "expiry first"])
def test_a_renewal_notice_run_on_or_after_the_last_day_announces_no_end_already_here(app: Flask, order: str) -> None:
    """Found by an exploratory test: with the scheduler down, the notice ran after the term and
    told the customer the contract "将于 2027年11月30日 到期 … 请在到期前联系". It is skipped,
    saying why; the expiry's own notice tells the customer."""
    from backoffice.clock import set_clock

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    reachable(contract.account)
    notice, expire = job("renewal_notice"), job("expire")
    set_clock(lambda: datetime(2027, 12, 3, 2, 0, tzinfo=UTC))
    for each in (notice, expire) if order == "notice first" else (expire, notice):
        run_contract_job(db.session, each)
    db.session.commit()
    assert renewal_emails() == []
    if order == "notice first":
        assert "跳过" in notice.outcome and "2027-11-30" in notice.outcome and "到期通知" in notice.outcome
        assert db.session.scalar(sa.select(AuditEntry.action).where(AuditEntry.action == "renewal_notice_skipped"))
    (told,) = db.session.scalars(
        sa.select(Notification).where(Notification.channel == "email", Notification.key.like("contract-expired-%"))
    )
    assert "已于 2027年11月30日 到期终止" in told.body


def test_a_renewal_notice_run_on_the_last_day_is_skipped_and_the_day_before_is_sent(app: Flask) -> None:
    from backoffice.clock import set_clock

    fixed = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    yearly = make_contract(app, "sms_business_service", customer__name="乙公司", term_start="2026-12-01", term_end="2027-11-30").contract
    reachable(fixed.account)
    reachable(yearly.account)
    (fixed_notice,) = [j for j in fixed.jobs if j.kind == "renewal_notice"]
    (yearly_notice,) = [j for j in yearly.jobs if j.kind == "renewal_notice"]
    set_clock(lambda: datetime(2027, 11, 30, 1, 0, tzinfo=UTC))  # 09:00 on the last day
    assert "跳过" in run_contract_job(db.session, fixed_notice)
    assert renewal_emails() == []
    set_clock(lambda: datetime(2027, 11, 29, 1, 0, tzinfo=UTC))  # the day before: still a day to come
    run_contract_job(db.session, yearly_notice)
    db.session.commit()
    (email,) = renewal_emails()
    assert "将于 2027年11月30日 到期" in email.body and "自动顺延一年" in email.body


def test_an_objection_dated_before_the_contract_was_signed_is_refused(app: Flask) -> None:
    """A mistyped year (2025 for 2026) was taken and silently ended the contract."""
    from backoffice.errors import ValidationFailed
    from backoffice.services.renewal import stop_renewal

    contract = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    with pytest.raises(ValidationFailed) as refused:
        stop_renewal(db.session, contract, received_on=date(2025, 11, 20), actor="staff:sales", today=date(2026, 11, 23))
    assert "早于合同签订日期" in refused.value.errors["received_on"]
    db.session.rollback()
    assert job("auto_extend") is not None  # the extension still stands


def test_a_payment_to_an_expired_contracts_account_tells_the_customer_sending_is_suspended(app: Flask) -> None:
    """The recharge notice said the balance could be spent; the account, suspended, cannot send."""
    from decimal import Decimal

    from backoffice.clock import set_clock
    from backoffice.services.bookkeeping import post_pending
    from backoffice.services.receipts import confirm_receipt, record_receipt

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    reachable(contract.account)
    pay_what_is_owed(app, contract.account, "P1")
    set_clock(lambda: datetime(2027, 12, 2, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("expire"))
    db.session.commit()
    documents = Path(app.config["DOCUMENTS_PATH"])
    receipt = record_receipt(
        db.session, account_code=contract.account.code, amount="500.00", paid_on="2027-12-02", payer_name=None, bank_reference="P2",
        bank="CMB", voucher=None, recorded_by="staff:clerk", documents_root=documents, max_voucher_bytes=10**6,
    )  # fmt: skip
    db.session.commit()
    confirm_receipt(db.session, receipt.id, actor="staff:finance", four_eyes_threshold=Decimal("1e9"), documents_root=documents)
    db.session.commit()
    post_pending(db.session, Path(app.config["LEDGER_PATH"]))
    assert contract.account.status == "suspended"
    for channel in ("email", "sms"):
        note = db.session.scalar(sa.select(Notification).where(Notification.key == f"receipt-confirmed-{receipt.id}:{channel}"))
        assert "暂停发送" in note.body and "续约" in note.body, channel  # the contract expired: a renewal lets it send


def test_a_terms_expiry_and_extension_take_effect_at_the_first_moment_after_its_last_day(app: Flask) -> None:
    """Found by a review: the expiry ran at 09:00 the day after the term, and the account sent
    and was charged for nine hours past its contract. Notices still go out at 09:00."""
    fixed = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    yearly = make_contract(app, "sms_business_service", customer__name="乙公司", term_start="2026-12-01", term_end="2027-11-30").contract
    jobs.arm_pending(app)
    runs = {
        job.id.split(":")[2] + ":" + job.id.split(":")[1]: job.next_run_time
        for job in jobs.stored_jobs(app)
        if job.id.startswith("contract:")
    }
    midnight = datetime(2027, 12, 1, 0, 0, tzinfo=SHANGHAI)
    assert runs[f"expire:{fixed.contract_no}"] == midnight and runs[f"auto_extend:{yearly.contract_no}"] == midnight
    assert runs[f"renewal_notice:{yearly.contract_no}"].astimezone(SHANGHAI).hour == 9


def test_the_expiry_takes_effect_at_midnight_and_its_notices_wait_for_nine(app: Flask, client: FlaskClient, staff: dict) -> None:
    """Found by an exploratory test: the expiry job runs at 00:00 (on purpose), and its SMS went
    to the customer's mobile at midnight. The notices wait until 09:00 Beijing that day, as the
    renewal notice's do; so does a renewal notice whose job ran late in the night after downtime."""
    from backoffice.clock import set_clock
    from backoffice.models import Message
    from backoffice.services.dispatcher import notification_sender
    from backoffice.services.notifications import deliver_pending

    def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
        moment = datetime(2027, 12, day, hour, minute, tzinfo=SHANGHAI)
        set_clock(lambda: moment.astimezone(UTC))
        return moment

    def deliver() -> dict[str, int]:
        return deliver_pending(db.session, jobs.mail_settings(app), send_sms=notification_sender(app.config))

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    yearly = make_contract(app, "sms_business_service", customer__name="乙公司", term_start="2027-01-01", term_end="2027-12-31").contract
    reachable(contract.account)
    pay_what_is_owed(app, contract.account, "P1")
    deliver()  # what the payment and the signing sent, out of the way
    at(0, 0)
    run_contract_job(db.session, job("expire"))
    db.session.commit()
    assert contract.status == "expired" and contract.account.status == "suspended"  # at midnight, as before
    told = db.session.scalars(sa.select(Notification).where(Notification.key.like("contract-expired-%"))).all()
    assert {n.channel for n in told} == {"email", "sms"}
    assert {n.next_attempt_at for n in told} == {datetime(2027, 12, 1, 9, 0, tzinfo=SHANGHAI)}
    login(client, "admin", staff["admin"])
    assert client.get("/admin/outbox").get_data(as_text=True).count("2027-12-01 09:00 起") == 2  # the outbox says when
    at(0, 1)
    assert deliver() == {"sent": 0, "written": 0, "retry": 0, "failed": 0}
    at(8, 59)
    assert deliver()["sent"] == 0
    nine = at(9, 0)
    assert deliver() == {"sent": 1, "written": 1, "retry": 0, "failed": 0}
    (sms,) = db.session.scalars(sa.select(Message).where(Message.content.contains("已到期终止")))
    assert sms.send_at == nine and sms.recipient == "13912345678"

    at(2, 30, day=2)  # the scheduler came back at 02:30 and ran the missed renewal notice
    (notice,) = [j for j in yearly.jobs if j.kind == "renewal_notice"]
    run_contract_job(db.session, notice)
    db.session.commit()
    late = db.session.scalars(sa.select(Notification).where(Notification.key.like(f"renewal-notice-{yearly.contract_no}-%"))).all()
    assert late and {n.next_attempt_at for n in late} == {datetime(2027, 12, 2, 9, 0, tzinfo=SHANGHAI)}


def test_notice_hours_keep_the_day_and_move_the_night_to_nine(app: Flask) -> None:
    from backoffice.services.notifications import in_notice_hours

    def beijing(day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2027, 12, day, hour, minute, tzinfo=SHANGHAI)

    assert in_notice_hours(beijing(1, 10)) == beijing(1, 10)
    assert in_notice_hours(beijing(1, 9)) == beijing(1, 9)
    assert in_notice_hours(beijing(1, 0)) == beijing(1, 9)
    assert in_notice_hours(beijing(1, 20, 59)) == beijing(1, 20, 59)
    assert in_notice_hours(beijing(1, 21)) == beijing(2, 9)
    assert in_notice_hours(beijing(31, 23, 30).astimezone(UTC)) == datetime(2028, 1, 1, 9, 0, tzinfo=SHANGHAI)


def unposted() -> int:
    from backoffice.models import LedgerEvent

    return db.session.scalar(sa.select(sa.func.count()).select_from(LedgerEvent).where(LedgerEvent.posted_at.is_(None))) or 0


def test_the_scheduler_posts_pending_book_events_at_its_start_and_every_few_minutes(app: Flask) -> None:
    """Found by a review: an event a money action could not post waited for the next money
    action, `ledger sync` or 00:10; the books stayed behind all day."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from backoffice.services.credit import record_balance_assertions

    make_contract(app, "sms_business_service")
    record_balance_assertions(db.session, date(2026, 11, 22))
    db.session.commit()
    assert unposted() == 1
    jobs._app = app
    try:
        scheduler = jobs.scheduler_for(app, BackgroundScheduler)  # its start-up work, not started
        db.session.expire_all()
        assert unposted() == 0
        (posting,) = [j for j in scheduler.get_jobs() if j.id == "post-pending"]
        assert posting.trigger.interval <= timedelta(minutes=10)
        db.session.rollback()
        record_balance_assertions(db.session, date(2026, 11, 23))
        db.session.commit()
        posting.func()
    finally:
        jobs._app = None
    db.session.expire_all()
    assert unposted() == 0


def test_the_timed_posting_takes_no_lock_when_nothing_is_pending(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """It runs every few minutes all day: nothing pending is one read, not the books' lock."""
    import ledger

    make_contract(app, "sms_business_service")

    def locked(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the books' lock was taken with nothing to post")

    monkeypatch.setattr(ledger.Books, "locked", locked)
    assert jobs.post_pending_now(app) == 0
    monkeypatch.undo()  # (the books are checked after the test)


def test_the_nightly_check_runs_and_says_so_when_posting_failed(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a review: a full disk stopped the job before the check, and no "nightly ledger
    check failed" was logged."""
    import errno

    from backoffice.services import bookkeeping

    make_contract(app, "sms_business_service")

    def full(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bookkeeping, "post_pending", full)
    jobs._app = app
    try:
        jobs.daily_books()  # the day's balance assertion is pending: it could not be posted
    finally:
        jobs._app = None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(m.startswith("nightly posting to the books failed") for m in errors), errors
    assert any(m.startswith("nightly ledger check failed") and "pending_events=1" in m for m in errors), errors
    monkeypatch.undo()
    assert jobs.post_pending_now(app) == 1


# --- renewals on paper (found by an exploratory test: `account resume` after an expiry sent for ever) ---


def test_a_renewal_leaves_an_account_an_administrator_suspended_as_it_is(app: Flask) -> None:
    from backoffice.clock import set_clock
    from backoffice.errors import Conflict
    from backoffice.models import EnterpriseAccount
    from backoffice.services.messaging import SendingForbidden, accept_messages
    from backoffice.services.renewal import renew_contract
    from backoffice.services.sending_settings import set_sending_status

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    account = contract.account
    pay_what_is_owed(app, account, "ADM1")
    set_sending_status(db.session, account.code, suspend=True, reason="投诉调查", actor="staff:admin")
    db.session.commit()
    set_clock(lambda: datetime(2027, 11, 30, 16, 0, tzinfo=UTC))
    run_contract_job(db.session, job("expire"))
    db.session.commit()
    set_clock(lambda: datetime(2028, 6, 1, 2, 0, tzinfo=UTC))
    with pytest.raises(Conflict, match="合同 .* 已到期"):
        set_sending_status(db.session, account.code, suspend=False, reason="调查结束", actor="staff:admin")
    db.session.rollback()
    # An account the old code resumed all the same: intake refuses it, its every contract ended.
    db.session.execute(sa.update(EnterpriseAccount).where(EnterpriseAccount.id == account.id).values(status="active"))
    db.session.commit()
    with pytest.raises(SendingForbidden, match="合同已到期或已终止"):
        accept_messages(db.session, sub_account=account.sub_accounts[0], recipients="13800138000", content="【创联】测试")
    db.session.rollback()
    db.session.execute(sa.update(EnterpriseAccount).where(EnterpriseAccount.id == account.id).values(status="suspended"))
    db.session.commit()
    renewal = renew_contract(db.session, contract, until=date(2029, 5, 31), actor="staff:sales", today=date(2028, 6, 1))
    db.session.commit()
    assert renewal.account_resumed is False and db.session.get(EnterpriseAccount, account.id).status == "suspended"
    set_sending_status(db.session, account.code, suspend=False, reason="调查结束", actor="staff:admin")  # a live contract now
    db.session.commit()
    assert accept_messages(db.session, sub_account=account.sub_accounts[0], recipients="13800138000", content="【创联】测试")
    db.session.commit()


def test_long_term_and_until_used_up_contracts_stay_live_and_are_not_renewed(app: Flask, runner: FlaskCliRunner, staff: dict) -> None:
    """002 and 003 have no fixed end: their accounts send years on, resume as before, and have nothing to renew."""
    from backoffice.clock import set_clock
    from backoffice.models import EnterpriseAccount
    from backoffice.services.messaging import accept_messages
    from backoffice.services.sending_settings import set_sending_status

    for template, content in (("lingxuntong_service", "【学府教育】测试"), ("sms_genie_user", "【创联】测试")):
        contract = make_contract(app, template).contract
        pay_what_is_owed(app, contract.account, f"LIVE-{template}")
        set_clock(lambda: datetime(2031, 6, 1, 2, 0, tzinfo=UTC))
        code = contract.account.code
        set_sending_status(db.session, code, suspend=True, reason="核实投诉", actor="staff:admin")
        set_sending_status(db.session, code, suspend=False, reason="已核实", actor="staff:admin")
        db.session.commit()
        account = db.session.get(EnterpriseAccount, contract.account_id)
        assert account.status == "active"
        result = accept_messages(db.session, sub_account=account.sub_accounts[0], recipients="13800138000", content=content)
        assert result.http_status == 202, (template, result.body)
        db.session.commit()
        refused = runner.invoke(args=["contract", "renew", contract.contract_no, "--until", "2032-01-01", "--by", "sales", "--json"])
        assert refused.exit_code == 1 and "无需续签" in json.loads(refused.output)["error"]["message"], refused.output
        set_clock(lambda: datetime(2026, 11, 23, 2, 0, tzinfo=UTC))


def test_a_yearly_contract_ended_by_an_objection_renews_under_its_own_rule(app: Flask) -> None:
    """004 after an objection recorded late, renewed on paper to the day its cancelled extension
    was for: the yearly extension is planned again, under an id of its own."""
    from backoffice.clock import set_clock
    from backoffice.services.renewal import renew_contract, stop_renewal

    contract = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    set_clock(lambda: datetime(2027, 12, 1, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("auto_extend"))
    stop_renewal(db.session, contract, received_on=date(2027, 10, 20), actor="staff:sales", today=date(2027, 12, 2))
    db.session.commit()
    assert contract.status == "expired"
    renewal = renew_contract(db.session, contract, until=date(2028, 11, 30), actor="staff:sales", today=date(2027, 12, 2))
    db.session.commit()
    assert contract.renewal_rule == "yearly_auto_extend" and contract.status == "renewed"
    assert [(j.kind, j.due_on) for j in renewal.jobs] == [("renewal_notice", date(2028, 10, 16)), ("auto_extend", date(2028, 12, 1))]
    assert renewal.jobs[1].job_id == f"contract:{contract.contract_no}:auto_extend:2028-12-01~2"
    assert jobs.arm_pending(app) == 2


def test_sales_renew_a_contract_on_its_page(app: Flask, client: FlaskClient, staff: dict) -> None:
    from backoffice.clock import set_clock
    from backoffice.models import EnterpriseAccount

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    long_term = make_contract(app, "lingxuntong_service").contract
    number = contract.contract_no
    pay_what_is_owed(app, contract.account, "WEB1")
    set_clock(lambda: datetime(2027, 12, 1, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("expire"))
    db.session.commit()
    login(client, "finance", staff["finance"])
    assert 'id="renew"' not in client.get(f"/sales/contracts/{number}").get_data(as_text=True)
    assert client.post(f"/sales/contracts/{number}/renew", data={"until": "2028-11-30"}).status_code == 403
    client.post("/logout")
    login(client, "sales", staff["sales"])
    page = client.get(f"/sales/contracts/{number}").get_data(as_text=True)
    assert 'id="renew"' in page and 'name="csrf_token"' in page.split('id="renew"')[1]
    # The browser's minimum is the first day the server takes: after the old end and after today.
    assert 'name="until" required min="2027-12-02"' in page
    assert 'id="renew"' not in client.get(f"/sales/contracts/{long_term.contract_no}").get_data(as_text=True)
    for bad in ("", "2027-11-30", "2040-01-01"):
        refused = client.post(f"/sales/contracts/{number}/renew", data={"until": bad})
        assert refused.status_code == 422 and "到期日" in refused.get_data(as_text=True), bad
    renewed_notices = sa.select(Notification).where(Notification.key.like("contract-renewed-%"))
    assert db.session.scalars(renewed_notices).all() == []  # a refused renewal tells the customer nothing
    done = client.post(f"/sales/contracts/{number}/renew", data={"until": "2028-11-30", "reason": "续签协议已签署"})
    assert done.status_code == 302
    page = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "已续签至 2028-11-30" in page and "已恢复发送" in page and "已续签" in page
    # 000's sample gives a landline only: the notice is kept for staff, and sales is told to call.
    assert "客户没有电子邮箱或手机号码，未能通知续签，请人工通知" in page
    assert {(n.channel, n.status) for n in db.session.scalars(renewed_notices)} == {("email", "failed"), ("sms", "failed")}
    db.session.expire_all()
    assert contract.status == "renewed" and db.session.get(EnterpriseAccount, contract.account_id).status == "active"
    assert db.session.scalar(sa.select(AuditEntry.actor).where(AuditEntry.action == "renew_contract")) == "staff:sales"


def test_an_old_objection_entered_after_a_paper_renewal_leaves_the_renewal_standing(app: Flask, runner: FlaskCliRunner) -> None:
    """Found by a review: 004 extended on 2027-12-01, renewed on paper on 2028-01-10 to
    2029-11-30; a letter received 2027-10-20 (in time for the extension), entered on 2028-02-01,
    undid the extension and the renewal with it: the contract expired at 2027-11-30, the account
    stopped, the customer was told the contract had ended. The renewal is the later agreement:
    the objection is refused, saying which renewal. So is the same letter entered again after an
    objection undid the extension and a renewal followed (the undone extension counted again)."""
    from backoffice.clock import set_clock
    from backoffice.errors import Conflict
    from backoffice.models import EnterpriseAccount
    from backoffice.services.renewal import renew_contract, stop_renewal

    contract = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    reachable(contract.account)
    pay_what_is_owed(app, contract.account, "REN1")
    set_clock(lambda: datetime(2027, 12, 1, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("auto_extend"))
    db.session.commit()
    set_clock(lambda: datetime(2028, 1, 10, 2, 0, tzinfo=UTC))
    renew_contract(db.session, contract, until=date(2029, 11, 30), actor="staff:sales", today=date(2028, 1, 10))
    db.session.commit()
    set_clock(lambda: datetime(2028, 2, 1, 2, 0, tzinfo=UTC))
    with pytest.raises(Conflict) as refused:
        stop_renewal(db.session, contract, received_on=date(2027, 10, 20), actor="staff:sales", today=date(2028, 2, 1))
    assert "已于 2028-01-10 续签至 2029-11-30" in refused.value.message and "以续签为准" in refused.value.message
    db.session.rollback()
    done = runner.invoke(args=["contract", "stop-renewal", contract.contract_no, "--received-on", "2027-10-20", "--json"])
    assert done.exit_code == 1 and "续签至 2029-11-30" in json.loads(done.output)["error"]["message"], done.output
    db.session.expire_all()
    assert (contract.status, contract.term_end, contract.renewal_rule) == ("renewed", date(2029, 11, 30), "yearly_auto_extend")
    assert db.session.get(EnterpriseAccount, contract.account_id).status == "active"
    assert not db.session.scalar(sa.select(Notification).where(Notification.key.like("contract-expired-%")))
    assert {j.kind for j in contract.jobs if j.done_at is None} == {"renewal_notice", "auto_extend"}  # the renewed term's
    # A letter received after the renewal is about the renewed term, as any objection is.
    expire = stop_renewal(db.session, contract, received_on=date(2028, 1, 20), actor="staff:sales", today=date(2028, 2, 1))
    assert expire.due_on == date(2029, 12, 1) and expire.done_at is None and contract.term_end == date(2029, 11, 30)
    db.session.rollback()

    # Undone by the letter, renewed, then the same letter entered again.
    set_clock(lambda: datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    other = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    set_clock(lambda: datetime(2027, 12, 1, 1, 0, tzinfo=UTC))
    (extension,) = [j for j in other.jobs if j.kind == "auto_extend"]
    run_contract_job(db.session, extension)
    stop_renewal(db.session, other, received_on=date(2027, 10, 20), actor="staff:sales", today=date(2027, 12, 2))
    db.session.commit()
    assert (other.status, other.term_end) == ("expired", date(2027, 11, 30)) and "已撤销" in (extension.outcome or "")
    set_clock(lambda: datetime(2027, 12, 3, 2, 0, tzinfo=UTC))
    renew_contract(db.session, other, until=date(2028, 11, 30), actor="staff:sales", today=date(2027, 12, 3))
    db.session.commit()
    with pytest.raises(Conflict, match="已于 2027-12-03 续签至 2028-11-30"):
        stop_renewal(db.session, other, received_on=date(2027, 10, 20), actor="staff:sales", today=date(2027, 12, 5))
    db.session.rollback()
    assert (other.status, other.term_end) == ("renewed", date(2028, 11, 30))


def one_waits_for_the_other(app: Flask, first: Any, second: Any) -> None:
    """`first(session)` in a session of its own, its transaction held open (flushed, not
    committed) while `second()` runs in a thread of its own (an app context, its own db.session);
    then the first commits. The second must have been waiting for it; neither may fail."""
    from sqlalchemy.orm import Session

    errors: list[BaseException] = []

    def run() -> None:
        with app.app_context():
            try:
                second()
            except BaseException as error:  # noqa: BLE001 - reported to the test
                errors.append(error)

    holder = Session(db.engine)
    try:
        first(holder)
        holder.flush()
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waits for the first's transaction
        holder.commit()
    finally:
        holder.close()
    thread.join(30)
    assert not thread.is_alive() and errors == []
    db.session.expire_all()


@pytest.mark.parametrize("first", ["renewal", "expiry"])
def test_a_renewal_and_the_expiry_at_the_same_moment_leave_one_consistent_outcome(app: Flask, first: str) -> None:
    """Found by a review: the expiry job read its job and contract without a lock; a renewal that
    committed after that read was overwritten: a renewed contract marked expired, its account
    suspended. Both now lock the contract first and read it again. One side holds its
    transaction open while the other runs at 00:00, the expiry's moment; the second waits, then
    sees the first's work: the expiry ran first and the renewal resumed the account, or the
    renewal first and the expiry is skipped."""
    from backoffice.clock import set_clock
    from backoffice.models import Contract, EnterpriseAccount
    from backoffice.services.contracts import get_contract
    from backoffice.services.renewal import renew_contract

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    number, contract_id, account_id = contract.contract_no, contract.id, contract.account_id
    reachable(contract.account)
    pay_what_is_owed(app, contract.account, "RACE1")
    expire_id = job("expire").id
    db.session.commit()
    set_clock(lambda: datetime(2027, 11, 30, 16, 0, tzinfo=UTC))  # 2027-12-01 00:00 in Beijing
    until, today = date(2028, 11, 30), date(2027, 12, 1)

    def renewal_now() -> None:
        renew_contract(db.session, get_contract(db.session, number), until=until, actor="staff:sales", today=today)
        db.session.commit()

    if first == "renewal":
        one_waits_for_the_other(
            app,
            lambda s: renew_contract(s, s.get(Contract, contract_id), until=until, actor="staff:sales", today=today),
            lambda: jobs.contract_job(expire_id),  # the scheduler's entry point
        )
    else:
        one_waits_for_the_other(app, lambda s: run_contract_job(s, s.get(ContractJob, expire_id)), renewal_now)
    contract = db.session.get(Contract, contract_id)
    assert (contract.status, contract.term_end) == ("renewed", until)
    assert db.session.get(EnterpriseAccount, account_id).status == "active"
    expire = db.session.get(ContractJob, expire_id)
    (renewed,) = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "renew_contract"))
    expiries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "expire")).all()
    told = db.session.scalars(sa.select(Notification.key).where(Notification.key.like(f"contract-expired-{number}-%"))).all()
    if first == "renewal":
        assert expire.outcome == f"合同已续签至 {until}，原合同期的任务取消" and expiries == [] and told == []
        assert renewed.detail["previous_status"] == "issued" and renewed.detail["account_resumed"] is False
    else:
        assert (expire.outcome or "").startswith("合同到期终止，账户已暂停发送") and len(expiries) == 1 and told
        assert renewed.detail["previous_status"] == "expired" and renewed.detail["account_resumed"] is True
    pending = {(j.kind, j.due_on) for j in contract.jobs if j.done_at is None}
    assert pending == {("renewal_notice", date(2028, 10, 31)), ("expire", date(2028, 12, 1))}


@pytest.mark.parametrize("first", ["objection", "extension"])
def test_an_objection_and_the_yearly_extension_at_the_same_moment_leave_one_consistent_outcome(app: Flask, first: str) -> None:
    """As a renewal and the expiry: a written objection received in time, entered at 00:00 on
    the day the extension runs. The objection first: the extension, cancelled, is skipped; the
    extension first: the objection undoes it. Either way the contract ends with its first term."""
    from backoffice.clock import set_clock
    from backoffice.models import Contract
    from backoffice.services.contracts import get_contract
    from backoffice.services.renewal import stop_renewal

    contract = make_contract(app, "sms_business_service", term_start="2026-12-01", term_end="2027-11-30").contract
    number, contract_id = contract.contract_no, contract.id
    extend_id = job("auto_extend").id
    db.session.commit()
    set_clock(lambda: datetime(2027, 11, 30, 16, 0, tzinfo=UTC))  # 2027-12-01 00:00 in Beijing
    received_on, today = date(2027, 10, 20), date(2027, 12, 1)

    def objection_now() -> None:
        stop_renewal(db.session, get_contract(db.session, number), received_on=received_on, actor="staff:sales", today=today)
        db.session.commit()

    if first == "objection":
        one_waits_for_the_other(
            app,
            lambda s: stop_renewal(s, s.get(Contract, contract_id), received_on=received_on, actor="staff:sales", today=today),
            lambda: jobs.contract_job(extend_id),
        )
    else:
        one_waits_for_the_other(app, lambda s: run_contract_job(s, s.get(ContractJob, extend_id)), objection_now)
    contract = db.session.get(Contract, contract_id)
    assert (contract.term_end, contract.renewal_rule) == (date(2027, 11, 30), "fixed_term")
    extension = db.session.get(ContractJob, extend_id)
    if first == "objection":
        assert extension.outcome == f"客户于 {received_on} 书面异议，不再顺延" and contract.status == "issued"
        pending = [(j.kind, j.due_on) for j in contract.jobs if j.done_at is None and j.kind != "renewal_notice"]  # (never run here)
        assert pending == [("expire", date(2027, 12, 1))]
    else:
        assert "已撤销" in (extension.outcome or "") and contract.status == "expired"
        assert [j for j in contract.jobs if j.done_at is None] == []


def test_a_closed_accounts_contract_is_not_renewed(app: Flask, client: FlaskClient, staff: dict) -> None:
    """Found by a review: a renewal was offered and recorded for the contract of a closed account
    (its balance forfeited, nothing can send), and said nothing of it."""
    from backoffice.clock import set_clock
    from backoffice.errors import Conflict
    from backoffice.services.renewal import renew_contract

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    set_clock(lambda: datetime(2027, 12, 1, 1, 0, tzinfo=UTC))
    run_contract_job(db.session, job("expire"))
    contract.account.status = "closed"
    db.session.commit()
    with pytest.raises(Conflict, match="已关闭"):
        renew_contract(db.session, contract, until=date(2028, 11, 30), actor="staff:sales", today=date(2027, 12, 1))
    db.session.rollback()
    login(client, "sales", staff["sales"])
    assert 'id="renew"' not in client.get(f"/sales/contracts/{contract.contract_no}").get_data(as_text=True)
    refused = client.post(f"/sales/contracts/{contract.contract_no}/renew", data={"until": "2028-11-30"})
    assert refused.status_code == 422 and "已关闭" in refused.get_data(as_text=True)
    db.session.expire_all()
    assert contract.status == "expired" and contract.term_end == date(2027, 11, 30)


def test_a_renewal_withdraws_the_old_terms_notices_still_waiting(app: Flask, client: FlaskClient, staff: dict) -> None:
    """Found by an exploratory test: the expiry at 00:00 held its notice until 09:00; sales
    renewed the contract at 06:28; at 09:00 the customer was still told the contract had ended
    and sending was stopped, and the outbox's 重发 of such a notice sent it again. A renewal
    withdraws the old term's notices not sent yet; they cannot be resent. A resend waits for
    09:00 as every notice does."""
    from backoffice.clock import set_clock
    from backoffice.errors import Conflict
    from backoffice.services.dispatcher import notification_sender
    from backoffice.services.notifications import deliver_pending, requeue
    from backoffice.services.renewal import renew_contract

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    reachable(contract.account)
    pay_what_is_owed(app, contract.account, "WD1")
    deliver_pending(db.session, jobs.mail_settings(app), send_sms=notification_sender(app.config))  # what payment sent
    set_clock(lambda: datetime(2027, 11, 30, 16, 0, tzinfo=UTC))  # 00:00 Beijing, 1 December
    run_contract_job(db.session, job("expire"))
    db.session.commit()
    held = db.session.scalars(sa.select(Notification).where(Notification.key.like(f"contract-expired-{contract.contract_no}-%"))).all()
    assert len(held) == 2 and {n.status for n in held} == {"pending"}
    set_clock(lambda: datetime(2027, 11, 30, 22, 28, tzinfo=UTC))  # 06:28
    renew_contract(db.session, contract, until=date(2028, 11, 30), actor="staff:sales", today=date(2027, 12, 1))
    db.session.commit()
    set_clock(lambda: datetime(2027, 12, 1, 1, 1, tzinfo=UTC))  # 09:01
    went = deliver_pending(db.session, jobs.mail_settings(app), send_sms=notification_sender(app.config))
    assert went == {"sent": 1, "written": 1, "retry": 0, "failed": 0}  # the renewal's own notice only
    for note in held:
        db.session.refresh(note)
        assert note.status == "failed" and note.last_error.startswith("已撤回，不再发送：合同已于 2027-12-01 续签至 2028-11-30")
        with pytest.raises(Conflict, match="不能重发"):
            requeue(db.session, note.id)
    login(client, "admin", staff["admin"])
    page = client.get("/admin/outbox").get_data(as_text=True)
    assert "已撤回" in page and page.count("重发</button>") == 0
    assert client.post(f"/admin/outbox/{held[0].id}/retry").status_code in (302, 409)
    db.session.refresh(held[0])
    assert held[0].status == "failed"


def test_a_paid_contract_stays_in_force_and_the_register_shows_its_account_performing_it(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, staff: dict
) -> None:
    """Found by a review: the model had a contract status `active` (履行中) for a paid contract,
    which nothing set: a paid contract showed 已签署（生效）, and the register nowhere said whether
    it was paid. The contract's status says where it stands as an agreement (in force once both
    sides signed: `issued`, as `account show --json` has always given it); whether it is being
    performed is its account's status (待付款开通, then 正常), now beside the account on the register."""
    from backoffice.models.contracts import CONTRACT_STATUSES

    contract = make_contract(app, "sms_business_service").contract
    number, code = contract.contract_no, contract.account.code
    login(client, "sales", staff["sales"])

    def register_row() -> str:
        page = client.get("/sales/").get_data(as_text=True)
        return next(row for row in page.split("<tr>") if f">{number}</a>" in row)

    assert f"<td>{code}（待付款开通）</td>" in register_row() and "<td>已签署（生效）</td>" in register_row()
    pay_what_is_owed(app, contract.account, "PAID1")
    assert f"<td>{code}（正常）</td>" in register_row() and "<td>已签署（生效）</td>" in register_row()
    shown = json.loads(runner.invoke(args=["account", "show", code, "--json"]).output)
    assert (shown["status"], shown["contract_status"]) == ("active", "issued")
    assert set(CONTRACT_STATUSES) == {"issued", "renewed", "expired", "terminated"}  # no 履行中: that is the account's 正常


def test_a_resend_at_night_waits_for_nine(app: Flask) -> None:
    """Found by an exploratory test: 重发 at 06:21 Beijing texted the customer at once."""
    from backoffice.clock import set_clock
    from backoffice.services.notifications import requeue

    account = make_contract(app, "sms_business_service").contract.account  # its invoice's notices
    note = db.session.scalars(sa.select(Notification).where(Notification.account_id == account.id)).first()
    assert note is not None
    note.status = "failed"
    db.session.commit()
    set_clock(lambda: datetime(2026, 11, 23, 22, 21, tzinfo=UTC))  # 06:21 on the 24th
    requeue(db.session, note.id)
    db.session.commit()
    assert note.status == "pending" and note.next_attempt_at == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # 09:00


def test_the_admin_page_of_an_account_whose_contract_ended_points_to_the_renewal(app: Flask, client: FlaskClient, staff: dict) -> None:
    """Found by an exploratory test: the page still offered 恢复发送 ("如合同已续签…恢复后账户可以再次
    发送") for an account whose every contract had ended, which only led to the refusal."""
    from backoffice.clock import set_clock

    contract = make_contract(app, "enterprise_sms_center", term_start="2026-12-01", term_years=1, term_end=None).contract
    other = make_contract(app, "enterprise_sms_center", customer__name="仍在履行有限公司", term_years=3, term_end=None).contract
    pay_what_is_owed(app, contract.account, "ADM1")
    set_clock(lambda: datetime(2027, 12, 1, 1, 0, tzinfo=UTC))
    (expire,) = [j for j in contract.jobs if j.kind == "expire"]
    run_contract_job(db.session, expire)
    db.session.commit()
    login(client, "admin", staff["admin"])
    page = client.get(f"/admin/accounts/{contract.account.code}").get_data(as_text=True)
    assert 'id="status-ended"' in page and 'id="status-form"' not in page
    assert f'合同 <a href="/sales/contracts/{contract.contract_no}">{contract.contract_no}</a> 已到期（最后一天 2027-11-30）' in page
    other.account.status = "suspended"  # an administrator's suspension of a live account: the form stays
    db.session.commit()
    page = client.get(f"/admin/accounts/{other.account.code}").get_data(as_text=True)
    assert 'id="status-form"' in page and 'id="status-ended"' not in page
