"""The one writer of the books: a cross-process lock, beancount's own printer, atomic file
replacement (a crash mid-write leaves the previous, valid file) and a re-parse of what it wrote."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

from beancount.core import data
from beancount.parser import parser, printer

from ledger import chart
from ledger.events import Event, transaction_for

MAIN = "main.beancount"
ACCOUNTS = "accounts.beancount"
_EVENT_ID = re.compile(r'^\s+event_id: "([^"]+)"', re.MULTILINE)
_OPEN = re.compile(r"^\d{4}-\d\d-\d\d open (\S+)", re.MULTILINE)


class LedgerWriteError(RuntimeError):
    """The books could not be written consistently; nothing was changed."""


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _month_file(day: date) -> str:
    return f"{day:%Y}/{day:%Y-%m}.beancount"


class Books:
    """The books under one folder: `main.beancount` includes the chart and one file per month."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.main = self.root / MAIN

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise writers across processes (flock on a lock file beside the books)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, name: str) -> str:
        path = self.root / name
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def _ensure_main(self) -> None:
        if self.main.exists():
            return
        header = (
            'option "title" "短信业务账簿"\n'
            f'option "operating_currency" "{chart.CURRENCY}"\n'
            'option "inferred_tolerance_default" "CNY:0.00005"\n\n'
            f'include "{ACCOUNTS}"\n'
        )
        opens = "".join(f"{chart.OPENING_DATE} open {a} {chart.CURRENCY}\n" for a in chart.STATIC_ACCOUNTS)
        _atomic_write(self.root / ACCOUNTS, opens)
        _atomic_write(self.main, header)

    def included_months(self) -> list[str]:
        return re.findall(r'^include "(\d{4}/[^"]+)"', self._read(MAIN), re.MULTILINE)

    def posted_event_ids(self) -> set[str]:
        """Every event id already in the books (scans the month files)."""
        ids: set[str] = set()
        for name in self.included_months():
            ids.update(_EVENT_ID.findall(self._read(name)))
        return ids

    def post(self, events: Iterable[Event]) -> list[str]:
        """Append the transactions of the events not yet in the books; returns the ids posted.

        Events already present (a replay, or a crash after writing but before the database
        noted it) are skipped. Raises PostingRuleError or LedgerWriteError and writes nothing
        if any event cannot be posted."""
        events = list(events)
        if not events:
            return []
        with self.locked():
            self._ensure_main()
            transactions = [(e, transaction_for(e)) for e in events]
            months: dict[str, list[data.Transaction]] = {}
            opened = set(_OPEN.findall(self._read(ACCOUNTS)))
            new_opens: list[data.Open] = []
            posted: list[str] = []
            present: dict[str, set[str]] = {}
            for event, txn in transactions:
                name = _month_file(event.occurred_on)
                if name not in present:
                    present[name] = set(_EVENT_ID.findall(self._read(name)))
                if event.event_id in present[name]:
                    continue
                present[name].add(event.event_id)
                for posting in txn.postings:
                    if posting.account not in opened:
                        opened.add(posting.account)
                        meta = data.new_metadata("<ledger>", 0)
                        new_opens.append(data.Open(meta, txn.date, posting.account, [chart.CURRENCY], None))
                months.setdefault(name, []).append(txn)
                posted.append(event.event_id)
            if not posted:
                return []
            self._write(months, new_opens)
            return posted

    def _write(self, months: dict[str, list[data.Transaction]], opens: list[data.Open]) -> None:
        chunks = {name: "".join("\n" + printer.format_entry(t) for t in txns) for name, txns in months.items()}
        open_text = "".join(printer.format_entry(o) for o in opens)
        # Re-parse what we are about to write: the printer must produce what the parser reads.
        for text in [open_text, *chunks.values()]:
            entries, errors, _ = parser.parse_string(text)
            if errors:
                raise LedgerWriteError(f"rendered entries do not parse: {errors[0].message}")
        # Order matters for a crash: accounts first, then months, then the include in main.
        # A crash in between leaves opened-but-unused accounts or an un-included file: both valid.
        if open_text:
            _atomic_write(self.root / ACCOUNTS, self._read(ACCOUNTS) + open_text)
        for name, chunk in chunks.items():
            _atomic_write(self.root / name, self._read(name) + chunk)
        included = set(self.included_months())
        missing = sorted(set(chunks) - included)
        if missing:
            main = self._read(MAIN)
            _atomic_write(self.main, main + "".join(f'include "{m}"\n' for m in missing))
