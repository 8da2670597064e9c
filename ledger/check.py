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

from ledger.events import posting_totals

CHECK_DIR = ".check"  # generated load files and beancount's cache; never part of the books
CARRIED = "Equity:CarriedForward"


def _load(path: Path, *, cached: bool) -> tuple[list[data.Directive], list[str]]:
    load = loader.load_file if cached else loader._uncached_load_file
    if cached:
        entries, errors, _ = load(str(path))
    else:  # positional: (log_timings, extra_validations, encoding)
        entries, errors, _ = load(str(path), None, None, None)
    messages = [f"{e.source.get('filename', '?')}:{e.source.get('lineno', '?')}: {e.message}" if e.source else e.message for e in errors]
    return entries, messages


def inspect_books(main: Path) -> tuple[list[str], dict[str, Decimal]]:
    """Everything beancount's checker (bean-check) reports on the books, plus files changed
    outside the writer, as readable lines; and the balance of every account.

    Equivalent to loading `main` once, but in two parts so a large year stays quick: the closed
    months (all but the latest) through beancount's pickle cache, which stays valid until one of
    those files changes (a back-dated event, or an edit the manifest also reports); and the
    latest month uncached, on its own, opened with the balances the closed months carry forward
    (so its balance assertions are checked against the whole history)."""
    main = Path(main)
    if not main.exists():
        return [f"账簿文件不存在：{main}"], {}
    from ledger.books import ACCOUNTS, Books

    books = Books(main.parent)
    problems = books.tampered()
    months = books.included_months()
    if len(months) < 2:
        entries, errors = _load(main, cached=False)
        return problems + errors, posting_totals(entries)
    header = main.read_text(encoding="utf-8").split('include "', 1)[0]
    work = main.parent / CHECK_DIR
    work.mkdir(exist_ok=True)
    closed = work / "closed.beancount"
    # The writer's hashes of the closed files, in a comment: when the writer changes a closed
    # month (a back-dated event) this file changes too, which invalidates beancount's cache
    # even where the month file's size and mtime look unchanged. An edit by hand is reported
    # by the manifest check above.
    manifest = books.manifest()
    stamp = ",".join(f"{m}={manifest.get(m, ['?'])[-1]}" for m in months[:-1])
    closed_text = (
        f"; closed months: {stamp}\n" + header + f'include "../{ACCOUNTS}"\n' + "".join(f'include "../{m}"\n' for m in months[:-1])
    )
    if not closed.exists() or closed.read_text(encoding="utf-8") != closed_text:
        closed.write_text(closed_text, encoding="utf-8")
    closed_entries, closed_errors = _load(closed, cached=True)
    carried = posting_totals(closed_entries)
    # The latest month alone: one carried-forward transaction (flag "C") with every balance.
    opening_day = min((e.date for e in closed_entries if isinstance(e, data.Transaction)), default=None)
    current = work / "current.beancount"
    lines = [header, f'include "../{ACCOUNTS}"\n', f"2000-01-01 open {CARRIED}\n"]
    if carried and opening_day is not None:
        last = max(e.date for e in closed_entries if isinstance(e, data.Transaction))
        lines.append(f'{last} C "承前页：已结月份余额结转"\n')
        lines += [f"  {account}  {amount} CNY\n" for account, amount in sorted(carried.items()) if amount]
        lines.append(f"  {CARRIED}  {-sum(carried.values(), Decimal(0))} CNY\n")
    lines.append(f'include "../{months[-1]}"\n')
    current.write_text("".join(lines), encoding="utf-8")
    current_entries, current_errors = _load(current, cached=False)
    totals = defaultdict(Decimal, carried)
    for account, amount in posting_totals(e for e in current_entries if getattr(e, "flag", None) != "C").items():
        totals[account] += amount
    totals.pop(CARRIED, None)
    errors = closed_errors + [e for e in current_errors if e not in closed_errors]
    return problems + errors, dict(totals)


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
