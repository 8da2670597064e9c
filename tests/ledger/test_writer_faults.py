"""The writer under faults: killed in the middle of an append, and two processes at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import check_books
from ledger.books import MAIN, Books

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def writer(books: Path, prefix: str, count: int, batch: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.writer_process", str(books), prefix, str(count), str(batch)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def posted_ids(books: Path) -> list[str]:
    """Every event id in the books, with repeats (a duplicate would show twice)."""
    ids = []
    for month in books.rglob("*.beancount"):
        ids += [line.split('"')[1] for line in month.read_text(encoding="utf-8").splitlines() if line.strip().startswith("event_id:")]
    return ids


@pytest.mark.parametrize("kill_after", [0.5, 2.0, 4.0])
def test_a_writer_killed_mid_append_leaves_valid_books_that_catch_up(tmp_path: Path, kill_after: float) -> None:
    books = tmp_path / "ledger"
    process = writer(books, "k", 2000, 5)  # about 6 s of appends
    time.sleep(kill_after)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()  # reap it and close its pipes
    assert process.returncode == -signal.SIGKILL
    if (books / MAIN).exists():
        assert check_books(books / MAIN) == []  # loads, balances, not flagged as tampered
    before = len(posted_ids(books))
    assert before < 2000  # it really died before the end
    again = writer(books, "k", 2000, 100)  # the same events again: the rest is posted, nothing twice
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    ids = posted_ids(books)
    assert sorted(ids) == sorted(f"k-{i}" for i in range(2000))
    assert check_books(books / MAIN) == []
    assert not list(books.rglob("*.tmp"))  # the next writer removed what the dead one left


def test_two_processes_writing_at_once_lose_nothing_and_post_nothing_twice(tmp_path: Path) -> None:
    books = tmp_path / "ledger"
    first, second = writer(books, "a", 150, 3), writer(books, "b", 150, 4)
    for process in (first, second):
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    ids = posted_ids(books)
    assert sorted(ids) == sorted([f"a-{i}" for i in range(150)] + [f"b-{i}" for i in range(150)])
    assert check_books(books / MAIN) == []
    assert Books(books).tampered() == []
