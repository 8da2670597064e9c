"""The send log for the authorities (000 §6(6), 003 annex §4): content, time, account, service
code, recipient and result of every send, append-only and tamper-evident.

Each row carries SHA-256(previous row's hash + its own canonical content), starting from a
genesis hash of zeros; `send_log_head` names the end of the chain, so removing the last rows is
detected too. Appenders take the head row's lock first, so the chain never forks under
concurrency (several web and worker processes).

Rows older than they must be kept (SEND_LOG_KEEP_MONTHS, at least six months) can be archived
(`archive_send_log`): written to a gzip CSV file in the export's format, read back and verified,
recorded in `send_log_archives` (the file's SHA-256 and the chain's hashes at both ends), and
only then deleted, the one deletion the database's guard allows. The chain left in the database
then verifies from the last archive's hash, and each file on its own (`verify_archives`)."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import SHANGHAI, to_local
from backoffice.errors import Conflict, DomainError, ValidationFailed
from backoffice.models import SendLog, SendLogArchive, SendLogHead
from backoffice.services import audit
from backoffice.services.bulk import Prepared, insert_rows
from backoffice.services.sql import insert_ignoring_conflict

GENESIS = "0" * 64
HEAD_ID = 1


@dataclass(frozen=True)
class LogEntry:
    account_code: str
    service_code: str | None
    recipient: str
    content: str
    result: str
    message_id: int | None = None


def canonical(seq: int, logged_at: datetime, entry: LogEntry) -> bytes:
    """The bytes a row's hash covers (besides the previous hash): every field, in a fixed order."""
    fields = [
        seq,
        logged_at.isoformat(),
        entry.account_code,
        entry.service_code or "",
        entry.recipient,
        entry.content,
        entry.result,
        entry.message_id,
    ]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def chain_hash(prev_hash: str, seq: int, logged_at: datetime, entry: LogEntry) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(seq, logged_at, entry)).hexdigest()


def _row_problems(row: Any, prev: str, expected_seq: int) -> list[str]:
    """What is wrong with a row (of the database or of an archive file) where the chain expects
    number `expected_seq` after hash `prev`: rows missing before it, a broken link, content that
    does not match its hash. The one check of every walk of the chain: verify-log's, the
    archive's as it writes and reads back, the export's of archive files."""
    problems = []
    if row.seq != expected_seq:
        problems.append(f"第 {expected_seq} 条起缺失记录（下一条是第 {row.seq} 条）")
    if row.prev_hash != prev:
        problems.append(f"第 {row.seq} 条记录的前序哈希与上一条不符（链条断开）")
    entry = LogEntry(row.account_code, row.service_code, row.recipient, row.content, row.result, row.message_id)
    if chain_hash(row.prev_hash, row.seq, row.logged_at, entry) != row.hash:
        problems.append(f"第 {row.seq} 条记录的内容与其哈希不符（记录被修改）")
    return problems


_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def canonical_run(first_seq: int, logged_at: datetime, entries: Sequence[LogEntry]) -> list[bytes]:
    """`canonical` of consecutive rows, byte for byte, built faster: a JSON array is its
    elements' JSON joined by commas, so the fields a request's rows share (time, account,
    content, result) are encoded once instead of once per row."""
    encoded: dict[str, str] = {}

    def field(value: Any) -> str:
        if type(value) is str:
            text = encoded.get(value)
            if text is None:
                text = encoded[value] = _to_json(value)
            return text
        if type(value) is int:
            return str(value)  # what json writes for an int
        return "null" if value is None else _to_json(value)

    when = field(logged_at.isoformat())
    out = []
    for seq, entry in enumerate(entries, start=first_seq):
        row = (
            f"[{field(seq)},{when},{field(entry.account_code)},{field(entry.service_code or '')},{field(entry.recipient)},"
            f"{field(entry.content)},{field(entry.result)},{field(entry.message_id)}]"
        )
        out.append(row.encode("utf-8"))
    return out


