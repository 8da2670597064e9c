"""The books writer: posting rules, idempotence, refusal of bad events, and beancount's checker."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import ledger
import ledger.books as books_module
from ledger import Books, Event, PostingRuleError, check_books, ledger_balances
from ledger.books import MAIN


def credit(event_id: str = "ev-1", code: str = "E000001", amount: str = "1750.00", fee: str = "0", day: date = date(2026, 11, 23)) -> Event:
    return Event(
        event_id,
        "contract_credit",
        day,
        {
            "account_code": code,
            "customer_name": "北京创联致信科技有限公司",
            "contract_no": "HT-2026-000001",
            "initial_amount": amount,
            "opening_fee": fee,
        },
    )


def test_contract_credit_is_receivable_against_contracted_credit(tmp_path: Path) -> None:
    books = Books(tmp_path)
    assert books.post([credit(fee="300.00")]) == ["ev-1"]
    assert check_books(tmp_path / MAIN) == []
    balances = ledger_balances(tmp_path / MAIN)
    assert balances["Assets:Receivable:E000001"] == Decimal("2050.00")
    assert balances["Liabilities:Contracted:E000001"] == Decimal("-1750.00")
    assert balances["Income:OpeningFee"] == Decimal("-300.00")
    text = (tmp_path / "2026" / "2026-11.beancount").read_text(encoding="utf-8")
    assert 'event_id: "ev-1"' in text
    assert "北京创联致信科技有限公司" in text


def test_replaying_an_event_changes_nothing(tmp_path: Path) -> None:
    books = Books(tmp_path)
    books.post([credit()])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.beancount")}
    assert books.post([credit()]) == []
    assert books.post([credit(), credit()]) == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.beancount")} == before


def test_same_event_twice_in_one_batch_posts_once(tmp_path: Path) -> None:
    assert Books(tmp_path).post([credit(), credit()]) == ["ev-1"]
    assert ledger_balances(tmp_path / MAIN)["Assets:Receivable:E000001"] == Decimal("1750.00")


def test_months_go_to_their_own_files_included_from_main(tmp_path: Path) -> None:
    books = Books(tmp_path)
    books.post([credit("a", day=date(2026, 11, 30)), credit("b", code="E000002", day=date(2026, 12, 1))])
    assert books.included_months() == ["2026/2026-11.beancount", "2026/2026-12.beancount"]
    assert check_books(tmp_path / MAIN) == []
    assert books.posted_event_ids() == {"a", "b"}


@pytest.mark.parametrize(
    "event, message",
    [
        (Event("x", "no_such_kind", date(2026, 1, 1), {}), "unknown ledger event kind"),
        (Event("x", "contract_credit", date(2026, 1, 1), {"account_code": "E1"}), "lacks"),
        (credit(amount="abc"), "decimal"),
        (credit(code="e-lower"), "account component"),
        (credit(amount="0", fee="0"), "moves no money"),
    ],
)
def test_bad_events_are_refused_and_nothing_is_written(tmp_path: Path, event: Event, message: str) -> None:
    books = Books(tmp_path)
    books.post([credit("good")])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.beancount")}
    with pytest.raises((PostingRuleError, ValueError), match=message):
        books.post([credit("also-good", code="E000009"), event])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.beancount")} == before


def test_unbalanced_rule_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        ledger.events.RULES, "broken", lambda e: ("x", "y", [("Income:SMS", Decimal("1")), ("Income:Penalty", Decimal("-0.99"))])
    )
    with pytest.raises(PostingRuleError, match="does not balance"):
        ledger.transaction_for(Event("b", "broken", date(2026, 1, 1), {}))


def test_checker_reports_a_hand_edited_file(tmp_path: Path) -> None:
    Books(tmp_path).post([credit()])
    month = tmp_path / "2026" / "2026-11.beancount"
    month.write_text(month.read_text(encoding="utf-8").replace("-1750.00 CNY", "-1700.00 CNY"), encoding="utf-8")
    problems = check_books(tmp_path / MAIN)
    assert problems and any("balance" in p.lower() for p in problems)


@pytest.mark.parametrize("folder", ["sms#2", "books?old"])
def test_a_query_runs_on_books_whose_path_has_a_hash_or_a_question_mark(tmp_path: Path, folder: str) -> None:
    """Found by a review: beanquery read `beancount:<path>` as a URL, cut the path at '#' or '?',
    and answered every query with no rows (and a trial balance of nothing)."""
    from ledger.query import account_totals, run_query

    root = tmp_path / folder / "ledger"
    Books(root).post([credit()])
    rows = run_query(root / MAIN, "SELECT account, sum(number) AS total GROUP BY account ORDER BY account").rows
    assert rows == [["Assets:Receivable:E000001", Decimal("1750.00")], ["Liabilities:Contracted:E000001", Decimal("-1750.00")]]
    assert account_totals(root / MAIN)["Assets:Receivable:E000001"] == Decimal("1750.00")


def test_a_query_on_books_that_do_not_load_cleanly_answers_with_the_loaders_error(tmp_path: Path) -> None:
    """Found by a review: what beancount's loader reported was dropped, and the query answered on
    whatever part of the books it did read. A second review: refusing the query then left finance
    without it exactly when the books needed looking into. It answers, with the error beside."""
    from ledger.query import QueryError, account_totals, run_query

    Books(tmp_path).post([credit()])
    month = tmp_path / "2026" / "2026-11.beancount"
    month.write_text(month.read_text(encoding="utf-8") + '\ninclude "2026-12.beancount"\n', encoding="utf-8")
    result = run_query(tmp_path / MAIN, "SELECT account, sum(number) GROUP BY account")
    assert result.rows and len(result.warnings) == 1 and "账簿载入有 1 处错误，结果可能不全" in result.warnings[0]
    assert "2026-12.beancount" in result.warnings[0]
    with pytest.raises(QueryError, match="账簿载入有 1 处错误.*2026-12.beancount"):
        account_totals(tmp_path / MAIN)  # a trial balance is refused


def test_reconcile_names_the_differing_account() -> None:
    diffs = ledger.reconcile(
        {"Liabilities:Prepaid:E1": Decimal("-10"), "Liabilities:Prepaid:E2": Decimal("0")}, {"Liabilities:Prepaid:E1": Decimal("-9.99")}
    )
    assert [(d.account, d.database, d.books) for d in diffs] == [("Liabilities:Prepaid:E1", Decimal("-10"), Decimal("-9.99"))]


def test_books_that_no_longer_parse_are_reported_and_never_appended_to(tmp_path: Path) -> None:
    books = Books(tmp_path)
    books.post([credit("first")])
    month = tmp_path / "2026" / "2026-11.beancount"
    month.write_text(month.read_text(encoding="utf-8") + "\n2026-11-23 * this is not beancount\n  ??? broken\n", encoding="utf-8")
    problems = check_books(tmp_path / MAIN)
    assert any("2026-11.beancount" in p and "记账程序之外被修改" in p for p in problems)
    assert len(problems) >= 2  # the manifest and beancount's parser both speak
    before = month.read_bytes()
    with pytest.raises(ledger.LedgerWriteError, match="2026/2026-11.beancount"):
        books.post([credit("second", code="E000002")])
    assert month.read_bytes() == before


def disk_full_writing(monkeypatch: pytest.MonkeyPatch, full: Callable[[Path], bool]) -> Callable[[], None]:
    """The books' writes find the disk full for the files `full` picks, every other goes through;
    what it returns gives the room back."""
    write = books_module.write_atomically

    def writes(path: Path, content: bytes | str) -> None:
        if full(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, content)

    monkeypatch.setattr(books_module, "write_atomically", writes)
    return lambda: monkeypatch.setattr(books_module, "write_atomically", write)


@pytest.mark.parametrize("day", [date(2026, 11, 24), date(2026, 12, 1)], ids=["month-file-on-disk", "month-file-not-yet-written"])
def test_failed_writes_of_a_month_leave_books_that_take_the_next_posting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, day: date
) -> None:
    """A month file that cannot be written twice in a row (disk full when posted, full again at
    the retry) is still the writer's own once the disk has room: it is not called edited by
    hand, and posting goes on (found by a review)."""
    books = Books(tmp_path)
    books.post([credit("first")])
    month = tmp_path / f"{day:%Y}" / f"{day:%Y-%m}.beancount"
    room_again = disk_full_writing(monkeypatch, lambda path: path == month)
    for _ in range(2):
        with pytest.raises(OSError):
            books.post([credit("second", code="E000002", day=day)])
    room_again()
    assert check_books(tmp_path / MAIN) == []
    assert books.post([credit("second", code="E000002", day=day)]) == ["second"]
    assert check_books(tmp_path / MAIN) == []


def test_a_new_month_written_without_its_include_in_main_is_included_by_the_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: the disk filled up after December's file was written but before main
    included it; the retry found the id in that file, skipped it and wrote nothing, so the event
    was called posted and missing from the books while the checker passed."""
    books = Books(tmp_path)
    books.post([credit("nov", day=date(2026, 11, 30))])
    room_again = disk_full_writing(monkeypatch, lambda path: path.name == MAIN)
    with pytest.raises(OSError):
        books.post([credit("dec", code="E000002", day=date(2026, 12, 1))])
    room_again()
    assert books.post([credit("dec", code="E000002", day=date(2026, 12, 1))]) == []  # already in December's file
    assert books.included_months() == ["2026/2026-11.beancount", "2026/2026-12.beancount"]
    assert check_books(tmp_path / MAIN) == []
    assert ledger_balances(tmp_path / MAIN)["Assets:Receivable:E000002"] == Decimal("1750.00")


