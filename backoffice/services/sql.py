"""The little dialect-specific SQL the services need (SQLite embedded, PostgreSQL scaled out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def insert_ignoring_conflict(session: Session, table: sa.Table, values: dict[str, Any], conflict_columns: list[str]) -> sa.Insert:
    """`INSERT … ON CONFLICT (columns) DO NOTHING` for the session's database: a concurrent
    insert of the same key waits for the other transaction, then inserts nothing."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict_columns)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict_columns)
    raise NotImplementedError(f"no ON CONFLICT support for {dialect}")


def upsert(
    session: Session, table: sa.Table, values: dict[str, Any], conflict_columns: list[str], *, newer_by: str | None = None
) -> sa.Insert:
    """`INSERT … ON CONFLICT (columns) DO UPDATE` of every other given column: the last writer
    wins, or with `newer_by` the row whose value of that column is the greater."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as insert_of
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as insert_of
    else:
        raise NotImplementedError(f"no ON CONFLICT support for {dialect}")
    statement = insert_of(table).values(**values)
    changed = {name: statement.excluded[name] for name in values if name not in conflict_columns}
    where = table.c[newer_by] < statement.excluded[newer_by] if newer_by else None
    return statement.on_conflict_do_update(index_elements=conflict_columns, set_=changed, where=where)


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exact (no float)."""
    return (moment - EPOCH) // timedelta(microseconds=1)