_HEAD = SendLogHead.__table__
# Reserve the sequence numbers and read the chain's end in one statement: the UPDATE takes the
# head row's lock (SQLite: the write lock) until commit, so no other appender comes between.
_RESERVE = Prepared(
    sa.update(_HEAD)
    .where(_HEAD.c.id == HEAD_ID)
    .values(last_seq=_HEAD.c.last_seq + sa.bindparam("entries", type_=sa.BigInteger))
    .returning(_HEAD.c.last_seq, _HEAD.c.last_hash)
)
_MOVE_HEAD = Prepared(sa.update(_HEAD).where(_HEAD.c.id == HEAD_ID).values(last_hash=sa.bindparam("new_hash")))


def append_send_log(session: Session, entries: Sequence[LogEntry], *, at: datetime) -> None:
    """Append `entries` to the chain, in order, in the caller's transaction."""
    if not entries:
        return
    at = at.astimezone(UTC)  # the hash covers the ISO form of the time as stored
    reserved = _RESERVE.first(session, {"entries": len(entries)})
    if reserved is None:  # the very first append makes the head row (concurrent first appends: one inserts, all update)
        session.execute(insert_ignoring_conflict(session, _HEAD, {"id": HEAD_ID, "last_seq": 0, "last_hash": GENESIS}, ["id"]))
        reserved = _RESERVE.first(session, {"entries": len(entries)})
        assert reserved is not None
    last_seq, prev = reserved
    first = last_seq - len(entries) + 1
    rows = []
    for seq, entry, body in zip(range(first, last_seq + 1), entries, canonical_run(first, at, entries), strict=True):
        digest = hashlib.sha256(prev.encode("ascii") + body).hexdigest()
        rows.append(
            {
                "seq": seq, "logged_at": at, "account_code": entry.account_code, "service_code": entry.service_code,
                "recipient": entry.recipient, "content": entry.content, "result": entry.result, "message_id": entry.message_id,
                "prev_hash": prev, "hash": digest,
            }
        )  # fmt: skip
        prev = digest
    insert_rows(session, SendLog.__table__, rows)
    _MOVE_HEAD.rowcount(session, {"new_hash": prev})


def _rows(session: Session, last: int | None = None, batch: int = 5000, *, after: int = 0) -> Iterator[sa.Row]:
    """The log in chain order after `after` up to `last` (None: the whole log), as plain rows (no
    identity map growing with the log)."""
    table = SendLog.__table__
    while True:
        query = sa.select(table).where(table.c.seq > after)
        if last is not None:
            query = query.where(table.c.seq <= last)
        chunk = session.execute(query.order_by(table.c.seq).limit(batch)).all()
        if not chunk:
            return
        yield from chunk
        after = chunk[-1].seq


def _head(session: Session) -> sa.Row | None:
    table = SendLogHead.__table__
    return session.execute(sa.select(table.c.last_seq, table.c.last_hash).where(table.c.id == HEAD_ID)).first()


def archives(session: Session) -> list[SendLogArchive]:
    """The archives recorded, oldest first."""
    return list(session.scalars(sa.select(SendLogArchive).order_by(SendLogArchive.first_seq)))


def _archive_problems(recorded: Sequence[SendLogArchive]) -> list[str]:
    """The archives must make one chain from genesis, each starting where the one before ended."""
    problems: list[str] = []
    prev, expected_seq = GENESIS, 1
    for archive in recorded:
        if archive.first_seq != expected_seq or archive.first_prev_hash != prev:
            problems.append(f"归档 {archive.file_name}（第 {archive.first_seq}–{archive.last_seq} 条）与前一段不相接")
        prev, expected_seq = archive.last_hash, archive.last_seq + 1
    return problems


def verify_chain(session: Session, archive_dir: Path | None = None) -> list[str]:
    """`_verify_chain_once`, again once if an archive was recorded meanwhile (found by a review:
    an archive-log deleting the rows it archived made an intact log look cut at its start)."""
    recorded = _archive_ends(session)
    problems = _verify_chain_once(session, archive_dir)
    if problems and _archive_ends(session) != recorded:
        problems = _verify_chain_once(session, archive_dir)
    return problems


def _archive_ends(session: Session) -> int | None:
    return session.scalar(sa.select(sa.func.max(SendLogArchive.last_seq)))


