"""Checking the books: beancount's own checker, account balances, and reconciliation with the
balances the application holds (passed in by the caller: this package knows no database)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from beancount import loader
from beancount.core import data


def inspect_books(main: Path) -> tuple[list[str], dict[str, Decimal]]:
    """One load of the books: everything beancount's checker (bean-check) reports plus files
    changed outside the writer, as readable lines; and the balance of every account."""
    main = Path(main)
    if not main.exists():
        return [f"账簿文件不存在：{main}"], {}
    from ledger.books import Books

    # Uncached: the writer changes a month file between checks, and a stale pickle cache makes
    # the next load slower than a cold one (it reads the cache, reloads, writes it again).
    entries, errors, _ = loader._uncached_load_file(str(main), None, None, None)  # (log_timings, extra_validations, encoding)
    problems = Books(main.parent).tampered() + [
        f"{e.source.get('filename', '?')}:{e.source.get('lineno', '?')}: {e.message}" if e.source else e.message for e in errors
    ]
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for entry in entries:
        if isinstance(entry, data.Transaction):
            for posting in entry.postings:
                # Every posting the writer makes has units; the checker fills in elided ones.
                if posting.units is not None and posting.units.number is not None:
                    totals[posting.account] += posting.units.number
    return problems, dict(totals)


def check_books(main: Path) -> list[str]:
    """What `inspect_books` finds wrong; empty when clean."""
    return inspect_books(main)[0]


def ledger_balances(main: Path) -> dict[str, Decimal]:
    """Balance of every account in the books (CNY)."""
    return inspect_books(main)[1] if Path(main).exists() else {}


@dataclass(frozen=True)
class Difference:
    account: str
    database: Decimal
    books: Decimal


def reconcile(expected: Mapping[str, Decimal], balances: Mapping[str, Decimal]) -> list[Difference]:
    """Accounts whose books balance differs from what the database says it must be."""
    diffs = []
    for account, want in sorted(expected.items()):
        have = balances.get(account, Decimal(0))
        if have != want:
            diffs.append(Difference(account, want, have))
    return diffs
