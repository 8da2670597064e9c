"""The little dialect-specific SQL the services need (SQLite embedded, PostgreSQL scaled out)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The largest id either database holds (a signed 64-bit integer): a bigger one from a URL or a
#: form finds nothing, it is not sent to the driver (which refuses it with an OverflowError).
MAX_ID = 2**63 - 1
#: The same for the tables whose ids are 32-bit on PostgreSQL (all but messages and their parts).
MAX_INT_ID = 2**31 - 1
#: A rate's timeline (intake's and dispatch's GCRA, in µs since the epoch) this far ahead of the
#: clock can only come from a clock that stepped back (NTP, a VM restored): it starts again from
#: now rather than stopping the account for the length of the step. Anything less (processes'
#: clocks a few ms apart, a turn that read its time before it waited for the lock) is a full rate.
CLOCK_STEP_US = 30_000_000


def _insert_with_conflicts(session: Session, table: sa.Table, values: dict[str, Any]) -> Any:
    """The dialect's own INSERT (the one with ON CONFLICT) of `values`."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        raise NotImplementedError(f"no ON CONFLICT support for {dialect}")
    return dialect_insert(table).values(**values)


def insert_ignoring_conflict(session: Session, table: sa.Table, values: dict[str, Any], conflict_columns: list[str]) -> sa.Insert:
    """`INSERT … ON CONFLICT (columns) DO NOTHING` for the session's database: a concurrent
    insert of the same key waits for the other transaction, then inserts nothing."""
    return _insert_with_conflicts(session, table, values).on_conflict_do_nothing(index_elements=conflict_columns)  # type: ignore[no-any-return]


def inserted_if_absent(session: Session, table: sa.Table, values: dict[str, Any], conflict_columns: list[str]) -> bool:
    """`insert_ignoring_conflict`, run: True when the row went in, False when one with the same
    key was there (or a concurrent insert of it committed first). Told by RETURNING, not the row
    count: psycopg's is -1 for this statement, which read "already there" as inserted."""
    key = next(iter(table.primary_key.columns))
    statement = insert_ignoring_conflict(session, table, values, conflict_columns).returning(key)
    return session.execute(statement).first() is not None


def upsert(
    session: Session, table: sa.Table, values: dict[str, Any], conflict_columns: list[str], *, newer_by: str | None = None
) -> sa.Insert:
    """`INSERT … ON CONFLICT (columns) DO UPDATE` of every other given column: the last writer
    wins, or with `newer_by` the row whose value of that column is the greater."""
    statement = _insert_with_conflicts(session, table, values)
    changed = {name: statement.excluded[name] for name in values if name not in conflict_columns}
    where = table.c[newer_by] < statement.excluded[newer_by] if newer_by else None
    return statement.on_conflict_do_update(index_elements=conflict_columns, set_=changed, where=where)  # type: ignore[no-any-return]


#: PostgreSQL's synchronous_commit levels. "off": a commit returns before its WAL record is
#: flushed to disk; a crash of the server or the machine (not of a client) can lose the last
#: ~0.6 s of commits, each whole, never half of one.
SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")


def synchronous_commit_level(value: str | None) -> str | None:
    """A configured synchronous_commit level, checked; None (empty): the server's own setting."""
    level = (value or "").strip().lower() or None
    if level is not None and level not in SYNCHRONOUS_COMMIT:
        raise ValueError(f"PostgreSQL 没有 synchronous_commit 级别 {value!r}（只能是 {'、'.join(SYNCHRONOUS_COMMIT)} 之一，或留空）")
    return level


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exact (no float)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def begin_snapshot(session: Session, *, after_row_locks_on: sa.Table | None = None) -> None:
    """Begin the session's next transaction as one snapshot of the database: every statement in
    it sees the same commits. For work that reads several tables and must see them as of one
    moment (the nightly balance assertions); it must come before the transaction's first statement.
    `after_row_locks_on`: a table whose row locks (PostgreSQL) are waited for first, every row
    locked FOR SHARE in id order and given back, so the transactions that held one commit first.

    PostgreSQL: REPEATABLE READ. SQLite: BEGIN IMMEDIATE, the write lock from the start (other
    writers wait for its commit). pysqlite begins no transaction before a SELECT, so each read was
    a snapshot of its own, and a charge committed between two made a balance assertion wrong for
    good (found by a review); a deferred BEGIN would fail its first write after any other commit."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return
    current = session() if isinstance(session, scoped_session) else session  # Flask-SQLAlchemy's db.session
    if current.in_transaction():
        raise RuntimeError("begin_snapshot: the session's transaction has already begun")
    if dialect == "postgresql":
        if after_row_locks_on is not None:
            session.execute(sa.select(after_row_locks_on.c.id).order_by(after_row_locks_on.c.id).with_for_update(read=True)).all()
            session.rollback()  # wrote nothing: gives the locks back
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        session.execute(sa.text("BEGIN IMMEDIATE"))  # (pysqlite then begins nothing itself; commit ends it)


def begin_writing(session: Session) -> None:
    """SQLite: the database's write lock, taken now (BEGIN IMMEDIATE), so that what the
    transaction reads from here on is what it writes over: no other writer commits in between.
    pysqlite begins a transaction only before its first write, so reads before it are each a
    snapshot of their own, and a decision taken on them could overwrite another's commit. A
    transaction that has written already holds the lock; PostgreSQL locks rows instead (nothing
    is done there). May come after reads, unlike `begin_snapshot`."""
    if session.get_bind().dialect.name != "sqlite":
        return
    raw = cast(sqlite3.Connection, session.connection().connection.dbapi_connection)
    if not raw.in_transaction:
        session.execute(sa.text("BEGIN IMMEDIATE"))  # (pysqlite then begins nothing itself; commit ends it)