def _verify_chain_once(session: Session, archive_dir: Path | None = None) -> list[str]:
    """Problems found walking the chain (empty when intact): an edited row (its hash does not
    match its content), a removed or inserted row (broken link or gap in the sequence), rows
    removed from the end (the head names a later row), rows past the head.

    After archives, the chain left in the database starts from the last archive's hash; with
    `archive_dir`, each archive's file is verified too (`verify_archives`).

    The head is read first and the chain walked up to it: lines appended while it is walked (the
    log is written all day) are the next check's. Read after the walk, the head named lines the
    walk had not seen, and an intact log was reported cut off (found by a review: 12 of 200
    checks during traffic; `export-log` exits 1 on it)."""
    recorded = archives(session)
    problems = _archive_problems(recorded)
    if archive_dir is not None:
        problems += verify_archives(recorded, archive_dir)
    prev, expected_seq = GENESIS, 1
    anchor = recorded[-1] if recorded else None
    head = _head(session)
    rows = _rows(session, head.last_seq if head is not None else None)
    first = next(rows, None)
    if anchor is not None:
        prev, expected_seq = anchor.last_hash, anchor.last_seq + 1
        while first is not None and first.seq <= anchor.last_seq:  # archived, not yet deleted (an interrupted archive-log)
            first = next(rows, None)
    for row in (first, *rows) if first is not None else ():
        problems += _row_problems(row, prev, expected_seq)
        prev, expected_seq = row.hash, row.seq + 1
    if head is None and expected_seq > 1:  # it names the log's length: gone, rows cut off the end would not show
        problems.append(f"发送日志的链头记录缺失（实有 {expected_seq - 1} 条记录）：末尾记录可能已被删除")
    if head is not None and (head.last_seq != expected_seq - 1 or head.last_hash != prev):
        problems.append(f"发送日志应有 {head.last_seq} 条，实有 {expected_seq - 1} 条（末尾记录被删除或链头被改）")
    if head is not None:  # rows past the head are appends committed since it was read, or rows added around it
        table = SendLog.__table__
        beyond = session.scalar(sa.select(sa.func.max(table.c.seq)).where(table.c.seq > head.last_seq))
        now = _head(session) if beyond is not None else None
        if beyond is not None and (now is None or now.last_seq < beyond):
            problems.append(f"第 {head.last_seq + 1} 条起的记录在链头之后（链头只到第 {head.last_seq} 条）：记录被插入或链头被改")
    return problems


@dataclass(frozen=True)
class LoggedRow:
    """A send log row read back from an archive file: the attributes of a SendLog row."""

    seq: int
    logged_at: datetime
    account_code: str
    service_code: str | None
    recipient: str
    content: str
    result: str
    message_id: int | None
    prev_hash: str
    hash: str


#: The columns of an export and of an archive file: the chain's fields, so a copy can be verified on its own.
EXPORT_COLUMNS = (
    "seq", "time_beijing", "account", "service_code", "recipient", "content", "result", "prev_hash", "hash",
    "logged_at_utc", "message_id",
)  # fmt: skip


def export_row(r: SendLog | LoggedRow | sa.Row) -> list[Any]:
    return [
        r.seq, to_local(r.logged_at).isoformat(), r.account_code, r.service_code or "", r.recipient, r.content, r.result,
        r.prev_hash, r.hash, r.logged_at.isoformat(), "" if r.message_id is None else r.message_id,
    ]  # fmt: skip


