"""Checking the books: beancount's own checker, account balances, and reconciliation with the
balances the application holds (passed in by the caller: this package knows no database)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from beancount import loader
from beancount.core import data

from ledger.chart import CURRENCY, OPENING_DATE
from ledger.events import posting_totals

if TYPE_CHECKING:
    from ledger.books import Books

CHECK_DIR = ".check"  # the month summaries; never part of the books
SUMMARIES = "months.json"
CARRIED = "Equity:CarriedForward"
# Bump when the way a month is checked changes, so stored summaries are not trusted across it.
SUMMARY_VERSION = "2"


class Inspection(NamedTuple):
    """What a check of the books found."""

    problems: list[str]  # what is wrong with the books
    balances: dict[str, Decimal]  # every account's
    notes: list[str]  # what the check went without (a disk that takes no writes); its result stands


def _load(source: Path | str, where: Callable[[int], tuple[str, int]] | None = None) -> tuple[list[data.Directive], list[str]]:
    """Load a file, or beancount text (whose includes are absolute paths); `where` turns a line
    of that text into the file and line it came from."""
    # positional: (log_timings, extra_validations, encoding); no pickle cache, ever
    entries, errors, _ = loader._load([(str(source), True) if isinstance(source, Path) else (source, False)], None, None, None)
    messages = []
    for e in errors:
        if not e.source:
            messages.append(e.message)
            continue
        filename, lineno = e.source.get("filename", "?"), e.source.get("lineno", "?")
        if where is not None and filename == "<string>" and isinstance(lineno, int):
            filename, lineno = where(lineno)
        messages.append(f"{filename}:{lineno}: {e.message}")
    return entries, messages


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _month_start(name: str) -> date:
    """`2026/2026-11.beancount` -> 2026-11-01."""
    year, month = Path(name).stem.split("-")
    return date(int(year), int(month), 1)


def _include(path: Path) -> str:
    quoted = str(path.absolute()).replace("\\", "\\\\").replace('"', '\\"')
    return f'include "{quoted}"\n'


class _Piece(NamedTuple):
    """A file's text as read under the lock, or None for a file that was not there."""

    path: Path
    text: str | None


class _Snapshot(NamedTuple):
    """What a check needs from the books, read under their lock in one go."""

    problems: list[str]  # files changed outside the writer
    header: str  # main.beancount's options, before its first include
    chart: _Piece
    months: list[tuple[str, _Piece]]  # in main's order


def _check_month(
    header: str, chart: _Piece, name: str, month: _Piece, opening: Mapping[str, Decimal]
) -> tuple[list[str], dict[str, Decimal]]:
    """Load one month on its own, opened with the balances carried forward from all months
    before it (one transaction, flag "C"), so its balance assertions are checked against the
    whole history; return beancount's errors and the month's own postings per account.

    Everything is text in memory, read under the books' lock (`_read_snapshot`): the month and
    the chart as they were then, whatever a writer appended since (the lock is not held while
    beancount loads), and no probe file beside the books (writing one made the check die on a
    full or read-only disk; found by a review). Errors name the files and lines they would have
    named had the files been included (a file that was not there is included, to be reported as such)."""
    synthetic = [f"{OPENING_DATE} open {CARRIED}\n"]
    if any(opening.values()):
        day = _month_start(name) - timedelta(days=1)
        synthetic.append(f'{day} C "承前页：以前月份余额结转"\n')
        synthetic += [f"  {account}  {amount} {CURRENCY}\n" for account, amount in sorted(opening.items()) if amount]
        synthetic.append(f"  {CARRIED}  {-sum(opening.values(), Decimal(0))} {CURRENCY}\n")

    def as_read(piece: _Piece) -> tuple[Path | None, str]:
        return (None, _include(piece.path)) if piece.text is None else (piece.path, piece.text)

    pieces = [(None, header), as_read(chart), (None, "".join(synthetic)), as_read(month)]
    text, starts = "", []  # starts: (first line of the piece in `text`, its file)
    line = 1
    for path, part in pieces:
        if part and not part.endswith("\n"):
            part += "\n"
        starts.append((line, path))
        text += part
        line += part.count("\n")

    def where(lineno: int) -> tuple[str, int]:
        first, path = max((s for s in starts if s[0] <= lineno), key=lambda s: s[0], default=(1, None))
        return ("<string>", lineno) if path is None else (str(path.absolute()), lineno - first + 1)

    entries, errors = _load(text, where)
    totals = posting_totals(e for e in entries if getattr(e, "flag", None) != "C")
    totals.pop(CARRIED, None)
    return errors, totals


