"""The intake's statements on the driver: a request's rows in one executemany, and the dozen
single statements every request runs while it holds SQLite's only write lock.

SQLAlchemy converts every parameter of every row through its column type: Money to integer
units, aware datetimes to naive UTC and then to SQLite's text form, and so on. For 1,000 rows of
22 columns that conversion is most of the cost of the insert, although the rows of one request
share most of their values (times, price, content, status). Here each distinct value of a
column is converted once, by the converters SQLAlchemy itself would use
(`TypeEngine.bind_processor` of the dialect), and the rows go to the driver's executemany.

`Prepared` does the same for one statement: SQLAlchemy's execution of a cached statement
(parameters, execution context, result object) costs 20–30 µs here, the SQLite driver 3–5 µs,
and a single-message request runs a dozen statements with the write lock held, which every other
request waits for. The statement is compiled once per dialect by SQLAlchemy, its parameters and
results converted by the types' own processors, and it runs on the DBAPI cursor of the session's
connection, in the session's transaction (the driver's errors raised as SQLAlchemy's). The dispatcher
uses it for its per-turn statements too.

On PostgreSQL `insert_rows` sends many rows through COPY … FROM STDIN (psycopg's executemany
sends one INSERT per row, even pipelined ~0.07 ms each: 70 ms for a request of 1,000), and
`Prepared` runs its compiled SQL through `Connection.exec_driver_sql`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session


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


#: PostgreSQL: from this many rows on, COPY (two round trips to the server, then a few µs a
#: row); fewer go as a pipelined executemany (one round trip, ~0.07 ms a row).
COPY_MIN_ROWS = 32


def insert_rows(session: Session, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (each with the same keys) in the session's transaction, as
    `session.execute(sa.insert(table), rows)` would."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        _copy_rows(connection, table, rows)
        return
    if not dialect.positional:
        session.execute(sa.insert(table), list(rows))
        return
    plan = _plan(dialect, table, tuple(rows[0]))
    template: list[Any] = [None] * len(plan.keys)
    for position, value in plan.defaults:
        convert = plan.converters[position]
        template[position] = convert(value) if convert else value
    given = [(position, name) for position, name in enumerate(plan.keys) if name in rows[0]]
    typed = _typed([convert if name in rows[0] else None for name, convert in zip(plan.keys, plan.converters, strict=True)])
    parameters = []
    for row in rows:
        values = template.copy()
        for position, name in given:
            values[position] = row[name]
        _convert(values, typed)
        parameters.append(tuple(values))
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with _as_sqlalchemy_errors(connection, plan.sql, parameters):
        cursor.executemany(plan.sql, parameters)  # in the session's transaction, as exec_driver_sql would, without its overhead


def _copy_rows(connection: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """PostgreSQL: `rows` through COPY … FROM STDIN (psycopg), in the connection's transaction,
    values converted as SQLAlchemy would (its types' bind processors, each distinct value once);
    a column the rows leave out gets its scalar default, as `sa.insert` would give it."""
    dialect = connection.dialect
    given = tuple(rows[0])
    left_out = []
    for column in table.columns:
        if column.key in given or column.default is None:
            continue
        if not column.default.is_scalar:
            raise ValueError(f"{table.name}.{column.key}: give a value in every row")
        left_out.append((column.key, column.default.arg))  # type: ignore[attr-defined]
    keys = (*given, *(key for key, _ in left_out))
    converters = [table.c[key].type.dialect_impl(dialect).bind_processor(dialect) for key in keys]
    tail = [convert(value) if convert else value for (_, value), convert in zip(left_out, converters[len(given) :], strict=True)]
    quote = dialect.identifier_preparer
    sql = f"COPY {quote.format_table(table)} ({', '.join(quote.quote(table.c[key].name) for key in keys)}) FROM STDIN"
    typed = _typed(converters[: len(given)])
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor, _as_sqlalchemy_errors(connection, sql, None), cursor.copy(sql) as copy:
        for row in rows:
            values = [row[key] for key in given]
            _convert(values, typed)
            copy.write_row(values + tail)


_Typed = list[tuple[int, Callable[[Any], Any], dict[Any, Any]]]


def _typed(converters: Sequence[Callable[[Any], Any] | None]) -> _Typed:
    """(position, converter, cache of its conversions) of the positions that have a converter."""
    return [(position, convert, {}) for position, convert in enumerate(converters) if convert is not None]


def _convert(values: list[Any], typed: _Typed) -> None:
    """Convert a row's values in place. Equal values of one type convert equally (equal Decimals,
    the same instant in any time zone), so each is converted once per insert; the type is part of
    the key, so a float equal to a Decimal seen before still reaches Money's refusal of floats."""
    for position, convert, seen in typed:
        value = values[position]
        key = (value.__class__, value)
        try:
            values[position] = seen[key]
        except KeyError:
            values[position] = seen[key] = convert(value)
        except TypeError:  # not hashable
            values[position] = convert(value)