def _read_archive(path: Path) -> Iterator[LoggedRow]:
    """The rows of an archive file, in order; ValueError if it is not one."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
        reader = csv.reader(text)
        if tuple(next(reader, ())) != EXPORT_COLUMNS:
            raise ValueError("不是发送日志归档文件（表头不符）")
        for line in reader:
            if len(line) != len(EXPORT_COLUMNS):
                raise ValueError(f"第 {reader.line_num} 行的列数不对")
            seq, _, account, service, recipient, content, result, prev_hash, digest, logged_at, message_id = line
            yield LoggedRow(
                int(seq), datetime.fromisoformat(logged_at), account, service or None, recipient, content, result,
                int(message_id) if message_id else None, prev_hash, digest,
            )  # fmt: skip


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _archive_file_problems(path: Path, first_seq: int, last_seq: int, first_prev_hash: str, last_hash: str) -> list[str]:
    """What is wrong with an archive file's rows: each hash matching its row, each row linked to
    the one before, and the rows exactly first_seq..last_seq from first_prev_hash to last_hash."""
    problems: list[str] = []
    prev, expected_seq = first_prev_hash, first_seq
    try:
        for row in _read_archive(path):
            problems += [f"{path.name}：{problem}" for problem in _row_problems(row, prev, expected_seq)]
            prev, expected_seq = row.hash, row.seq + 1
            if len(problems) >= 20:
                return problems
    except (OSError, EOFError, ValueError, csv.Error) as error:  # gzip.BadGzipFile is an OSError
        return problems + [f"{path.name}：无法读取（{error}）"]
    if expected_seq != last_seq + 1 or prev != last_hash:
        problems.append(f"{path.name}：应到第 {last_seq} 条为止，实到第 {expected_seq - 1} 条（文件不完整或被改）")
    return problems


def verify_archives(recorded: Sequence[SendLogArchive], directory: Path) -> list[str]:
    """Each recorded archive's file in `directory`: there, with the SHA-256 recorded, and its chain intact."""
    problems: list[str] = []
    for archive in recorded:
        path = directory / archive.file_name
        if not path.is_file():
            problems.append(f"归档文件缺失：{path}")
        elif _file_sha256(path) != archive.file_sha256:
            problems.append(f"归档文件 {path} 的 SHA-256 与归档记录不符（文件被改）")
        else:
            problems += _archive_file_problems(path, archive.first_seq, archive.last_seq, archive.first_prev_hash, archive.last_hash)
    return problems


def export_send_log(
    session: Session, *, start: datetime, end: datetime, account_code: str | None = None, archive_dir: Path | None = None
) -> Iterator[SendLog | LoggedRow]:
    """Rows logged in [start, end), for the authorities, in chain order: from the archive files
    (in `archive_dir`) for the archived part of the period, then from the database. An archive
    file needed is read whole and checked against its record (SHA-256, every row's hash and link,
    both ends of its chain); a file missing or not matching, or an archive recorded while the
    export ran (its rows would be in neither part: found by a review), is a refusal."""
    recorded = archives(session)
    for archive in recorded:
        if archive.latest_logged_at < start or archive.earliest_logged_at >= end:
            continue
        path = (archive_dir or Path(".")) / archive.file_name
        if archive_dir is None or not path.is_file():
            raise DomainError(f"第 {archive.first_seq}–{archive.last_seq} 条已归档，归档文件不在：{path}")
        if _file_sha256(path) != archive.file_sha256:
            raise DomainError(f"归档文件 {path} 的 SHA-256 与归档记录不符（文件被改），未导出")
        prev, expected_seq = archive.first_prev_hash, archive.first_seq
        try:
            for row in _read_archive(path):
                if wrong := _row_problems(row, prev, expected_seq):
                    raise DomainError(f"归档文件 {path}：{'；'.join(wrong)}，未导出")
                prev, expected_seq = row.hash, row.seq + 1
                if start <= row.logged_at < end and (account_code is None or row.account_code == account_code):
                    yield row
        except (OSError, EOFError, ValueError, csv.Error) as error:
            raise DomainError(f"归档文件 {path} 无法读取（{error}），未导出") from None
        if expected_seq != archive.last_seq + 1 or prev != archive.last_hash:
            raise DomainError(f"归档文件 {path} 与归档记录不符：应到第 {archive.last_seq} 条为止，实到第 {expected_seq - 1} 条，未导出")
    query = sa.select(SendLog).where(SendLog.logged_at >= start, SendLog.logged_at < end)
    if recorded:  # rows archived but not yet deleted came from the file
        query = query.where(SendLog.seq > recorded[-1].last_seq)
    if account_code:
        query = query.where(SendLog.account_code == account_code)
    yield from session.scalars(query.order_by(SendLog.seq).execution_options(yield_per=2000))
    if _archive_ends(session) != (recorded[-1].last_seq if recorded else None):
        raise DomainError("导出期间有一段发送日志刚被归档，这段记录可能不在导出中：未导出，请重新导出")


# -- archiving ------------------------------------------------------------------------------------


