"""The send log is append-only in the database itself (DESIGN invariant 6): whatever the client,
an UPDATE or DELETE of its rows is refused and changes nothing, and appending still works; the
head row, which names the log's length, only moves forward."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.extensions import db
from backoffice.models import SendLog, SendLogHead
from backoffice.services.send_log import verify_chain
from tests.backoffice.test_messaging import Sender, active_sender, numbers, send
from tests.conftest import drop_send_log_guard


@pytest.fixture
def sender(app: Flask) -> Sender:
    return active_sender(app)


def log_rows() -> list[tuple]:
    db.session.expire_all()
    return [tuple(r) for r in db.session.execute(sa.select(SendLog.__table__).order_by(SendLog.seq))]


@pytest.mark.parametrize(
    "change",
    [
        sa.update(SendLog).where(SendLog.seq == 2).values(result="submitted: forged"),
        sa.update(SendLog).values(content="【蓉城会员】改过的内容"),
        sa.delete(SendLog).where(SendLog.seq == 3),
        sa.delete(SendLog),
        sa.text("UPDATE send_log SET recipient = '13900000000'"),
        sa.text("DELETE FROM send_log WHERE seq > 1"),
    ],
    ids=["update-one", "update-all", "delete-last", "delete-all", "sql-update", "sql-delete"],
)
def test_updating_or_deleting_send_log_rows_is_refused_and_changes_nothing(app: Flask, sender: Sender, change: sa.Executable) -> None:
    send(sender, numbers(3))
    before = log_rows()
    assert len(before) == 3
    with pytest.raises(sa.exc.IntegrityError, match="send_log is append-only"):
        db.session.execute(change)
    db.session.rollback()
    assert log_rows() == before and verify_chain(db.session) == []


def test_an_orm_change_to_a_loaded_row_is_refused_too(app: Flask, sender: Sender) -> None:
    send(sender, numbers(2))
    before = log_rows()
    row = db.session.get(SendLog, 1)
    row.result = "delivered"
    with pytest.raises(sa.exc.IntegrityError, match="send_log is append-only"):
        db.session.commit()
    db.session.rollback()
    db.session.delete(db.session.get(SendLog, 2))
    with pytest.raises(sa.exc.IntegrityError, match="send_log is append-only"):
        db.session.commit()
    db.session.rollback()
    assert log_rows() == before


def test_appending_still_works_after_a_refused_change(app: Flask, sender: Sender) -> None:
    send(sender, numbers(2))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.execute(sa.delete(SendLog))
    db.session.rollback()
    send(sender, "13900139000")
    assert [r.seq for r in db.session.scalars(sa.select(SendLog).order_by(SendLog.seq))] == [1, 2, 3]
    assert verify_chain(db.session) == []


def head() -> tuple:
    db.session.expire_all()
    return tuple(db.session.execute(sa.select(SendLogHead.__table__)).one())


@pytest.mark.parametrize(
    "change",
    [
        sa.delete(SendLogHead),
        sa.text("DELETE FROM send_log_head"),
        sa.update(SendLogHead).values(last_seq=SendLogHead.last_seq - 1),
        sa.update(SendLogHead).values(last_seq=0, last_hash="0" * 64),
        sa.update(SendLogHead).values(id=2),
    ],
    ids=["delete", "sql-delete", "step-back", "reset", "renumber"],
)
def test_the_head_row_is_not_deleted_or_moved_back(app: Flask, sender: Sender, change: sa.Executable) -> None:
    """Found by a review: it had no guard. Deleted with the rows at the end of the log, the chain
    verified; deleted alone, every later append reused a number and failed, stopping all sends."""
    send(sender, numbers(3))
    before = head()
    with pytest.raises(sa.exc.IntegrityError, match="send_log_head only moves forward"):
        db.session.execute(change)
    db.session.rollback()
    assert head() == before
    send(sender, "13900139000")
    assert head()[1] == 4 and verify_chain(db.session) == []


def test_rows_cut_off_the_end_with_the_head_row_do_not_verify(app: Flask, sender: Sender) -> None:
    """What the chain still reveals when the database's owner dropped the guards."""
    send(sender, numbers(4))
    drop_send_log_guard()
    db.session.execute(sa.delete(SendLog).where(SendLog.seq >= 3))
    db.session.execute(sa.delete(SendLogHead))
    db.session.commit()
    assert verify_chain(db.session) == ["发送日志的链头记录缺失（实有 2 条记录）：末尾记录可能已被删除"]


def _append(n: int, engine: sa.Engine | None = None) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from backoffice.services.send_log import LogEntry, append_send_log

    with Session(engine or db.engine) as other:  # another process's intake
        append_send_log(
            other, [LogEntry("E000001", None, "13800138000", f"验证码 {n}", "accepted", None)], at=datetime(2026, 11, 23, 4, tzinfo=UTC)
        )
        other.commit()


def test_lines_appended_while_the_chain_is_walked_are_not_taken_for_tampering(
    app: Flask, sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the head was read after the walk, so a line committed meanwhile made an
    intact log "cut off" (12 of 200 checks during traffic on SQLite, 28 on PostgreSQL)."""
    import threading

    from backoffice.services import send_log

    real = send_log._rows

    def then_a_line_is_appended(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        yield from real(*args, **kwargs)  # type: ignore[arg-type]
        _append(99)

    monkeypatch.setattr(send_log, "_rows", then_a_line_is_appended)
    assert verify_chain(db.session) == []
    monkeypatch.setattr(send_log, "_rows", real)
    db.session.rollback()
    stop = threading.Event()
    engine = db.engine

    def writer() -> None:
        n = 0
        while not stop.is_set():
            _append(n, engine)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        alarms = [problems for _ in range(40) if (problems := verify_chain(db.session)) or db.session.rollback()]
    finally:
        stop.set()
        thread.join(30)
    assert alarms == [] and verify_chain(db.session) == []


def test_a_line_added_past_the_head_is_reported(app: Flask, sender: Sender) -> None:
    send(sender, numbers(2))
    row = db.session.scalars(sa.select(SendLog).order_by(SendLog.seq.desc())).first()
    assert row is not None
    db.session.execute(
        sa.insert(SendLog).values(
            seq=row.seq + 1, logged_at=row.logged_at, account_code=row.account_code, service_code=row.service_code,
            recipient=row.recipient, content=row.content, result=row.result, message_id=None, prev_hash=row.hash, hash=row.hash,
        )
    )  # fmt: skip
    db.session.commit()
    assert any("在链头之后" in problem for problem in verify_chain(db.session))
