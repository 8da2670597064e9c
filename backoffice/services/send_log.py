"""The send log for the authorities (000 §6(6), 003 annex §4): content, time, account, service
code, recipient and result of every send, append-only and tamper-evident.

Each row carries SHA-256(previous row's hash + its own canonical content), starting from a
genesis hash of zeros; `send_log_head` names the end of the chain, so removing the last rows is
detected too. Appenders take the head row's lock first, so the chain never forks under
concurrency (several web and worker processes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.models import SendLog, SendLogHead
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


def _rows(session: Session, last: int | None = None, batch: int = 5000) -> Iterator[sa.Row]:
    """The log in chain order up to `last` (None: the whole log), as plain rows (no identity map
    growing with the log)."""
    table = SendLog.__table__
    after = 0
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


def verify_chain(session: Session) -> list[str]:
    """Problems found walking the chain (empty when intact): an edited row (its hash does not
    match its content), a removed or inserted row (broken link or gap in the sequence), rows
    removed from the end (the head names a later row), rows past the head.

    The head is read first and the chain walked up to it: lines appended while it is walked (the
    log is written all day) are the next check's. Read after the walk, the head named lines the
    walk had not seen, and an intact log was reported cut off (found by a review: 12 of 200
    checks during traffic; `export-log` exits 1 on it)."""
    problems: list[str] = []
    prev, expected_seq = GENESIS, 1
    head = _head(session)
    for row in _rows(session, head.last_seq if head is not None else None):
        if row.seq != expected_seq:
            problems.append(f"第 {expected_seq} 条起缺失记录（下一条是第 {row.seq} 条）")
        if row.prev_hash != prev:
            problems.append(f"第 {row.seq} 条记录的前序哈希与上一条不符（链条断开）")
        entry = LogEntry(row.account_code, row.service_code, row.recipient, row.content, row.result, row.message_id)
        if chain_hash(row.prev_hash, row.seq, row.logged_at, entry) != row.hash:
            problems.append(f"第 {row.seq} 条记录的内容与其哈希不符（记录被修改）")
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


def export_send_log(session: Session, *, start: datetime, end: datetime, account_code: str | None = None) -> Iterator[SendLog]:
    """Rows logged in [start, end), for the authorities, in chain order."""
    query = sa.select(SendLog).where(SendLog.logged_at >= start, SendLog.logged_at < end)
    if account_code:
        query = query.where(SendLog.account_code == account_code)
    yield from session.scalars(query.order_by(SendLog.seq).execution_options(yield_per=2000))