def keep_from(today: date, months: int) -> date:
    """The first day whose rows must stay in the database: `months` calendar months before today
    (the 31st going back to a shorter month: its last day)."""
    index = today.year * 12 + today.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    last_day = (date(year + month // 12, month % 12 + 1, 1) - date.resolution).day
    return date(year, month, min(today.day, last_day))


@dataclass(frozen=True)
class ArchiveResult:
    archive: SendLogArchive | None  # the archive made (None: there was nothing old enough)
    path: Path | None
    deleted: int  # rows removed from the database, an interrupted run's left-overs included


ARCHIVE_DELETE_BATCH = 5000


def _delete_archived(session: Session, up_to: int) -> int:
    """Remove the archived rows (seq <= up_to, recorded in send_log_archives) from the database,
    a batch per transaction so the log's writers are held up briefly. The only deletion of
    send_log rows: the database's guard refuses any row not recorded as archived."""
    table = SendLog.__table__
    deleted = 0
    while True:
        batch = session.scalars(sa.select(table.c.seq).where(table.c.seq <= up_to).order_by(table.c.seq).limit(ARCHIVE_DELETE_BATCH)).all()
        if not batch:
            return deleted
        deleted += session.execute(table.delete().where(table.c.seq.between(batch[0], batch[-1]))).rowcount  # archived rows only
        session.commit()


def _write_archive(session: Session, path: Path, first_seq: int, last_seq: int, prev: str) -> tuple[int, datetime, datetime, str]:
    """Write rows first_seq..last_seq to `path` (gzip CSV, mode 0600: messages and numbers;
    written beside it and renamed when complete and synced), checking the chain from `prev` as
    they go. Returns the rows' count, the earliest and latest times among them and the last hash;
    DomainError, and no file, if the chain does not verify."""
    partial = path.with_name(f".{path.name}.partial")
    problems: list[str] = []
    count = 0
    first_at = last_at = None
    expected_seq = first_seq
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as raw:
            # mtime 0: the same rows make the same bytes (a run interrupted before its record, run again)
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as compressed, io.TextIOWrapper(compressed, "utf-8", newline="") as text:
                writer = csv.writer(text)
                writer.writerow(EXPORT_COLUMNS)
                for row in _rows(session, last_seq, after=first_seq - 1):
                    problems += _row_problems(row, prev, expected_seq)
                    if len(problems) >= 20:
                        break
                    writer.writerow(export_row(row))
                    first_at = row.logged_at if first_at is None else min(first_at, row.logged_at)
                    last_at = row.logged_at if last_at is None else max(last_at, row.logged_at)
                    prev, expected_seq = row.hash, row.seq + 1
                    count += 1
            raw.flush()
            os.fsync(raw.fileno())
        if not problems and expected_seq != last_seq + 1:
            problems.append(f"第 {expected_seq}–{last_seq} 条不在数据库中")
        if problems:
            raise DomainError("发送日志校验失败，未归档：" + "；".join(problems[:20]))
        partial.replace(path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        partial.unlink(missing_ok=True)
    assert first_at is not None and last_at is not None
    return count, first_at, last_at, prev


@contextlib.contextmanager
def _archiving(directory: Path) -> Iterator[None]:
    """One archive-log at a time (found by a review: two at once wrote the same partial file), by
    a lock file in the archive folder; OSError from the folder as a refusal naming it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = os.open(directory / ".archive-log.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as error:
        raise DomainError(f"无法使用归档目录 {directory}：{error.strerror or error}，未做任何更改") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"另一个 archive-log 正在向 {directory} 归档，本次未做任何更改") from None
        yield
    finally:
        os.close(lock)


def archive_send_log(session: Session, *, before: date, directory: Path, actor: str, today: date, keep_months: int) -> ArchiveResult:
    """Move the rows logged before `before` (a Beijing day, at least `keep_months` months ago) to
    a file in `directory`: written, synced, read back and verified, recorded, then deleted from
    the database. Commits as it goes; safe to run again after an interruption at any point (a
    file without its record is written again, identically; recorded rows left in the database
    are deleted first, once their file is checked)."""
    latest = keep_from(today, keep_months)
    if before > latest:
        raise ValidationFailed(
            {"--before": f"发送日志须保留至少 {keep_months} 个月：--before 不能晚于 {latest}（{before} 之前的记录还不能归档）"}
        )
    with _archiving(directory):
        return _archive(session, before=before, directory=directory, actor=actor)


def _database_six_months_ago(session: Session) -> datetime:
    """The limit the database's triggers hold deletions and archive records to, by its own clock."""
    from backoffice.models.messaging import SQLITE_SIX_MONTHS_AGO

    if session.get_bind().dialect.name == "postgresql":
        limit = session.scalar(sa.text("SELECT (now() AT TIME ZONE 'UTC') - interval '6 months'"))
    else:
        limit = datetime.fromisoformat(session.scalar(sa.text(f"SELECT {SQLITE_SIX_MONTHS_AGO}")))
    return limit.replace(tzinfo=UTC)


def _archive(session: Session, *, before: date, directory: Path, actor: str) -> ArchiveResult:
    recorded = archives(session)
    problems = _archive_problems(recorded)
    if problems:
        raise DomainError("归档记录不相接，未归档：" + "；".join(problems))
    anchor = recorded[-1] if recorded else None
    table = SendLog.__table__
    deleted = 0
    if anchor is not None and session.scalar(sa.select(table.c.seq).where(table.c.seq <= anchor.last_seq).limit(1)) is not None:
        # Rows an interrupted run archived and did not delete: their file is checked first (found
        # by a review: with the file lost or moved since, they were the only copy left).
        problems = verify_archives([anchor], directory)
        if problems:
            raise DomainError(
                f"上次归档（第 {anchor.first_seq}–{anchor.last_seq} 条）留在数据库中的记录未删除，因为：" + "；".join(problems)
            )
        deleted = _delete_archived(session, anchor.last_seq)
    head = _head(session)
    first_seq = anchor.last_seq + 1 if anchor is not None else 1
    prev = anchor.last_hash if anchor is not None else GENESIS
    # No later than the database's own six months (found by a review: on the 1st of some months
    # before 08:00 Beijing its clock's limit, still the last day of a shorter month in UTC, fell
    # before the app's cutoff, and the record of the archive was refused).
    cutoff = min(datetime.combine(before, time(), tzinfo=SHANGHAI).astimezone(UTC), _database_six_months_ago(session))
    last_seq = -1
    if head is not None and head.last_seq >= first_seq:
        first_kept = session.scalar(
            sa.select(sa.func.min(table.c.seq)).where(table.c.seq >= first_seq, table.c.seq <= head.last_seq, table.c.logged_at >= cutoff)
        )
        last_seq = head.last_seq if first_kept is None else first_kept - 1
    session.rollback()  # no transaction held while the file is written
    if last_seq < first_seq:
        return ArchiveResult(None, None, deleted)
    path = directory / f"send-log-{first_seq:012d}-{last_seq:012d}.csv.gz"
    try:
        count, first_at, last_at, last_hash = _write_archive(session, path, first_seq, last_seq, prev)
    except OSError as error:
        raise DomainError(f"无法写入归档文件 {path}：{error.strerror or error}，未做任何更改") from None
    session.rollback()
    problems = _archive_file_problems(path, first_seq, last_seq, prev, last_hash)  # read back from the disk
    if problems:
        path.unlink(missing_ok=True)
        raise DomainError("归档文件读回校验失败，未归档：" + "；".join(problems))
    archive = SendLogArchive(
        first_seq=first_seq, last_seq=last_seq, first_prev_hash=prev, last_hash=last_hash, rows=count,
        earliest_logged_at=first_at, latest_logged_at=last_at, before_day=before, file_name=path.name,
        file_sha256=_file_sha256(path), archived_by=actor,
    )  # fmt: skip
    session.add(archive)
    try:
        session.flush()
    except sa.exc.IntegrityError as error:  # the record's uniqueness, or its trigger (send_log_archives_next_part)
        session.rollback()
        if session.scalar(sa.select(SendLogArchive.id).where(SendLogArchive.file_name == path.name)) is None:
            path.unlink(missing_ok=True)  # (not one another run recorded meanwhile: a folder without working locks)
        raise Conflict(
            f"数据库拒绝了第 {first_seq}–{last_seq} 条的归档记录（{str(error.orig).splitlines()[0][:120]}）："
            "它须接着上一段归档，且末条按数据库的时钟已满六个月。本次未做任何更改"
        ) from None
    audit.record(session, actor, "archive_send_log", "send_log", path.name, first_seq=first_seq, last_seq=last_seq, rows=count)
    session.commit()
    deleted += _delete_archived(session, last_seq)
    return ArchiveResult(archive, path, deleted)