def test_the_lock_still_holds_when_the_books_folder_is_replaced_under_it(tmp_path: Path) -> None:
    """Found by a review: the lock file was inside the folder `ledger rebuild --replace` swaps for
    the rebuilt one, so a writer coming after the swap took the new folder's lock file and wrote
    while the rebuild still held the old one."""
    root, rebuilt = tmp_path / "ledger", tmp_path / "rebuilt"
    Books(root).post([credit("old")])
    Books(rebuilt).post([credit("old")])
    writer = threading.Thread(target=lambda: Books(root).post([credit("new", code="E000002")]))
    with Books(root).locked():
        root.rename(tmp_path / "backup")
        rebuilt.rename(root)
        writer.start()
        writer.join(timeout=1)
        assert writer.is_alive(), "wrote while the books were locked"
    writer.join(timeout=30)
    assert Books(root).posted_event_ids() == {"old", "new"}
    assert Books(tmp_path / "backup").posted_event_ids() == {"old"}


def test_the_split_check_equals_a_full_load(tmp_path: Path) -> None:
    """Closed months (cached) + the latest month (carried forward) find what one load finds."""
    from beancount import loader

    from ledger.check import inspect_books

    books = Books(tmp_path)
    books.post([credit("nov", day=date(2026, 11, 2))])
    books.post([Event("bal-ok", "balance", date(2026, 12, 1), {"account_code": "E000001", "amount": "0"})])
    books.post([Event("rc", "receipt", date(2026, 12, 2), {"account_code": "E000001", "customer_name": "x", "amount": "1750.00", "bank": "CMB",
                                                             "bank_ref": "1", "settles_receivable": "1750.00", "releases_contracted": "1750.00"})])  # fmt: skip
    books.post([Event("bal-dec", "balance", date(2026, 12, 3), {"account_code": "E000001", "amount": "-1750.00"})])
    problems, totals, _ = inspect_books(tmp_path / MAIN)
    entries, errors, _ = loader._uncached_load_file(str(tmp_path / MAIN), None, None, None)
    assert problems == [] and errors == []
    full: dict[str, Decimal] = {}
    for entry in entries:
        for posting in getattr(entry, "postings", []):
            full[posting.account] = full.get(posting.account, Decimal(0)) + posting.units.number
    assert totals == full
    # A wrong assertion in the latest month is caught against the whole history.
    books.post(
        [Event("bal-wrong", "balance", date(2026, 12, 4), {"account_code": "E000001", "amount": "-1749.9900"})]
    )  # 4 places, as the database writes: tolerance 0.0001
    assert any("Balance failed" in p for p in inspect_books(tmp_path / MAIN)[0])
    # A closed month changed after a cached check is caught too (the cache is keyed on the files).
    nov = tmp_path / "2026" / "2026-11.beancount"
    nov.write_text(nov.read_text(encoding="utf-8").replace("1750.00 CNY", "1750.01 CNY", 1), encoding="utf-8")
    problems = inspect_books(tmp_path / MAIN)[0]
    assert any("2026-11.beancount" in p and "balance" in p.lower() for p in problems)


