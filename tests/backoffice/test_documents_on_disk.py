"""Documents (contracts, invoices, vouchers) and the outbox when the disk misbehaves: a rename
that fails after the commit, a process that dies in between, a full disk, a damaged file."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from backoffice.extensions import db
from backoffice.models import LedgerEvent, Receipt
from tests.conftest import login, make_contract


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
