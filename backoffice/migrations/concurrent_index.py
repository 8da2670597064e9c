"""What the migrations that build an index on a large PostgreSQL table share. Revisions already
run call it: change it only in ways every one of them still wants."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op


def _invalid(index: str) -> bool:
    """Whether the index is there INVALID (what an interrupted concurrent build leaves)."""
    found = op.get_bind().execute(
        sa.text("SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :name AND NOT i.indisvalid"),
        {"name": index},
    )
    return found.first() is not None


def build_index_concurrently(name: str, table: str, columns: list[str], where: str | None = None) -> None:
    """PostgreSQL, inside `op.get_context().autocommit_block()`: build the index CONCURRENTLY, so
    intake and the workers go on writing the table meanwhile. A concurrent build that was
    interrupted leaves the index INVALID (kept up to date, never read) and its revision
    unrecorded: it is built again rather than failed on or taken for done. (`--sql` has no
    database to ask: the script drops whatever an interrupted run left.)"""
    if context.is_offline_mode() or _invalid(name):
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    partial = {} if where is None else {"postgresql_where": sa.text(where)}  # (a partial index: only rows where `where` holds)
    op.create_index(name, table, columns, postgresql_concurrently=True, if_not_exists=True, **partial)