def inspect_books(main: Path, *, while_locked: Callable[[], object] | None = None) -> Inspection:
    """Everything beancount's checker (bean-check) reports on the books, plus files changed
    outside the writer, as readable lines; the balance of every account; and notes on what the
    check went without on a disk that takes no writes (the lock, the stored summaries).

    Equivalent to loading `main` once (tested), but month by month, each month opened with the
    balances the months before it carry forward. A month's result (its errors and postings) is
    kept in `.check/months.json` under a key made of the SHA-256 of the month's text, the chart,
    the options and its opening balances: a month is checked again only when one of those
    changed (a back-dated event changes its month and the openings of all later ones). The
    latest month is always checked afresh. So a year costs one month's load on a routine day,
    two after the month turns over, and the whole year only once, after a rebuild.

    Holds the books' lock shared while it reads them, and only then: a write half done (the
    manifest read before it, a file hashed after it) was reported as a file edited by hand
    (found by a review). Beancount then checks the texts read, with the lock given back, so
    writers wait for a read of the files, not for the check (which took seconds, and half a
    minute after a rebuild, with every confirmation and posting waiting).

    `while_locked` runs with the lock still held, after the files are read: what the books are
    compared with must be read at that moment too (the database's balances and pending events:
    read after the check, they counted a receipt posted meanwhile that the texts did not have,
    and the books were reported out of step with nothing pending; found by a review)."""
    main = Path(main)
    if not main.exists():
        return Inspection([f"账簿文件不存在：{main}"], {}, [])
    from ledger.books import Books

    books = Books(main.parent)
    with books.locked(shared=True) as notes:
        snapshot = _read_snapshot(main, books)
        if while_locked is not None:
            while_locked()
        if not snapshot.months:  # books with no month yet: nothing worth releasing the lock for
            entries, found = _load(main)
            return Inspection(snapshot.problems + found, posting_totals(entries), notes)
    problems, balances, more = _inspect(main, snapshot)
    return Inspection(problems, balances, notes + more)


def _read_snapshot(main: Path, books: Books) -> _Snapshot:
    from ledger.books import ACCOUNTS, LedgerWriteError

    try:
        problems = books.tampered()
    except LedgerWriteError as damaged:  # the manifest: a finding, and beancount still checks the books
        problems = [str(damaged)]

    def piece(path: Path) -> _Piece:
        return _Piece(path, path.read_text(encoding="utf-8") if path.exists() else None)

    months = [(name, piece(main.parent / name)) for name in books.included_months()]
    header = main.read_text(encoding="utf-8").split('include "', 1)[0]
    return _Snapshot(problems, header, piece(main.parent / ACCOUNTS), months)


def _inspect(main: Path, snapshot: _Snapshot) -> Inspection:
    header, months = snapshot.header, snapshot.months
    chart_text = snapshot.chart.text or ""
    store = main.parent / CHECK_DIR / SUMMARIES
    try:
        summaries: dict[str, Any] = json.loads(store.read_text(encoding="utf-8")) if store.exists() else {}
    except ValueError:
        summaries = {}
    kept: dict[str, Any] = {}
    balances: dict[str, Decimal] = {}
    errors: list[str] = []
    for index, (name, month) in enumerate(months):
        text = month.text or ""
        opening = "".join(f"{a}={v}\n" for a, v in sorted(balances.items()) if v)
        key = _digest(SUMMARY_VERSION, header, name, text, opening)
        known: dict[str, Any] | None = summaries.get(name)
        # The chart only grows (accounts are opened, never closed or edited): a month that was
        # clean with the chart as it was stays clean with accounts appended to it. A month with
        # errors is checked again whenever the chart changed at all.
        chart_used = chart_text[: known["chart_length"]] if known is not None else ""
        same_chart = known is not None and _digest(chart_used) == known["chart"] and (chart_used == chart_text or not known["errors"])
        if known is not None and known["key"] == key and same_chart and index < len(months) - 1:
            month_errors = list(known["errors"])
            totals = {a: Decimal(v) for a, v in known["totals"].items()}
        else:
            month_errors, totals = _check_month(header, snapshot.chart, name, month, balances)
            chart_used = chart_text
        kept[name] = {
            "key": key,
            "chart": _digest(chart_used),
            "chart_length": len(chart_used),
            "errors": month_errors,
            "totals": {a: str(v) for a, v in totals.items()},
        }
        errors += [e for e in month_errors if e not in errors]
        for account, amount in totals.items():
            balances[account] = balances.get(account, Decimal(0)) + amount
    notes = [] if (unsaved := _save_summaries(store, kept)) is None else [unsaved]
    return Inspection(snapshot.problems + errors, {a: v for a, v in balances.items() if a != CARRIED}, notes)


def _save_summaries(store: Path, summaries: Mapping[str, Any]) -> str | None:
    """Keep the month summaries for the next check; a note if the disk takes no writes. They
    only spare the next check work: this one's result stands without them."""
    from ledger.books import write_failure

    tmp: str | None = None
    try:
        store.parent.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=store.parent, prefix=".months-", delete=False) as out:
            tmp = out.name
            out.write(json.dumps(summaries, sort_keys=True))
        os.replace(tmp, store)
    except OSError as error:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return f"月份检查结果无法保存到 {store}（{write_failure(error)}）：本次在内存中逐月检查，结果不受影响"
    return None


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
