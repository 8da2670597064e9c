"""Documents (contracts, invoices, vouchers) and the outbox when the disk misbehaves: a rename
that fails after the commit, a process that dies in between, a full disk, a damaged file."""

from __future__ import annotations

import email
import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from backoffice.extensions import db
from backoffice.models import Contract, Invoice, LedgerEvent, Notification, Receipt
from tests.conftest import FIXED_NOW, login, make_contract

ROOT = Path(__file__).resolve().parents[2]


def recorded_receipt(app: Flask, runner: FlaskCliRunner, bank_ref: str = "CMB-DISK-1") -> int:
    """A contract whose customer has an e-mail address, and its first payment recorded."""
    issued = make_contract(app, "enterprise_sms_center")
    account = issued.contract.account
    account.contact_email = "finance@example.cn"
    db.session.commit()
    amount = f"{issued.contract.initial_amount:.2f}"
    result = runner.invoke(
        args=["finance", "receipt", "--account", account.code, "--amount", amount, "--bank-ref", bank_ref, "--date", "2026-11-20", "--json"]
    )
    assert result.exit_code == 0, result.output
    return int(json.loads(result.stdout)["id"])


def pending_files(app: Flask) -> list[str]:
    docs = Path(app.config["DOCUMENTS_PATH"])
    return sorted(p.relative_to(docs).as_posix() for p in docs.rglob(".*.pending"))


def unposted() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(LedgerEvent).where(LedgerEvent.posted_at.is_(None))) or 0


def failing_renames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Moving a staged file into place fails (an I/O error); every other rename works."""
    real = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if str(src).endswith(".pending"):
            raise OSError(errno.EIO, "Input/output error", str(src))
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


# --- a committed file that cannot be moved into place ------------------------------------------


def test_a_rename_failing_after_the_commit_still_answers_posts_the_books_and_warns(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: `finance confirm` ended in exit 1 and "InvalidRequestError: This
    session is in 'committed' state" though the confirmation was committed, and its ledger event
    was not posted (the catch-up never ran). Now it answers, posts, and names the file left aside."""
    receipt_id = recorded_receipt(app, runner)
    failing_renames(monkeypatch)
    result = runner.invoke(args=["finance", "confirm", str(receipt_id), "--json"])
    assert result.exit_code == 0, result.output
    confirmed = json.loads(result.stdout)
    assert confirmed["credited"] and confirmed["invoice_number"] == "FP-2026-000001"
    assert "文件暂未就位" in result.stderr and "FP-2026-000001.pdf" in result.stderr
    assert unposted() == 0  # the catch-up ran
    assert pending_files(app) == ["invoices/2026/.FP-2026-000001.pdf.pending"]
    assert db.session.get(Receipt, receipt_id).status == "confirmed"