def test_a_check_running_while_the_writer_appends_reports_no_edit_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: the check read the manifest, a writer appended, and the check then hashed
    the new file against the old manifest: "在记账程序之外被修改或删除", `ledger check` exit 1."""
    from ledger.check import inspect_books

    books = Books(tmp_path)
    books.post([credit("nov", day=date(2026, 11, 2))])
    real = books_module._digest
    writer = threading.Thread(target=lambda: Books(tmp_path).post([credit("nov-2", code="E000002", day=date(2026, 11, 3))]))

    def digest(path: Path) -> str:
        if writer.ident is None:  # the check has read the manifest: a writer starts
            writer.start()
            writer.join(timeout=2)  # done at once without the lock; with it, waits for the check
        return real(path)

    monkeypatch.setattr(books_module, "_digest", digest)
    problems, _, _ = inspect_books(tmp_path / MAIN)
    writer.join(timeout=30)
    assert problems == []
    assert books.posted_event_ids() == {"nov", "nov-2"} and check_books(tmp_path / MAIN) == []


def test_a_balance_assertion_catches_a_drift_of_one_unit(tmp_path: Path) -> None:
    """Found by a review: beancount infers a tolerance of 0.0001 from 4 decimal places, one unit
    of Money, so a drift of exactly that between the database and the books passed the checker."""
    from ledger.check import inspect_books

    books = Books(tmp_path)
    books.post([Event("rc", "receipt", date(2026, 12, 2), {"account_code": "E000001", "customer_name": "x", "amount": "1750.00", "bank": "CMB",
                                                         "bank_ref": "1", "settles_receivable": "0", "releases_contracted": "0"})])  # fmt: skip
    books.post([Event("bal-ok", "balance", date(2026, 12, 3), {"account_code": "E000001", "amount": "-1750.0000"})])
    assert inspect_books(tmp_path / MAIN)[0] == []
    books.post([Event("bal-drift", "balance", date(2026, 12, 4), {"account_code": "E000001", "amount": "-1749.9999"})])
    assert any("Balance failed" in p for p in inspect_books(tmp_path / MAIN)[0])


def test_an_error_names_the_month_file_and_line_it_is_on(tmp_path: Path) -> None:
    """The check loads texts read under the lock, not the files: its errors still name the file
    and the line a reader finds them on."""
    books = Books(tmp_path)
    books.post([credit("c1", code="E000001", day=date(2026, 12, 1))])
    books.post([Event("bal-wrong", "balance", date(2026, 12, 3), {"account_code": "E000001", "amount": "-1.00"})])
    month = tmp_path / "2026" / "2026-12.beancount"
    line = next(n for n, text in enumerate(month.read_text(encoding="utf-8").splitlines(), 1) if " balance " in text)
    problems = check_books(tmp_path / MAIN)
    assert [p for p in problems if "Balance failed" in p] and all(p.startswith(f"{month.absolute()}:{line}: ") for p in problems)


def test_a_writer_waits_for_the_check_to_read_the_books_not_for_beancount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check held the books' lock while beancount loaded them (seconds a day at 1,000
    accounts, half a minute after a rebuild), and every posting waited: a finance confirmation's
    request hung that long. Now the lock covers reading the files; the check's result is the
    books as read, and the next check sees what was posted meanwhile."""
    import ledger.check as check

    books = Books(tmp_path)
    books.post([credit("c1", code="E000001", day=date(2026, 12, 1))])
    loading, posted = threading.Event(), threading.Event()
    real = check._check_month

    def slow(*args: Any) -> tuple[list[str], dict[str, Decimal]]:
        loading.set()
        posted.wait(timeout=10)
        return real(*args)

    monkeypatch.setattr(check, "_check_month", slow)
    found: list[check.Inspection] = []
    checker = threading.Thread(target=lambda: found.append(check.inspect_books(tmp_path / MAIN)))
    checker.start()
    assert loading.wait(timeout=10)
    writer = threading.Thread(target=lambda: books.post([credit("c2", code="E000002", day=date(2026, 12, 2))]))
    writer.start()
    writer.join(timeout=5)
    wrote = not writer.is_alive()
    posted.set()
    checker.join(timeout=30)
    writer.join(timeout=30)
    assert wrote, "the posting waited for beancount's check"
    assert found[0].problems == [] and "Assets:Receivable:E000002" not in found[0].balances
    again = check.inspect_books(tmp_path / MAIN)
    assert again.problems == [] and again.balances["Assets:Receivable:E000002"] == Decimal("1750.00")


