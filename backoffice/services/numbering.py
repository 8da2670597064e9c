"""Gapless numbering (contracts, accounts, later invoices): the counter row is bumped with one
atomic UPDATE inside the caller's transaction, so a rollback gives the number back and two
concurrent issuers can never get the same one."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.models import DocumentSequence


def next_number(session: Session, series: str, year: int) -> int:
    table = DocumentSequence.__table__
    bumped = session.execute(
        sa.update(table)
        .where(table.c.series == series, table.c.year == year)
        .values(last_value=table.c.last_value + 1)
        .returning(table.c.last_value)
    ).scalar_one_or_none()
    if bumped is not None:
        return int(bumped)
    # First number of the series/year: insert; a concurrent first insert fails on the primary
    # key, and the retry then takes the UPDATE path.
    try:
        with session.begin_nested():
            session.execute(sa.insert(table).values(series=series, year=year, last_value=1))
        return 1
    except sa.exc.IntegrityError:
        return next_number(session, series, year)
