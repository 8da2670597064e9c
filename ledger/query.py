"""Read-only queries on the books with beanquery (BQL), and the statements finance reads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import beanquery
from beancount import loader
from beancount.core.inventory import Inventory


class QueryError(ValueError):
    """A BQL query that does not parse or compile; the message says where."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    warnings: list[str] = field(default_factory=list)  # the books did not load cleanly: the rows may be incomplete


def _plain(value: Any) -> Any:
    """Inventories and amounts as text (`1750.00 CNY`); other values as they are."""
    if isinstance(value, Inventory):
        return ", ".join(f"{p.units.number} {p.units.currency}" for p in value) or "0"
    return value


def _connect(main: Path) -> tuple[beanquery.Connection, list[str]]:
    """beanquery on the books as beancount's loader reads them, and what the loader reported.

    Loaded here and handed over, not named in the DSN: beanquery parses `beancount:<path>` as a
    URL, so a path with '#' or '?' was cut short and the query ran on no books at all, and
    what the loader reported was dropped (found by a review). Books with errors (a failed
    balance assertion, say) are still queried: that is when finance needs to look (a review)."""
    # positional: (log_timings, extra_validations, encoding); no pickle cache, ever
    entries, errors, options = loader._uncached_load_file(str(Path(main).resolve()), None, None, None)  # (it asserts an absolute path)
    warnings = []
    if errors:
        first = errors[0]
        where = f"{first.source.get('filename', '?')}:{first.source.get('lineno', '?')}: " if first.source else ""
        warnings.append(f"账簿载入有 {len(errors)} 处错误，结果可能不全，请用 ledger check 核对：{where}{first.message}")
    return beanquery.connect("beancount:", entries=entries, errors=errors, options=options), warnings


#: The statements a finance user may run: reads of the books. beanquery also has CREATE TABLE …
#: USING 'csv:<path>', which opens any file the server can read.
READ_STATEMENTS = ("select", "balances", "journal", "print")


def run_query(main: Path, bql: str) -> QueryResult:
    """Run one read-only BQL query on the books; any failure is a QueryError saying what."""
    text = bql.strip()
    if not text:
        raise QueryError("查询为空")
    if not re.match(rf"(?i)({'|'.join(READ_STATEMENTS)})\b", text):
        raise QueryError("只能运行查询语句：" + "、".join(s.upper() for s in READ_STATEMENTS))
    connection, warnings = _connect(main)
    try:
        cursor = connection.execute(text)
        columns = [c.name for c in cursor.description]
        rows = cursor.fetchall()
    except (beanquery.Error, beanquery.CompilationError, beanquery.ParseError) as exc:
        raise QueryError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - raised while evaluating it (a bad regex, a date, an overflow): the query's fault
        raise QueryError(f"{type(exc).__name__}: {exc}") from None
    return QueryResult(columns, [[_plain(v) for v in row] for row in rows], warnings)


def account_totals(main: Path) -> dict[str, Decimal]:
    """Balance of every account (CNY) from beanquery: the trial balance; QueryError when the
    books do not load."""
    connection, warnings = _connect(main)
    if warnings:
        raise QueryError(warnings[0])
    cursor = connection.execute("SELECT account, sum(number) AS total GROUP BY account ORDER BY account")
    return {account: Decimal(total or 0) for account, total in cursor.fetchall()}


@dataclass(frozen=True)
class Statements:
    """Trial balance, income statement and balance sheet (signs turned for reading: income,
    liabilities and equity shown positive)."""

    trial_balance: list[tuple[str, Decimal]]
    income: list[tuple[str, Decimal]]
    expenses: list[tuple[str, Decimal]]
    assets: list[tuple[str, Decimal]]
    liabilities: list[tuple[str, Decimal]]

    @property
    def net_income(self) -> Decimal:
        return sum((x for _, x in self.income), Decimal(0)) - sum((x for _, x in self.expenses), Decimal(0))

    @property
    def total_debits(self) -> Decimal:
        return sum((x for _, x in self.trial_balance if x > 0), Decimal(0))

    @property
    def total_credits(self) -> Decimal:
        return -sum((x for _, x in self.trial_balance if x < 0), Decimal(0))


def statements(main: Path) -> Statements:
    """The statements from a full load of the books (beanquery)."""
    return statements_of(account_totals(main))


def statements_of(balances: Mapping[str, Decimal]) -> Statements:
    """The statements from the balance of every account, as the month-by-month check gives them
    (`ledger.check.inspect_books`): the books page shows them without loading the year again."""
    totals = {account: balances[account] for account in sorted(balances)}

    def section(root: str, sign: int) -> list[tuple[str, Decimal]]:
        return [(a, sign * x) for a, x in totals.items() if a.split(":", 1)[0] == root and x]

    return Statements(
        trial_balance=[(a, x) for a, x in totals.items() if x],
        income=section("Income", -1),
        expenses=section("Expenses", 1),
        assets=section("Assets", 1),
        liabilities=section("Liabilities", -1),
    )