def test_a_month_is_checked_again_only_when_it_or_what_it_carries_forward_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closed months are not reloaded on a routine check; a back-dated event reloads its month
    and every later one (their openings changed); the latest month is always reloaded."""
    import ledger.check as check

    loaded: list[str] = []
    real = check._check_month

    def counting(header: str, chart: Any, name: str, month: Any, opening: dict[str, Decimal]) -> tuple[list[str], dict[str, Decimal]]:
        loaded.append(name)
        return real(header, chart, name, month, opening)

    monkeypatch.setattr(check, "_check_month", counting)
    books = Books(tmp_path)
    for month in (9, 10, 11):
        books.post([credit(f"m{month}", code=f"E00000{month - 8}", day=date(2026, month, 2))])
    assert check.check_books(tmp_path / MAIN) == []
    assert loaded == ["2026/2026-09.beancount", "2026/2026-10.beancount", "2026/2026-11.beancount"]
    loaded.clear()
    assert check.check_books(tmp_path / MAIN) == []
    assert loaded == ["2026/2026-11.beancount"]
    loaded.clear()
    late = {"account_code": "E000001", "customer_name": "x", "amount": "100.00", "bank": "CMB", "bank_ref": "late"}
    books.post([Event("late", "receipt", date(2026, 10, 20), late)])  # back-dated into October, a new bank account
    assert check.check_books(tmp_path / MAIN) == []
    assert loaded == ["2026/2026-10.beancount", "2026/2026-11.beancount"]
    # November's assertions are checked against October's new totals: right passes, wrong fails.
    books.post([Event("bal-right", "balance", date(2026, 11, 3), {"account_code": "E000001", "amount": "-100.00"})])
    assert check.check_books(tmp_path / MAIN) == []
    books.post([Event("bal-wrong", "balance", date(2026, 11, 4), {"account_code": "E000001", "amount": "0"})])
    assert any("Balance failed" in p for p in check.check_books(tmp_path / MAIN))


def test_a_writer_of_an_earlier_version_holding_the_lock_inside_the_folder_is_waited_for(tmp_path: Path) -> None:
    """Found by a review: the lock file moved beside the books folder, and while an upgrade
    replaced the processes one by one an old writer (locking `ledger/.lock`) and a new one wrote
    the books at once; the new one even removed the old one's temporary file."""
    import fcntl

    books = Books(tmp_path / "ledger")
    books.post([credit("first")])
    with open(tmp_path / "ledger" / ".lock", "a+") as old_writer:
        fcntl.flock(old_writer, fcntl.LOCK_EX)
        (tmp_path / "ledger" / ".main.beancount.tmp").write_text("half written", encoding="utf-8")
        posting = threading.Thread(target=books.post, args=([credit("second", day=date(2026, 11, 24))],))
        posting.start()
        posting.join(0.5)
        assert posting.is_alive()  # waits for the old writer
        assert (tmp_path / "ledger" / ".main.beancount.tmp").exists()
        (tmp_path / "ledger" / ".main.beancount.tmp").unlink()
    posting.join(10)
    assert not posting.is_alive() and check_books(books.main) == []
    assert "second" in (tmp_path / "ledger" / "2026" / "2026-11.beancount").read_text(encoding="utf-8")