@contextmanager
def _as_sqlalchemy_errors(connection: sa.Connection, sql: str, values: Any) -> Iterator[None]:
    """The driver's errors as SQLAlchemy raises them (sa.exc.OperationalError for "database is
    locked", sa.exc.IntegrityError …), so callers and error handlers see what they would have:
    without the parameters when the engine hides them (a review found messages' texts in the log)."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as error:
        hide = connection.engine.hide_parameters
        raise sa.exc.DBAPIError.instance(sql, values, error, dbapi.Error, hide_parameters=hide, dialect=connection.dialect) from error


_UNSET = object()


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Per parameter, in order: (name given by the caller, converter) or (None, value fixed in the statement)
    parameters: tuple[tuple[str | None, Any], ...]
    names: tuple[str, ...] | None  # the parameters' names in the SQL (named paramstyles); None: positional
    results: tuple[Callable[[Any], Any] | None, ...]  # per result column


class Prepared:
    """A Core statement run on the driver (see the module docstring). Its parameters are
    `sa.bindparam` names the caller gives; every other value is fixed in the statement. It is
    compiled as written, whatever the names of the parameters given: SQLAlchemy's own execution
    would read a parameter named like a column of an INSERT or UPDATE as a value to set."""

    __slots__ = ("statement", "_compiled")

    def __init__(self, statement: sa.Executable) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, dialect: sa.Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        if compiled.escaped_bind_names:  # type: ignore[attr-defined]
            raise ValueError(f"parameter names that need escaping: {sorted(compiled.escaped_bind_names)}")  # type: ignore[attr-defined]
        # Columns left to a Python-side default (INSERT) or onupdate (UPDATE): constants only,
        # SQLAlchemy would call a callable one on each execution.
        fixed: dict[str, Any] = {}
        for columns, attribute in ((compiled.insert_prefetch, "default"), (compiled.update_prefetch, "onupdate")):  # type: ignore[attr-defined]
            for column in columns:
                default = getattr(column, attribute)
                if not default.is_scalar:
                    raise ValueError(f"{column.name}: give a value, its {attribute} is computed per execution")
                fixed[column.key] = default.arg
        binds = compiled.binds  # type: ignore[attr-defined]
        order = tuple(compiled.positiontup) if compiled.positiontup is not None else tuple(binds)
        parameters: list[tuple[str | None, Any]] = []
        for name in order:
            bind = binds[name]
            if bind.expanding or bind.literal_execute:
                raise ValueError(f"{name}: IN lists are rendered per execution, use SQLAlchemy for them")
            if bind.callable is not None:
                raise ValueError(f"{name}: its value is computed per execution, use SQLAlchemy for it")
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key in fixed:
                value = fixed[bind.key]
                parameters.append((None, convert(value) if convert else value))
            elif bind.required:
                parameters.append((bind.key, convert))
            else:
                value = bind.effective_value
                parameters.append((None, convert(value) if convert else value))
        results: tuple[Callable[[Any], Any] | None, ...] = ()
        columns = getattr(self.statement, "exported_columns", None)
        if columns is not None:
            results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        names = None if compiled.positiontup is not None else order
        plan = self._compiled[dialect.name] = _Compiled(str(compiled), tuple(parameters), names, results)
        return plan

    def _plan(self, session: Session | scoped_session[Session] | sa.Connection) -> tuple[sa.Connection, _Compiled]:
        connection = session if isinstance(session, sa.Connection) else session.connection()
        plan = self._compiled.get(connection.dialect.name)
        if plan is None:
            plan = self._compile(connection.dialect)
        return connection, plan

    @staticmethod
    def _values(plan: _Compiled, params: Mapping[str, Any]) -> Any:
        values = [value if name is None else value(params[name]) if value else params[name] for name, value in plan.parameters]
        return values if plan.names is None else dict(zip(plan.names, values, strict=True))

    @staticmethod
    def _values_many(plan: _Compiled, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """`_values` of each row; a parameter given the same object as in the row before is not
        converted again (the rows of one turn share its timestamp: its conversion to text was a
        tenth of the dispatcher's time per message)."""
        last: list[Any] = [_UNSET] * len(plan.parameters)
        converted: list[Any] = [None] * len(plan.parameters)
        out = []
        for row in rows:
            values = []
            for i, (name, value) in enumerate(plan.parameters):
                if name is None:
                    values.append(value)
                    continue
                given = row[name]
                if value is None:
                    values.append(given)
                elif given is last[i]:
                    values.append(converted[i])
                else:
                    last[i], converted[i] = given, value(given)
                    values.append(converted[i])
            out.append(values if plan.names is None else dict(zip(plan.names, values, strict=True)))
        return out

    def _run(self, session: Session | scoped_session[Session] | sa.Connection, params: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        connection, plan = self._plan(session)
        values = self._values(plan, params)
        if plan.names is not None:  # psycopg: through SQLAlchemy's driver-level execution (its events and errors)
            result = connection.exec_driver_sql(plan.sql, values)
            return plan, result.fetchall() if plan.results else result
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with _as_sqlalchemy_errors(connection, plan.sql, values):
            cursor.execute(plan.sql, values)
            if plan.results:  # a SELECT or RETURNING: its rows now (an UPDATE … RETURNING can fail while they are read)
                return plan, cursor.fetchall()
        return plan, cursor

    def executemany(self, session: Session | scoped_session[Session] | sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per row of parameters, in the session's transaction (no RETURNING)."""
        if not rows:
            return
        connection, plan = self._plan(session)
        values = self._values_many(plan, rows)
        if plan.names is not None:
            connection.exec_driver_sql(plan.sql, values)
            return
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with _as_sqlalchemy_errors(connection, plan.sql, values):
            cursor.executemany(plan.sql, values)

    def rowcount(self, session: Session | scoped_session[Session] | sa.Connection, params: Mapping[str, Any]) -> int:
        """Run it in the session's transaction; the rows it changed (no RETURNING)."""
        result = self._run(session, params)[1]
        return len(result) if isinstance(result, list) else int(result.rowcount)

    def rows(self, session: Session | scoped_session[Session] | sa.Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run it in the session's transaction; every result row, converted by the columns' types."""
        plan, result = self._run(session, params)
        converters = [(i, convert) for i, convert in enumerate(plan.results) if convert is not None]
        if not converters:
            return [tuple(raw) for raw in result]
        out = []
        for raw in result:
            row = list(raw)
            for i, convert in converters:
                row[i] = convert(row[i])
            out.append(tuple(row))
        return out

    def first(self, session: Session | scoped_session[Session] | sa.Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        found = self.rows(session, params)
        return found[0] if found else None

    def scalar(self, session: Session | scoped_session[Session] | sa.Connection, params: Mapping[str, Any]) -> Any:
        row = self.first(session, params)
        return None if row is None else row[0]