def test_a_staged_file_removed_before_its_commit_is_said_lost_not_left_for_the_recovery(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: a transaction open longer than the recovery's hour (or a file server's
    clock ahead) had its `.pending` file removed as stale; the commit then warned that the
    scheduler would put the file in place, though nothing was left to put there."""
    receipt_id = recorded_receipt(app, runner)
    real = os.replace

    def removed_meanwhile(src: Any, dst: Any, **kwargs: Any) -> None:
        if str(src).endswith(".pending"):
            os.unlink(src)  # the recovery in another process took it for a dead transaction's
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", removed_meanwhile)
    result = runner.invoke(args=["finance", "confirm", str(receipt_id), "--json"])
    assert result.exit_code == 0, result.output
    assert "文件丢失" in result.stderr and "FP-2026-000001.pdf" in result.stderr and "自动恢复" not in result.stderr


def test_a_rename_failing_after_the_commit_is_not_an_error_page_on_the_web(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, staff: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web showed 出错了（500） while the receipt was confirmed."""
    receipt_id = recorded_receipt(app, runner)
    login(client, "finance", staff["finance"])
    failing_renames(monkeypatch)
    response = client.post(f"/finance/receipts/{receipt_id}/confirm", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "已确认入账" in page and "文件暂未就位" in page
    db.session.expire_all()
    assert db.session.get(Receipt, receipt_id).status == "confirmed" and unposted() == 0


def test_the_folder_is_synced_after_the_committed_files_are_moved_into_it(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without it a power cut after the commit could undo the rename: a paid invoice, no PDF."""
    receipt_id = recorded_receipt(app, runner)
    real_fsync, real_replace, events = os.fsync, os.replace, []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        events.append(("replace", str(Path(dst).parent)))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert runner.invoke(args=["finance", "confirm", str(receipt_id), "--json"]).exit_code == 0
    folder = str(Path(app.config["DOCUMENTS_PATH"]).resolve() / "invoices" / "2026")
    assert ("replace", folder) in events
    assert ("fsync", folder) in events[events.index(("replace", folder)) :]


# --- a process that dies between the commit and the rename -------------------------------------

DIE_AT_THE_RENAME = """
import os, sys
real = os.replace
def replace(src, dst, **kwargs):
    if str(src).endswith(".pending"):
        os._exit(9)  # committed, not yet moved into place
    real(src, dst, **kwargs)
os.replace = replace
from datetime import datetime
from backoffice.clock import set_clock
set_clock(lambda: datetime.fromisoformat(os.environ["TEST_NOW"]))  # the test's fixed clock
from flask.cli import main
sys.argv = ["flask", "--app", "wsgi", *sys.argv[1:]]
main()
"""


def crash_at_the_rename(app: Flask, *args: str) -> None:
    """Run a command in a process of its own that dies right after its commit."""
    env = {
        **os.environ,
        "BACKOFFICE_INSTANCE_PATH": str(app.config["INSTANCE_PATH"]),
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "SECRET_KEY": "x",
        "TEST_NOW": FIXED_NOW.isoformat(),
    }
    done = subprocess.run([sys.executable, "-c", DIE_AT_THE_RENAME, *args], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 9, done.stderr.decode()
    db.session.expire_all()


def test_a_paid_invoice_whose_process_died_before_the_rename_still_reaches_the_customer(app: Flask, runner: FlaskCliRunner) -> None:
    """Found by a review: the invoice paid in the database, its PDF never moved into place; the
    customer's e-mail retried with FileNotFoundError until it was marked failed. The sending
    puts the committed file in place (its content the one recorded) and attaches it."""
    receipt_id = recorded_receipt(app, runner)
    crash_at_the_rename(app, "finance", "confirm", str(receipt_id), "--json")
    invoice = db.session.scalar(sa.select(Invoice).where(Invoice.receipt_id == receipt_id))
    pdf = Path(app.config["DOCUMENTS_PATH"]) / invoice.pdf_file
    assert invoice.status == "paid" and not pdf.exists() and pending_files(app) == [f"invoices/2026/.{pdf.name}.pending"]

    result = runner.invoke(args=["finance", "notify", "--json"])
    assert json.loads(result.stdout)["written"] >= 1 and json.loads(result.stdout)["retry"] == 0, result.output
    note = db.session.scalar(sa.select(Notification).where(Notification.key == f"receipt-confirmed-{receipt_id}:email"))
    assert note.status == "written"
    message = email.message_from_bytes((Path(app.config["OUTBOX_PATH"]) / note.delivered_to).read_bytes())
    (attached,) = [part for part in message.walk() if part.get_filename() == pdf.name]
    assert hashlib.sha256(attached.get_payload(decode=True)).hexdigest() == invoice.pdf_sha256
    assert hashlib.sha256(pdf.read_bytes()).hexdigest() == invoice.pdf_sha256 and pending_files(app) == []
    assert runner.invoke(args=["ledger", "sync"]).exit_code == 0  # (its catch-up died with it)


def test_the_scheduler_puts_committed_documents_in_place_when_it_starts(app: Flask, runner: FlaskCliRunner) -> None:
    """A contract issued by a process that died after its commit: its PDF and DOCX were 404s
    for ever. The scheduler's start (and the nightly job) puts them in place."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from backoffice import jobs
    from tests.conftest import sample, write_json

    data = write_json(Path(app.config["INSTANCE_PATH"]) / "c.json", sample("sms_business_service"))
    crash_at_the_rename(app, "contract", "issue", "sms_business_service", "--data", str(data), "--json")
    contract = db.session.scalar(sa.select(Contract))
    docs = Path(app.config["DOCUMENTS_PATH"])
    invoice = db.session.scalar(sa.select(Invoice))  # (invoiced at signing)
    assert not (docs / contract.pdf_file).exists() and len(pending_files(app)) == 3
    try:
        jobs.scheduler_for(app, BackgroundScheduler)  # its start-up work, the scheduler not started
    finally:
        jobs._app = None
    assert hashlib.sha256((docs / contract.pdf_file).read_bytes()).hexdigest() == contract.pdf_sha256
    assert hashlib.sha256((docs / contract.docx_file).read_bytes()).hexdigest() == contract.docx_sha256
    assert hashlib.sha256((docs / invoice.pdf_file).read_bytes()).hexdigest() == invoice.pdf_sha256
    assert pending_files(app) == []
    assert runner.invoke(args=["ledger", "sync"]).exit_code == 0


def test_an_administrator_puts_committed_documents_in_place_from_the_command_line(app: Flask, runner: FlaskCliRunner) -> None:
    """What the scheduler does at its start, by hand (noticed by a review: no command did it),
    and a file it cannot vouch for is named, with exit 1."""
    from tests.conftest import sample, write_json

    data = write_json(Path(app.config["INSTANCE_PATH"]) / "c.json", sample("sms_business_service"))
    crash_at_the_rename(app, "contract", "issue", "sms_business_service", "--data", str(data), "--json")
    contract = db.session.scalar(sa.select(Contract))
    docs = Path(app.config["DOCUMENTS_PATH"])
    docx = docs / contract.docx_file
    (docx.with_name(f".{docx.name}.pending")).write_bytes(b"PK not the contract")
    result = runner.invoke(args=["documents", "recover", "--json"])
    assert result.exit_code == 1, result.output
    done = json.loads(result.stdout)
    assert sorted(done["promoted"]) == sorted([contract.pdf_file, db.session.scalar(sa.select(Invoice)).pdf_file])
    assert len(done["problems"]) == 1 and contract.docx_file in done["problems"][0] and "SHA-256 不符" in done["problems"][0]
    assert hashlib.sha256((docs / contract.pdf_file).read_bytes()).hexdigest() == contract.pdf_sha256
    again = runner.invoke(args=["documents", "recover"])
    assert again.exit_code == 1 and again.stdout.startswith("放回 0 个已提交的文件") and "问题：" in again.stdout


def test_the_nightly_job_keeps_what_it_cannot_vouch_for_and_removes_stale_leftovers(
    app: Flask, runner: FlaskCliRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """A `.pending` file whose content is not the one recorded is left for a person (and said);
    one no committed row names is removed once it is too old to belong to a transaction in
    progress, kept while it may."""
    from backoffice import jobs

    issued = make_contract(app, "sms_business_service")
    docs = Path(app.config["DOCUMENTS_PATH"])
    pdf = docs / issued.contract.pdf_file
    pdf.unlink()
    damaged = pdf.with_name(f".{pdf.name}.pending")
    damaged.write_bytes(b"%PDF-1.7 not the signed contract")
    stale, young = docs / "invoices" / "2026" / ".FP-2026-999998.pdf.pending", docs / "invoices" / "2026" / ".FP-2026-999999.pdf.pending"
    stale.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (stale, young):
        leftover.write_bytes(b"%PDF never committed")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    jobs._app = app
    try:
        jobs.daily_books()
    finally:
        jobs._app = None
    assert not stale.exists() and young.exists()
    assert damaged.exists() and not pdf.exists()
    assert any(r.levelname == "ERROR" and "does not match the SHA-256" in r.getMessage() for r in caplog.records)


def test_a_document_another_process_recovers_at_the_same_moment_is_no_problem(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler's recovery and a download (or a late rename of the committing process) may
    both move the same file: the one that finds it gone finds it in place, and says nothing."""
    from backoffice.services.staged_files import recover_staged_files

    issued = make_contract(app, "sms_business_service")
    docs = Path(app.config["DOCUMENTS_PATH"])
    pdf = docs / issued.contract.pdf_file
    pdf.rename(pdf.with_name(f".{pdf.name}.pending"))
    real = os.replace

    def beaten_to_it(src: Any, dst: Any, **kwargs: Any) -> None:
        real(src, dst, **kwargs)  # the other process
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(src))

    monkeypatch.setattr(os, "replace", beaten_to_it)
    recovery = recover_staged_files(db.session, docs)
    db.session.rollback()
    monkeypatch.undo()  # (the books are checked after the test)
    assert recovery.problems == [] and pdf.is_file() and pending_files(app) == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# --- the disk full, read-only or not writable ----------------------------------------------------


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staging a document finds the disk full (the data cannot be made durable)."""
    from backoffice.services import staged_files

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(staged_files.os, "fsync", fsync)


def test_a_full_disk_during_a_confirmation_is_a_refusal_on_the_command_line_not_a_traceback(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the OSError ended in a traceback, even with --json."""
    receipt_id = recorded_receipt(app, runner)
    full_disk(monkeypatch)
    result = runner.invoke(args=["finance", "confirm", str(receipt_id), "--json"])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "storage" and "磁盘空间不足" in error["message"] and "未做任何更改" in error["message"]
    assert ".FP-2026-000001.pdf.pending" in error["message"]  # where
    plain = runner.invoke(args=["finance", "confirm", str(receipt_id)])
    assert plain.exit_code == 1 and plain.stderr.startswith("错误：磁盘空间不足") and "Traceback" not in plain.output
    db.session.expire_all()
    assert db.session.get(Receipt, receipt_id).status == "pending" and pending_files(app) == []


def test_books_that_cannot_be_written_are_a_refusal_of_ledger_sync(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backoffice.services.credit import record_balance_assertions

    make_contract(app, "sms_business_service")
    record_balance_assertions(db.session, FIXED_NOW.date())  # an event to post
    db.session.commit()
    real = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(app.config["LEDGER_PATH"]) in Path(dst).parents:
            raise OSError(errno.EROFS, "Read-only file system", str(dst))
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    result = runner.invoke(args=["ledger", "sync"])
    assert result.exit_code == 1 and result.stderr.startswith("错误："), result.output
    assert not isinstance(result.exception, OSError) and "Traceback" not in result.output
    monkeypatch.undo()
    assert runner.invoke(args=["ledger", "sync"]).exit_code == 0


def test_a_refusal_after_a_commit_does_not_say_nothing_was_changed(app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    from backoffice.cli import refusals
    from backoffice.models import WorkingDayOverride

    with pytest.raises(SystemExit), refusals(True):
        db.session.add(WorkingDayOverride(day=FIXED_NOW.date(), is_working_day=True, note=""))
        db.session.commit()
        raise OSError(errno.EDQUOT, "Disk quota exceeded", "/srv/backoffice/outbox/x.eml")
    message = json.loads(capsys.readouterr().out)["error"]["message"]
    assert message.startswith("磁盘配额已用完（/srv/backoffice/outbox/x.eml）") and "未做任何更改" not in message and "已保存" in message


def test_a_full_disk_during_a_confirmation_is_a_503_page_saying_nothing_changed(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, staff: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was 500 "系统内部错误…" though nothing had changed."""
    receipt_id = recorded_receipt(app, runner)
    login(client, "finance", staff["finance"])
    full_disk(monkeypatch)
    response = client.post(f"/finance/receipts/{receipt_id}/confirm")
    page = response.get_data(as_text=True)
    assert response.status_code == 503 and "磁盘空间不足" in page and "未做任何更改" in page, page
    api = client.post(f"/finance/receipts/{receipt_id}/confirm", headers={"Accept": "application/json"})
    assert api.status_code == 503 and api.json["error"]["code"] == "storage"
    db.session.expire_all()
    assert db.session.get(Receipt, receipt_id).status == "pending"


def test_the_databases_own_disk_full_is_a_refusal_naming_it_on_the_web_and_the_command_line(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, staff: dict[str, str]
) -> None:
    """Noticed by the review fixer: SQLite's "database or disk is full" (PostgreSQL's disk_full)
    was a traceback on the command line and "数据库暂时无法使用" on the web, which tells the
    administrator nothing of what to mend."""
    from sqlalchemy import event

    receipt_id = recorded_receipt(app, runner)
    login(client, "finance", staff["finance"])
    error = db.engine.dialect.loaded_dbapi.OperationalError

    def full(cursor: object, statement: str, parameters: object, context: object) -> None:
        if statement.startswith(("UPDATE receipts", "UPDATE staff_users SET password_hash")):
            raise error("database or disk is full")

    event.listen(db.engine, "do_execute", full)
    try:
        page = client.post(f"/finance/receipts/{receipt_id}/confirm", follow_redirects=True)
        password = client.post("/password", data={"current": staff["finance"], "new": "Brand-new-pass-9", "confirm": "Brand-new-pass-9"})
        result = runner.invoke(args=["finance", "confirm", str(receipt_id), "--json"])
    finally:
        event.remove(db.engine, "do_execute", full)
    assert "磁盘空间不足，数据库无法写入，未做任何更改" in page.get_data(as_text=True)  # flashed on the receipt's page
    assert password.status_code == 503 and "磁盘空间不足，数据库无法写入" in password.get_data(as_text=True)  # any other page
    assert result.exit_code == 1 and not isinstance(result.exception, sa.exc.OperationalError), result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "storage" and error["message"] == "磁盘空间不足，数据库无法写入，未做任何更改：请管理员清理磁盘后重试"
    db.session.expire_all()
    assert db.session.get(Receipt, receipt_id).status == "pending"


# --- the outbox ------------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_an_outbox_write_that_fails_leaves_no_file_and_is_retried(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Found by a review: the e-mail was not synced (a power cut could lose one marked written),
    and each retry on a full disk left another half-written temporary file in the outbox."""
    from backoffice.clock import set_clock
    from backoffice.services.notifications import RETRY_DELAYS

    make_contract(app, "sms_business_service")  # its invoice, by e-mail
    outbox = Path(app.config["OUTBOX_PATH"]).resolve()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        if outbox in Path(os.readlink(f"/proc/self/fd/{fd}")).parents:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if outbox in Path(dst).resolve().parents:
            raise OSError(errno.EIO, "Input/output error", str(src))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, failing, fsync if failing == "fsync" else replace)
    for attempt in range(2):
        set_clock(lambda attempt=attempt: FIXED_NOW + RETRY_DELAYS[0] * attempt)
        assert json.loads(runner.invoke(args=["finance", "notify", "--json"]).stdout)["retry"] == 1
    assert [p.name for p in outbox.iterdir()] == []
    note = db.session.scalar(sa.select(Notification).where(Notification.channel == "email"))
    assert note.status == "pending" and note.attempts == 2 and "Errno" in note.last_error
    monkeypatch.undo()
    set_clock(lambda: FIXED_NOW + RETRY_DELAYS[0] + RETRY_DELAYS[1])
    assert json.loads(runner.invoke(args=["finance", "notify", "--json"]).stdout)["written"] == 1
    assert [p.suffix for p in outbox.iterdir()] == [".eml"]


# --- serving documents -----------------------------------------------------------------------------


def test_a_damaged_document_is_refused_and_logged_not_served_as_valid(
    app: Flask, client: FlaskClient, staff: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a review: the files were sent without a look at the SHA-256 recorded when they
    were issued, so a damaged contract or invoice went to staff and customers as valid."""
    issued = make_contract(app, "sms_business_service")  # a contract and its invoice (invoiced at signing)
    invoice = db.session.scalar(sa.select(Invoice))
    docs = Path(app.config["DOCUMENTS_PATH"])
    login(client, "finance", staff["finance"])
    urls = {
        issued.contract.pdf_file: f"/sales/contracts/{issued.contract.contract_no}.pdf",
        issued.contract.docx_file: f"/sales/contracts/{issued.contract.contract_no}.docx",
        invoice.pdf_file: f"/finance/invoices/{invoice.number}.pdf",
    }
    for relative, url in urls.items():
        intact = client.get(url)
        assert intact.status_code == 200 and intact.data == (docs / relative).read_bytes(), url
        damaged = bytearray((docs / relative).read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte
        (docs / relative).write_bytes(bytes(damaged))
        refused = client.get(url)
        assert refused.status_code == 500 and "已损坏" in refused.get_data(as_text=True), url
        assert any(r.levelname == "ERROR" and relative in r.getMessage() for r in caplog.records), url


def test_a_committed_document_left_pending_is_put_in_place_when_asked_for(app: Flask, client: FlaskClient, staff: dict[str, str]) -> None:
    """Its process died between the commit and the rename: the download recovers it, not a 404."""
    issued = make_contract(app, "sms_business_service")
    pdf = Path(app.config["DOCUMENTS_PATH"]) / issued.contract.pdf_file
    pdf.rename(pdf.with_name(f".{pdf.name}.pending"))
    login(client, "sales", staff["sales"])
    response = client.get(f"/sales/contracts/{issued.contract.contract_no}.pdf")
    assert response.status_code == 200 and hashlib.sha256(response.data).hexdigest() == issued.contract.pdf_sha256
    assert pdf.is_file() and pending_files(app) == []
