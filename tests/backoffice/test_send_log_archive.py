"""Archiving the send log (000 §6(6): kept at least six months): `dispatch archive-log` moves the
lines older than SEND_LOG_KEEP_MONTHS to a verified gzip CSV file, records it, and only then
deletes them; the chain left in the database verifies from the archive's hash, an export of a
period reads the archived part from the file, and nothing else may be deleted."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.extensions import db
from backoffice.models import SendLog, SendLogArchive
from backoffice.services import send_log
from backoffice.services.send_log import LogEntry, append_send_log, keep_from, verify_chain
from tests.conftest import drop_send_log_guard

# FIXED_NOW is 2026-11-23 (Beijing): lines logged before 2026-05-23 may be archived.
OLD_DAYS = (datetime(2026, 3, 1, 1, tzinfo=UTC), datetime(2026, 4, 15, 23, 30, tzinfo=UTC), datetime(2026, 5, 22, 15, 59, tzinfo=UTC))
RECENT = (datetime(2026, 5, 22, 16, 0, tzinfo=UTC), datetime(2026, 11, 20, 8, tzinfo=UTC))  # 16:00 UTC is 00:00 on the 23rd in Beijing


def append(at: datetime, count: int, account: str = "E000001") -> None:
    entries = [
        LogEntry(account, "1069001", f"1380013{n:04d}", f"【蓉城会员】验证码 {n}，{at:%m月%d日}", "accepted", n or None)
        for n in range(count)
    ]
    append_send_log(db.session, entries, at=at)
    db.session.commit()


@pytest.fixture
def logged(app: Flask) -> list[int]:
    """Three old days of lines (3 + 3 + 3) and two recent ones (3 + 3), two accounts."""
    for at in OLD_DAYS + RECENT:
        append(at, 2)
        append(at, 1, account="E000002")
    return [r for r in db.session.scalars(sa.select(SendLog.seq).order_by(SendLog.seq))]


def run(app: Flask, *args: str) -> tuple[int, str, str]:
    result = app.test_cli_runner().invoke(args=list(args))
    return result.exit_code, result.stdout, result.stderr


def export(
    app: Flask, tmp_path: Path, name: str, start: str = "2026-01-01", end: str = "2026-12-31", *extra: str
) -> tuple[int, bytes, str]:
    out = tmp_path / name
    code, _, err = run(app, "dispatch", "export-log", "--from", start, "--to", end, "--out", str(out), *extra)
    return code, out.read_bytes() if out.exists() else b"", err


def seqs() -> list[int]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(SendLog.seq).order_by(SendLog.seq)))


def archive_dir(app: Flask) -> Path:
    return Path(app.config["SEND_LOG_ARCHIVE_PATH"])


def test_keep_from_counts_calendar_months_back() -> None:
    assert keep_from(date(2026, 11, 23), 6) == date(2026, 5, 23)
    assert keep_from(date(2026, 8, 31), 6) == date(2026, 2, 28)
    assert keep_from(date(2028, 8, 31), 6) == date(2028, 2, 29)
    assert keep_from(date(2026, 3, 15), 6) == date(2025, 9, 15)
    assert keep_from(date(2026, 1, 31), 13) == date(2024, 12, 31)


def test_old_lines_go_to_a_verified_file_and_the_rest_still_verifies(app: Flask, tmp_path: Path, logged: list[int]) -> None:
    code, whole_before, _ = export(app, tmp_path, "before.csv")
    assert code == 0 and logged == list(range(1, 16))
    _, one_account_before, _ = export(app, tmp_path, "before-e2.csv", "2026-01-01", "2026-12-31", "--account", "E000002")

    code, out, err = run(app, "dispatch", "archive-log", "--before", "2026-05-23", "--json")
    assert code == 0, out + err
    result = json.loads(out)
    assert result["archived"]["first_seq"] == 1 and result["archived"]["last_seq"] == 9 and result["archived"]["rows"] == 9
    assert result["deleted"] == 9
    assert seqs() == list(range(10, 16))  # the line at 00:00 on the 23rd (Beijing) stays
    path = Path(result["archived"]["file"])
    assert path.parent == archive_dir(app) and path.name == "send-log-000000000001-000000000009.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    assert lines[0].startswith("seq,time_beijing,account") and len(lines) == 10
    archive = db.session.scalars(sa.select(SendLogArchive)).one()
    assert (archive.first_seq, archive.last_seq, archive.before_day) == (1, 9, date(2026, 5, 23))
    assert archive.first_prev_hash == "0" * 64 and archive.archived_by.startswith("cli")

    assert verify_chain(db.session, archive_dir(app)) == []
    code, out, _ = run(app, "dispatch", "verify-log", "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "problems": []}
    # An export of the same period reads the archived part from the file: the same bytes as before.
    code, whole_after, err = export(app, tmp_path, "after.csv")
    assert code == 0 and whole_after == whole_before, err
    assert "校验通过：导出 15 条（第 1–15 条）" in err
    assert export(app, tmp_path, "after-e2.csv", "2026-01-01", "2026-12-31", "--account", "E000002")[1] == one_account_before
    # Appending goes on from the head; nothing to archive the second time.
    append(datetime(2026, 11, 23, 1, tzinfo=UTC), 1)
    assert seqs()[-1] == 16 and verify_chain(db.session, archive_dir(app)) == []
    code, out, _ = run(app, "dispatch", "archive-log", "--before", "2026-05-23")
    assert code == 0 and "2026-05-23 之前没有尚未归档的记录" in out


def test_a_second_archive_goes_on_from_the_first(app: Flask, tmp_path: Path, logged: list[int]) -> None:
    _, before, _ = export(app, tmp_path, "before.csv")
    assert run(app, "dispatch", "archive-log", "--before", "2026-04-01")[0] == 0
    assert seqs()[0] == 4
    assert run(app, "dispatch", "archive-log", "--before", "2026-05-23")[0] == 0
    assert seqs()[0] == 10
    recorded = db.session.scalars(sa.select(SendLogArchive).order_by(SendLogArchive.first_seq)).all()
    assert [(a.first_seq, a.last_seq) for a in recorded] == [(1, 3), (4, 9)]
    assert recorded[1].first_prev_hash == recorded[0].last_hash
    assert verify_chain(db.session, archive_dir(app)) == []
    assert export(app, tmp_path, "after.csv")[1] == before
    # A period wholly within the first archive reads only that file.
    code, part, err = export(app, tmp_path, "march.csv", "2026-03-01", "2026-03-31")
    assert code == 0 and part.count(b"\n") == 4, err


@pytest.mark.parametrize("before", ["2026-05-24", "2026-11-23", "2027-01-01"])
def test_lines_younger_than_six_months_are_not_archived(app: Flask, logged: list[int], before: str) -> None:
    code, out, err = run(app, "dispatch", "archive-log", "--before", before)
    assert code == 2
    assert "发送日志须保留至少 6 个月：--before 不能晚于 2026-05-23" in out + err
    assert seqs() == logged and not archive_dir(app).exists()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SendLogArchive)) == 0


def test_a_longer_keep_setting_moves_the_limit(app: Flask, logged: list[int]) -> None:
    app.config["SEND_LOG_KEEP_MONTHS"] = 9
    code, out, err = run(app, "dispatch", "archive-log", "--before", "2026-04-01")
    assert code == 2 and "须保留至少 9 个月：--before 不能晚于 2026-02-23" in out + err
    assert seqs() == logged


@pytest.mark.parametrize("before", ["2026-02-30", "yesterday", "", "1999-12-31"])
def test_a_bad_day_is_refused_naming_the_option(app: Flask, logged: list[int], before: str) -> None:
    code, out, err = run(app, "dispatch", "archive-log", "--before", before)
    assert code == 2 and "--before" in out + err
    assert seqs() == logged and not archive_dir(app).exists()


def test_a_changed_line_is_not_archived_and_nothing_changes(app: Flask, logged: list[int]) -> None:
    drop_send_log_guard()
    db.session.execute(sa.text("UPDATE send_log SET content = '【蓉城会员】改过的' WHERE seq = 5"))
    db.session.commit()
    code, out, err = run(app, "dispatch", "archive-log", "--before", "2026-05-23")
    assert code == 1 and "发送日志校验失败，未归档：第 5 条记录的内容与其哈希不符" in out + err
    assert seqs() == logged
    assert list(archive_dir(app).glob("*send-log-*")) == []  # the partial file went too
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SendLogArchive)) == 0


def test_a_run_interrupted_while_deleting_finishes_on_the_next(
    app: Flask, tmp_path: Path, logged: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, before, _ = export(app, tmp_path, "before.csv")
    monkeypatch.setattr(send_log, "ARCHIVE_DELETE_BATCH", 4)
    real_commit = db.session.commit
    commits = []

    def crash_on_the_second_batch() -> None:
        commits.append(1)
        if len(commits) == 3:  # the record, the first batch, then the process dies
            raise KeyboardInterrupt
        real_commit()

    monkeypatch.setattr(db.session, "commit", crash_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        send_log.archive_send_log(
            db.session, before=date(2026, 5, 23), directory=archive_dir(app), actor="cli:test", today=date(2026, 11, 23), keep_months=6
        )
    monkeypatch.undo()
    db.session.rollback()
    assert seqs() == list(range(5, 16))  # rows 5..9 archived, not yet deleted
    assert verify_chain(db.session, archive_dir(app)) == []
    assert export(app, tmp_path, "between.csv")[1] == before  # the archived rows come once, from the file
    code, out, _ = run(app, "dispatch", "archive-log", "--before", "2026-05-23")
    assert code == 0 and "已删除上次中断时留下的 5 条已归档记录" in out
    assert seqs() == list(range(10, 16)) and verify_chain(db.session, archive_dir(app)) == []


def test_a_changed_or_missing_archive_file_is_found(app: Flask, tmp_path: Path, logged: list[int]) -> None:
    assert run(app, "dispatch", "archive-log", "--before", "2026-05-23")[0] == 0
    path = next(archive_dir(app).glob("send-log-*"))
    rows = gzip.decompress(path.read_bytes()).decode("utf-8")
    path.write_bytes(gzip.compress(rows.replace("验证码 1，", "验证码 7，", 1).encode("utf-8")))
    code, out, _ = run(app, "dispatch", "verify-log")
    assert code == 1 and f"归档文件 {path} 的 SHA-256 与归档记录不符（文件被改）" in out
    code, _, err = export(app, tmp_path, "march.csv", "2026-03-01", "2026-03-31")
    assert code == 1 and "SHA-256 与归档记录不符" in err and not (tmp_path / "march.csv").exists()
    # The changed row itself is found by the chain, whatever the recorded SHA-256 says.
    assert send_log._archive_file_problems(path, 1, 9, "0" * 64, db.session.scalars(sa.select(SendLogArchive)).one().last_hash)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    path.rename(moved / path.name)
    code, out, _ = run(app, "dispatch", "verify-log")
    assert code == 1 and f"归档文件缺失：{path}" in out
    code, _, err = export(app, tmp_path, "april.csv", "2026-04-01", "2026-04-30")
    assert code == 1 and "第 1–9 条已归档，归档文件不在" in err
    # Pointed at the folder the (changed) file is in, verify-log reads it there.
    code, out, _ = run(app, "dispatch", "verify-log", "--archives", str(moved))
    assert code == 1 and "SHA-256 与归档记录不符" in out and "缺失" not in out
    # A period after the archives needs no file.
    assert export(app, tmp_path, "november.csv", "2026-11-01", "2026-11-30")[0] == 0


def test_only_archived_lines_can_be_deleted_and_archive_records_stay(app: Flask, logged: list[int]) -> None:
    assert run(app, "dispatch", "archive-log", "--before", "2026-04-01")[0] == 0
    for change in (sa.delete(SendLog).where(SendLog.seq == 4), sa.text("DELETE FROM send_log WHERE seq > 3")):
        with pytest.raises(sa.exc.IntegrityError, match="send_log is append-only"):
            db.session.execute(change)
        db.session.rollback()
    for change in (
        sa.update(SendLogArchive).values(last_seq=20),
        sa.delete(SendLogArchive),
        sa.text("DELETE FROM send_log_archives"),
    ):
        with pytest.raises(sa.exc.IntegrityError, match="send_log_archives is append-only"):
            db.session.execute(change)
        db.session.rollback()
    assert seqs() == list(range(4, 16)) and verify_chain(db.session) == []


def test_rows_removed_at_the_start_without_an_archive_do_not_verify(app: Flask, logged: list[int]) -> None:
    """With the guard dropped, rows deleted at the start of the log (no archive recorded) show."""
    drop_send_log_guard()
    db.session.execute(sa.delete(SendLog).where(SendLog.seq <= 2))
    db.session.commit()
    assert verify_chain(db.session) == ["第 1 条起缺失记录（下一条是第 3 条）", "第 3 条记录的前序哈希与上一条不符（链条断开）"]


@pytest.mark.parametrize("value", ["3", "0", "six", "-6"])
def test_keeping_less_than_six_months_cannot_be_configured(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from backoffice.config import Config, ConfigError

    monkeypatch.setenv("SEND_LOG_KEEP_MONTHS", value)
    with pytest.raises(ConfigError, match="SEND_LOG_KEEP_MONTHS"):
        Config()


# -- found by the review of the archive ------------------------------------------------------------


def test_an_archive_recorded_while_an_export_runs_refuses_the_export(app: Flask, tmp_path: Path, logged: list[int]) -> None:
    """The export read the list of archives once: rows archived and deleted while it read the
    files were in neither part, and it said it verified."""
    assert run(app, "dispatch", "archive-log", "--before", "2026-04-01")[0] == 0
    rows = send_log.export_send_log(
        db.session, start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2027, 1, 1, tzinfo=UTC), archive_dir=archive_dir(app)
    )
    assert next(rows).seq == 1
    assert run(app, "dispatch", "archive-log", "--before", "2026-05-23")[0] == 0
    with pytest.raises(send_log.DomainError, match="导出期间有一段发送日志刚被归档"):
        list(rows)


def test_a_row_timed_before_the_row_ahead_of_it_is_exported_after_archives(app: Flask, tmp_path: Path) -> None:
    """Times are taken before the log's lock, so a row can carry an earlier time than the one
    before it: the archive records its rows' earliest and latest times, not its first and last's."""
    append(datetime(2026, 3, 31, 15, 59, 59, 990000, tzinfo=UTC), 1)  # 23:59:59.990 on 31 March, Beijing
    append(datetime(2026, 3, 31, 16, 0, 0, 1000, tzinfo=UTC), 1)  # 00:00:00.001 on 1 April
    append(datetime(2026, 3, 31, 15, 59, 59, 995000, tzinfo=UTC), 1)  # 31 March again, logged after it
    append(datetime(2026, 4, 20, tzinfo=UTC), 1)
    _, before, _ = export(app, tmp_path, "march-before.csv", "2026-03-01", "2026-03-31")
    assert before.count(b"\n") == 3
    assert run(app, "dispatch", "archive-log", "--before", "2026-04-01")[0] == 0  # row 1 only: row 2 is 1 April's
    assert run(app, "dispatch", "archive-log", "--before", "2026-05-01")[0] == 0  # rows 2 to 4
    second = db.session.scalars(sa.select(SendLogArchive).order_by(SendLogArchive.first_seq)).all()[1]
    assert second.earliest_logged_at == datetime(2026, 3, 31, 15, 59, 59, 995000, tzinfo=UTC)
    code, after, err = export(app, tmp_path, "march-after.csv", "2026-03-01", "2026-03-31")
    assert code == 0 and after == before, err


def test_the_database_takes_only_the_next_part_of_the_log_six_months_old_as_archived(app: Flask, logged: list[int]) -> None:
    """Found by a review: one INSERT of a record naming a far seq let a client delete every row,
    minutes old. The record must follow the last one and end on a row of the log, with its hash,
    six months old by the database's clock; a row younger than that is never deleted."""
    rows = {r.seq: r for r in db.session.scalars(sa.select(SendLog))}

    def record(first: int, last: int, prev: str, last_hash: str) -> dict:
        at = datetime(2026, 3, 1, tzinfo=UTC)
        return {
            "first_seq": first, "last_seq": last, "first_prev_hash": prev, "last_hash": last_hash, "rows": last - first + 1,
            "earliest_logged_at": at, "latest_logged_at": at, "before_day": date(2026, 5, 1), "file_name": "forged.csv.gz",
            "file_sha256": "0" * 64, "archived_at": at, "archived_by": "forger",
        }  # fmt: skip

    genesis = "0" * 64
    for forged in (
        record(1, 10**9, genesis, rows[15].hash),  # past the log
        record(1, 15, genesis, rows[15].hash),  # rows minutes old (2026-11-20)
        record(1, 9, genesis, rows[8].hash),  # not that row's hash
        record(2, 9, rows[1].hash, rows[9].hash),  # not from the start
        record(1, 9, "1" * 64, rows[9].hash),  # not from the genesis
    ):
        with pytest.raises(sa.exc.IntegrityError, match="not the next part of the log six months old"):
            db.session.execute(sa.insert(SendLogArchive.__table__), forged)
        db.session.rollback()
    assert seqs() == logged
    # The owner of the database could drop the guard of the records; the rows' own still wants six months.
    from backoffice.models.messaging import SEND_LOG_ARCHIVES_UNGUARD

    for statement in SEND_LOG_ARCHIVES_UNGUARD[db.engine.dialect.name]:
        db.session.execute(sa.text(statement))
    db.session.execute(sa.insert(SendLogArchive.__table__), record(1, 15, genesis, rows[15].hash))
    db.session.commit()
    with pytest.raises(sa.exc.IntegrityError, match="send_log is append-only"):
        db.session.execute(sa.delete(SendLog).where(SendLog.seq >= 10))
    db.session.rollback()
    db.session.execute(sa.delete(SendLog).where(SendLog.seq < 10))  # six months old and recorded: they go
    db.session.commit()
    assert seqs() == list(range(10, 16))


