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


def check_books(main: Path) -> list[str]:
    """Everything beancount's checker (bean-check) reports, as readable lines; empty when clean."""
    if not Path(main).exists():
        return [f"账簿文件不存在：{main}"]
    from ledger.books import Books

    _, errors, _ = loader.load_file(str(main))
    return Books(Path(main).parent).tampered() + [
        f"{e.source.get('filename', '?')}:{e.source.get('lineno', '?')}: {e.message}" if e.source else e.message for e in errors
    ]


def ledger_balances(main: Path) -> dict[str, Decimal]:
    """Balance of every account in the books (CNY), from the loaded, checked entries."""
    if not Path(main).exists():
        return {}
    entries, _, _ = loader.load_file(str(main))
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for entry in entries:
        if isinstance(entry, data.Transaction):
            for posting in entry.postings:
                # Every posting the writer makes has units; the checker fills in elided ones.
                if posting.units is not None and posting.units.number is not None:
                    totals[posting.account] += posting.units.number
    return dict(totals)


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