def test_a_query_on_books_named_by_a_relative_path_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: beancount's loader asserts an absolute path, so a relative one failed with an
    AssertionError instead of running (or a QueryError)."""
    from ledger.query import run_query

    Books(tmp_path / "books").post([credit()])
    monkeypatch.chdir(tmp_path)
    assert run_query(Path("books") / MAIN, "SELECT account, sum(number) GROUP BY account").rows


@pytest.mark.parametrize(
    "damage", ['{"main.beancount": ["abc', "\xff\xfe", '["main.beancount"]'], ids=["cut-short", "not-utf8", "wrong-shape"]
)
def test_a_damaged_manifest_stops_posting_and_is_a_finding_of_the_check(tmp_path: Path, damage: str) -> None:
    """Found by a review: a manifest that is not JSON raised a bare JSONDecodeError when posting
    (the web showed "稍后 ledger sync 会补记：Unterminated string…", which sync cannot mend) and
    when checking (a traceback instead of a report)."""
    books = Books(tmp_path)
    books.post([credit("first")])
    (tmp_path / ".manifest.json").write_bytes(damage.encode("latin-1"))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.beancount")}
    with pytest.raises(ledger.LedgerWriteError, match=r"账簿清单 .*\.manifest\.json 已损坏.*ledger rebuild --replace"):
        books.post([credit("second", code="E000002")])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.beancount")} == before
    problems = check_books(tmp_path / MAIN)
    assert len(problems) == 1 and "已损坏" in problems[0] and "ledger rebuild" in problems[0]


def test_a_month_file_the_writer_never_wrote_stops_posting_and_is_reported(tmp_path: Path) -> None:
    """Found by a review: a month file missing from the manifest (left by a partial restore, copied
    from other books) was trusted: its ids made real events be skipped as posted, its entries
    joined the books at the next posting of that month, and the check passed."""
    live, other = tmp_path / "ledger", tmp_path / "other"
    Books(other).post([credit("dec", day=date(2026, 12, 5))])
    books = Books(live)
    books.post([credit("nov")])
    (live / "2026" / "2026-12.beancount").write_bytes((other / "2026" / "2026-12.beancount").read_bytes())
    before = {p: p.read_bytes() for p in live.rglob("*") if p.is_file()}
    for event in (credit("dec", code="E000002", day=date(2026, 12, 5)), credit("dec-2", code="E000003", day=date(2026, 12, 6))):
        with pytest.raises(ledger.LedgerWriteError, match="2026/2026-12.beancount 不在账簿清单中.*ledger rebuild"):
            books.post([event])
    assert {p: p.read_bytes() for p in live.rglob("*") if p.is_file()} == before
    assert check_books(live / MAIN) == [
        "账簿文件 2026/2026-12.beancount 不在账簿清单中，不是记账程序写的（可能来自不完整的恢复或另一套账簿）"
    ]


def test_books_whose_main_file_is_gone_are_not_started_again_over_the_others(tmp_path: Path) -> None:
    """Found by a review: with main.beancount gone (deleted, left out of a restore), the next
    posting wrote a fresh accounts file and manifest over the old ones, every account opened
    since lost; the books are now refused as they are, naming what to do."""
    books = Books(tmp_path)
    books.post([credit("nov")])
    (tmp_path / MAIN).unlink()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ledger.LedgerWriteError, match=r"main.beancount 不存在.*accounts.beancount.*ledger rebuild --replace"):
        books.post([credit("nov-2", code="E000002")])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_first_start_cut_short_after_the_accounts_file_starts_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    room_again = disk_full_writing(monkeypatch, lambda path: path.name == MAIN)
    with pytest.raises(OSError):
        Books(tmp_path).post([credit("nov")])
    assert (tmp_path / "accounts.beancount").exists() and not (tmp_path / MAIN).exists()
    room_again()
    Books(tmp_path).post([credit("nov")])  # the accounts file is the one a first start writes first
    assert check_books(tmp_path / MAIN) == []


def test_a_month_file_written_by_a_write_that_died_before_its_end_is_the_writers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest lists a month before the month is written (its old and new hash), so a new
    month's file left by a writer that died before noting the write done is not taken for a
    file from elsewhere: the retry includes it and posting goes on."""
    books = Books(tmp_path)
    books.post([credit("nov")])
    save = Books._save_manifest
    saves: list[int] = []

    def disk_full_at_the_second_save(self: Books, manifest: dict[str, list[str]]) -> None:
        saves.append(1)
        if len(saves) == 2:  # every file written, the manifest not yet told
            raise OSError(errno.ENOSPC, "No space left on device")
        save(self, manifest)

    monkeypatch.setattr(Books, "_save_manifest", disk_full_at_the_second_save)
    with pytest.raises(OSError):
        books.post([credit("dec", code="E000002", day=date(2026, 12, 1))])
    monkeypatch.setattr(Books, "_save_manifest", save)
    assert (tmp_path / "2026" / "2026-12.beancount").exists()
    assert books.tampered() == [] and check_books(tmp_path / MAIN) == []
    assert books.post([credit("dec-2", code="E000003", day=date(2026, 12, 2))]) == ["dec-2"]
    assert books.posted_event_ids() == {"nov", "dec", "dec-2"} and check_books(tmp_path / MAIN) == []


