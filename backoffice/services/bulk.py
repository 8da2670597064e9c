"""Inserting a request's rows (1,000 messages, 1,000 send-log lines) in one executemany.

SQLAlchemy converts every parameter of every row through its column type: Money to integer
units, aware datetimes to naive UTC and then to SQLite's text form, and so on. For 1,000 rows of
22 columns that conversion is most of the cost of the insert, although the rows of one request
share most of their values (times, price, content, status). Here each distinct value of a
column is converted once, by the converters SQLAlchemy itself would use
(`TypeEngine.bind_processor` of the dialect), and the rows go to the driver's executemany.

Only for drivers with positional parameters (SQLite); elsewhere SQLAlchemy's own executemany
(psycopg batches natively)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class _Plan:
    sql: str
    keys: tuple[str, ...]  # in parameter order
    converters: tuple[Callable[[Any], Any] | None, ...]
    defaults: tuple[tuple[int, Any], ...]  # (position, value) of columns the rows leave to their default


_plans: dict[tuple[str, str, tuple[str, ...]], _Plan] = {}


def _plan(dialect: sa.Dialect, table: sa.Table, given: tuple[str, ...]) -> _Plan:
    key = (dialect.name, table.name, given)
    plan = _plans.get(key)
    if plan is None:
        compiled = sa.insert(table).compile(dialect=dialect, column_keys=list(given))
        assert compiled.positiontup is not None
        keys = tuple(compiled.positiontup)
        defaults = []
        for position, name in enumerate(keys):
            if name in given:
                continue
            default = table.c[name].default
            if default is None or not default.is_scalar:  # a callable default would need calling per row
                raise ValueError(f"{table.name}.{name}: give a value in every row")
            defaults.append((position, default.arg))  # type: ignore[attr-defined]
        converters = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in keys)
        plan = _plans[key] = _Plan(str(compiled), keys, converters, tuple(defaults))
    return plan


def insert_rows(session: Session, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (each with the same keys) in the session's transaction, as
    `session.execute(sa.insert(table), rows)` would."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    if not dialect.positional:
        session.execute(sa.insert(table), list(rows))
        return
    plan = _plan(dialect, table, tuple(rows[0]))
    template: list[Any] = [None] * len(plan.keys)
    for position, value in plan.defaults:
        convert = plan.converters[position]
        template[position] = convert(value) if convert else value
    plain = [(position, name) for position, name in enumerate(plan.keys) if name in rows[0] and plan.converters[position] is None]
    typed = [
        (position, name, convert, {})
        for position, (name, convert) in enumerate(zip(plan.keys, plan.converters, strict=True))
        if name in rows[0] and convert is not None
    ]
    parameters = []
    for row in rows:
        values = template.copy()
        for position, name in plain:
            values[position] = row[name]
        for position, name, convert, seen in typed:
            # Equal values convert equally (equal Decimals, the same instant in any time zone).
            value = row[name]
            try:
                values[position] = seen[value]
            except KeyError:
                values[position] = seen[value] = convert(value)
            except TypeError:  # not hashable
                values[position] = convert(value)
        parameters.append(tuple(values))
    connection.exec_driver_sql(plan.sql, parameters)