def test_the_triggers_say_six_months_as_the_model_does() -> None:
    from backoffice.models import messaging

    statements = [*messaging.SEND_LOG_GUARD["sqlite"], *messaging.SEND_LOG_ARCHIVES_GUARD["sqlite"]]
    assert sum(f"'-{messaging.KEEP_MONTHS_AT_LEAST} months'" in s for s in statements) == 2
    statements = [*messaging.SEND_LOG_GUARD["postgresql"], *messaging.SEND_LOG_ARCHIVES_GUARD["postgresql"]]
    assert sum(f"interval '{messaging.KEEP_MONTHS_AT_LEAST} months'" in s for s in statements) == 2


def test_rows_left_by_an_interrupted_run_stay_while_their_file_is_missing(
    app: Flask, tmp_path: Path, logged: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the next run deleted them at once, though the file had been moved away
    meanwhile: the only copy left."""
    monkeypatch.setattr(send_log, "_delete_archived", lambda session, up_to: 0)  # the process dies after the record
    assert run(app, "dispatch", "archive-log", "--before", "2026-05-23")[0] == 0
    monkeypatch.undo()
    path = next(archive_dir(app).glob("send-log-*"))
    path.rename(tmp_path / path.name)
    code, out, err = run(app, "dispatch", "archive-log", "--before", "2026-05-23")
    assert code == 1 and "上次归档（第 1–9 条）留在数据库中的记录未删除，因为：归档文件缺失" in out + err
    assert seqs() == logged
    (tmp_path / path.name).rename(path)
    code, out, _ = run(app, "dispatch", "archive-log", "--before", "2026-05-23")
    assert code == 0 and "已删除上次中断时留下的 9 条已归档记录" in out and seqs() == list(range(10, 16))


def test_verify_log_while_an_archive_deletes_its_rows_is_not_a_false_alarm(
    app: Flask, logged: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_head = send_log._head
    archived = []

    def an_archive_runs_meanwhile(session):  # type: ignore[no-untyped-def]
        if not archived:
            archived.append(1)
            with send_log.Session(db.engine) as other:
                send_log.archive_send_log(
                    other, before=date(2026, 5, 23), directory=archive_dir(app), actor="cli:other", today=date(2026, 11, 23), keep_months=6
                )
        return real_head(session)

    monkeypatch.setattr(send_log, "_head", an_archive_runs_meanwhile)
    assert verify_chain(db.session, archive_dir(app)) == [] and archived
    assert seqs() == list(range(10, 16))


def test_an_archive_folder_that_cannot_be_used_is_a_refusal(app: Flask, tmp_path: Path, logged: list[int]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    app.config["SEND_LOG_ARCHIVE_PATH"] = blocker / "archives"
    code, out, err = run(app, "dispatch", "archive-log", "--before", "2026-05-23")
    assert code == 1 and f"无法使用归档目录 {blocker / 'archives'}" in out + err and "Traceback" not in out + err
    assert seqs() == logged


def test_one_archive_log_at_a_time(app: Flask, logged: list[int]) -> None:
    import fcntl
    import os

    archive_dir(app).mkdir(parents=True)
    held = os.open(archive_dir(app) / ".archive-log.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, out, err = run(app, "dispatch", "archive-log", "--before", "2026-05-23")
        assert code == 1 and "另一个 archive-log 正在向" in out + err
        assert seqs() == logged and list(archive_dir(app).glob("*send-log-*")) == []
    finally:
        os.close(held)
    assert run(app, "dispatch", "archive-log", "--before", "2026-05-23")[0] == 0
    path = next(archive_dir(app).glob("send-log-*"))
    assert path.stat().st_mode & 0o777 == 0o600  # messages and numbers: the owner's only


def test_export_log_reads_archives_from_another_folder_when_told(app: Flask, tmp_path: Path, logged: list[int]) -> None:
    _, before, _ = export(app, tmp_path, "before.csv")
    assert run(app, "dispatch", "archive-log", "--before", "2026-05-23")[0] == 0
    moved = tmp_path / "cold-storage"
    archive_dir(app).rename(moved)
    assert export(app, tmp_path, "refused.csv")[0] == 1
    code, after, err = export(app, tmp_path, "after.csv", "2026-01-01", "2026-12-31", "--archives", str(moved))
    assert code == 0 and after == before, err


def test_an_archive_file_whose_record_was_widened_is_not_exported(app: Flask, tmp_path: Path, logged: list[int]) -> None:
    """Found by a review: export-log checked only the file's SHA-256, not that its chain ends where
    the record says; a record widened (its guard dropped) hid rows deleted from the database."""
    assert run(app, "dispatch", "archive-log", "--before", "2026-05-23")[0] == 0
    from backoffice.models.messaging import SEND_LOG_ARCHIVES_UNGUARD

    for statement in SEND_LOG_ARCHIVES_UNGUARD[db.engine.dialect.name]:
        db.session.execute(sa.text(statement))
    twelve = db.session.scalars(sa.select(SendLog).where(SendLog.seq == 12)).one()
    db.session.execute(sa.update(SendLogArchive).values(last_seq=12, last_hash=twelve.hash))
    db.session.commit()
    code, _, err = export(app, tmp_path, "widened.csv")
    assert code == 1 and "与归档记录不符：应到第 12 条为止，实到第 9 条" in err


@pytest.mark.sqlite_only
def test_insert_or_replace_cannot_rewrite_a_row_move_the_head_or_drop_an_archive_record(app: Flask, logged: list[int]) -> None:
    """Found by a review: SQLite's INSERT OR REPLACE removes the clashing row without firing its
    DELETE trigger, so a row minutes old could be rewritten (its hash recomputed, the head's hash
    moved) and the chain still verified."""
    assert run(app, "dispatch", "archive-log", "--before", "2026-04-01")[0] == 0
    row = db.session.scalars(sa.select(SendLog).where(SendLog.seq == 14)).one()
    db.session.expunge(row)
    columns = "seq, logged_at, account_code, service_code, recipient, content, result, message_id, prev_hash, hash"
    values = {
        "seq": 14, "logged_at": "2026-11-20 08:00:00.000000", "account_code": row.account_code, "service_code": row.service_code,
        "recipient": row.recipient, "content": "【蓉城会员】改过的", "result": row.result, "message_id": row.message_id,
        "prev_hash": row.prev_hash, "hash": "f" * 64,
    }  # fmt: skip
    placeholders = ", ".join(f":{name.strip()}" for name in columns.split(","))
    with pytest.raises(sa.exc.IntegrityError, match="send_log is append-only"):
        db.session.execute(sa.text(f"INSERT OR REPLACE INTO send_log ({columns}) VALUES ({placeholders})"), values)
    db.session.rollback()
    db.session.execute(sa.text("INSERT OR REPLACE INTO send_log_head (id, last_seq, last_hash) VALUES (1, 3, :h)"), {"h": "0" * 64})
    db.session.commit()  # ignored: the head is where it was
    with pytest.raises(sa.exc.IntegrityError, match="send_log_archives is append-only"):
        db.session.execute(sa.text("INSERT OR REPLACE INTO send_log_archives SELECT * FROM send_log_archives"))
    db.session.rollback()
    assert seqs() == list(range(4, 16)) and verify_chain(db.session, archive_dir(app)) == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SendLogArchive)) == 1


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("now", "limit"),
    [
        ("2026-08-31 10:00:00", "2026-02-28 10:00:00"),  # SQLite's own '-6 months' says 2026-03-03
        ("2028-08-31 10:00:00", "2028-02-29 10:00:00"),
        ("2026-12-31 23:59:59", "2026-06-30 23:59:59"),  # (its own: 2026-07-01)
        ("2026-12-08 01:20:00", "2026-06-08 01:20:00"),
        ("2027-03-01 00:30:00", "2026-09-01 00:30:00"),
    ],
)
def test_sqlites_six_months_ago_stops_at_the_month_end_as_postgresql_does(app: Flask, now: str, limit: str) -> None:
    from backoffice.models.messaging import SQLITE_SIX_MONTHS_AGO

    assert db.session.scalar(sa.text("SELECT " + SQLITE_SIX_MONTHS_AGO.replace("'now'", f"'{now}'"))) == limit