def refuse_writes(monkeypatch: pytest.MonkeyPatch, folders: list[Path], code: int) -> None:
    """A disk that takes no writes (full: ENOSPC, read-only: EROFS) under `folders`; reads go on.
    By monkeypatching: the tests run as root, whom a chmod does not stop."""
    import builtins
    import os

    def refused(path: object) -> bool:
        where = os.path.abspath(os.fsdecode(path))  # type: ignore[arg-type]
        return any(where == str(f) or where.startswith(f"{f}{os.sep}") for f in folders)

    def fail(path: object) -> OSError:
        return OSError(code, os.strerror(code), os.fsdecode(path))  # type: ignore[arg-type]

    real_open, real_os_open, real_replace, real_mkdir = builtins.open, os.open, os.replace, os.mkdir
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def open_(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if isinstance(file, (str, Path)) and set(mode) & set("wax+") and refused(file):
            raise fail(file)
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    def os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & writing and refused(path):
            raise fail(path)
        return real_os_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def replace(src: object, dst: object, *args: object, **kwargs: object) -> None:
        if refused(dst):
            raise fail(dst)
        real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    def mkdir(path: object, *args: object, **kwargs: object) -> None:
        if refused(path):
            raise fail(path)
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.mark.parametrize(
    "code, why", [(errno.ENOSPC, "磁盘空间不足"), (errno.EROFS, "目录不可写（文件系统为只读）")], ids=["full", "read-only"]
)
@pytest.mark.parametrize("checked_before", [False, True], ids=["never-checked", "checked-before"])
def test_the_check_runs_on_a_disk_that_takes_no_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, why: str, checked_before: bool
) -> None:
    """Found by a review: the check opened the lock files for writing and wrote a probe file and
    the month summaries beside the books, so on a full or read-only disk `ledger check`, the books
    page and the nightly check died with a traceback. It checks in memory and says what it went
    without; what it finds is what it finds on a writable disk."""
    from ledger.check import inspect_books

    root = tmp_path / "ledger"
    books = Books(root)
    for month in (10, 11, 12):
        books.post([credit(f"m{month}", code=f"E00000{month - 9}", day=date(2026, month, 2))])
    books.post([Event("bal-wrong", "balance", date(2026, 11, 4), {"account_code": "E000001", "amount": "-5.00"})])
    expected = inspect_books(root / MAIN)
    assert any("Balance failed" in p for p in expected.problems) and expected.notes == []
    if not checked_before:  # no lock file, no stored summaries: nothing to open but for reading
        books.lock_file.unlink()
        (root / ".lock").unlink()
        for stored in (root / ".check").iterdir():
            stored.unlink()
        (root / ".check").rmdir()
    refuse_writes(monkeypatch, [root, books.lock_file], code)
    found = inspect_books(root / MAIN)
    assert (found.problems, found.balances) == (expected.problems, expected.balances)
    assert any(f"{root / '.check' / 'months.json'}（{why}）" in n and "本次在内存中逐月检查" in n for n in found.notes)
    lock_notes = [n for n in found.notes if "本次检查未加锁" in n]
    assert len(lock_notes) == (0 if checked_before else 2)  # an existing lock file is locked through a read-only open
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".months-*"))
