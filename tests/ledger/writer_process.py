"""A separate process that posts events to the books: the subject of the kill and
concurrency tests. Usage: python -m tests.ledger.writer_process BOOKS PREFIX COUNT BATCH"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

from ledger import Books, Event


def events(prefix: str, count: int) -> list[Event]:
    return [
        Event(f"{prefix}-{i}", "usage", date(2026, 1, 1) + timedelta(days=i % 60),
              {"lines": [{"account_code": f"E{n:06d}", "carrier": "CMCC", "messages": 10, "amount": "0.35"} for n in range(1, 21)]})
        for i in range(count)
    ]  # fmt: skip


def main() -> None:
    root, prefix, count, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    todo = events(prefix, count)
    books = Books(root)
    for start in range(0, count, batch):
        books.post(todo[start : start + batch])
    print("done", flush=True)


if __name__ == "__main__":
    main()
