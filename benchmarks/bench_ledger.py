"""The books at scale (issue #3), on a fresh embedded instance with 1,000 customer accounts:

1. posting one day of usage for 1,000 accounts, end to end: the atomic debits in the database
   (one conditional UPDATE per account), the ledger event, and the posting to the books
   (target < 2 s);
2. `ledger check` (beancount's checker plus reconciliation with the database) on one year of
   books in which every account sends every day and recharges monthly (target < 15 s),
   for each balance-assertion cadence.

The year is written by the product's own writer from ledger events, month by month.
Run: .venv/bin/python benchmarks/bench_ledger.py [--accounts 1000] [--cadence daily,monthly]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from backoffice import create_app  # noqa: E402
from backoffice.extensions import db  # noqa: E402
from backoffice.models import EnterpriseAccount, LedgerEvent  # noqa: E402
from backoffice.services.bookkeeping import check_and_reconcile, post_pending  # noqa: E402
from backoffice.services.credit import UsageLine, assertion_due, charge_usage, credit_receipt  # noqa: E402
from ledger import Books, Event, account_effects  # noqa: E402

CARRIERS = ["CMCC", "CUCC", "CTCC"]
YEAR = 2025
PRICE = Decimal("0.035")


def environment() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0]
    return {"python": platform.python_version(), "cpus": str(os.cpu_count()), "commit": commit or "?", "loadavg_1m_at_start": f"{load:.2f}"}


def make_app(instance: Path):  # type: ignore[no-untyped-def]
    return create_app({
        "INSTANCE_PATH": instance, "LEDGER_PATH": instance / "ledger", "DOCUMENTS_PATH": instance / "documents",
        "KEYS_PATH": instance / "keys", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'bench.sqlite3'}", "SECRET_KEY": "bench",
    })  # fmt: skip


def codes(n: int) -> list[str]:
    return [f"E{i:06d}" for i in range(1, n + 1)]


def usage_lines(accounts: list[str], day: date) -> list[dict[str, str | int]]:
    """Each account sends 200–1,200 messages a day, on one carrier."""
    lines = []
    for i, code in enumerate(accounts):
        messages = 200 + (i * 37 + day.toordinal()) % 1000
        lines.append({"account_code": code, "carrier": CARRIERS[i % 3], "messages": messages, "amount": str(PRICE * messages)})
    return lines


def year_events(accounts: list[str], cadence: str) -> list[Event]:
    """A year in event order: contracts, a recharge per account at each month start (before the
    month's usage), daily usage and carrier cost, and balance assertions at the cadence."""
    events: list[Event] = []
    balances = dict.fromkeys(accounts, Decimal(0))
    for code in accounts:
        events.append(
            Event(
                f"cc-{code}",
                "contract_credit",
                date(YEAR, 1, 1),
                {"account_code": code, "customer_name": code, "contract_no": f"HT-{code}", "initial_amount": "1500.00"},
            )
        )
    day = date(YEAR, 1, 1)
    while day.year == YEAR:
        # An assertion holds at the start of its day: before that day's recharge and usage.
        if assertion_due(day, cadence) and day > date(YEAR, 1, 1):
            for code in accounts:
                events.append(Event(f"ba-{code}-{day}", "balance", day, {"account_code": code, "amount": str(-balances[code])}))
        if day.day == 1:
            for code in accounts:
                kind = {"settles_receivable": "1500.00", "releases_contracted": "1500.00"} if day.month == 1 else {}
                events.append(
                    Event(
                        f"rc-{code}-{day}",
                        "receipt",
                        day,
                        {
                            "account_code": code,
                            "customer_name": code,
                            "amount": "1500.00",
                            "bank": "CMB",
                            "bank_ref": f"{code}{day:%m}",
                            **kind,
                        },
                    )
                )
                balances[code] += Decimal("1500.00")
        lines = usage_lines(accounts, day)
        events.append(Event(f"us-{day}", "usage", day, {"lines": lines}))
        cost: dict[str, Decimal] = {}
        for line in lines:
            balances[str(line["account_code"])] -= Decimal(str(line["amount"]))
            cost[str(line["carrier"])] = cost.get(str(line["carrier"]), Decimal(0)) + Decimal(str(line["amount"])) * Decimal("0.6")
        events.append(Event(f"co-{day}", "carrier_cost", day, {"lines": [{"carrier": c, "amount": str(x)} for c, x in cost.items()]}))
        day += timedelta(days=1)
    return events


def bench_post_day(accounts: int, runs: int) -> dict[str, float]:
    """Debit 1,000 accounts for a day's usage, record the event, post it to the books."""
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Path(tmp))
        with app.app_context():
            db.create_all()
            db.session.execute(sa.insert(EnterpriseAccount), [
                {"code": c, "customer_name": c, "status": "active", "balance": 0, "price_per_message": PRICE,
                 "contracted_credit": 0, "receivable": 0} for c in codes(accounts)
            ])  # fmt: skip
            for c in codes(accounts):  # the credit the usage is paid from, booked like any recharge
                credit_receipt(
                    db.session,
                    account_code=c,
                    amount=Decimal("100000.00"),
                    bank="CMB",
                    bank_ref=c,
                    received_on=date(2026, 10, 31),
                    actor="bench",
                )
            db.session.commit()
            post_pending(db.session, Path(app.config["LEDGER_PATH"]))
            day = date(2026, 11, 1)
            for run in range(runs + 1):
                lines = [
                    UsageLine(str(x["account_code"]), str(x["carrier"]), int(x["messages"]), Decimal(str(x["amount"])))
                    for x in usage_lines(codes(accounts), day)
                ]
                start = time.perf_counter()
                charge_usage(db.session, day, lines, event_id=f"usage-{day}")
                db.session.commit()
                post_pending(db.session, Path(app.config["LEDGER_PATH"]))
                elapsed = time.perf_counter() - start
                if run:
                    timings.append(elapsed)
                day += timedelta(days=1)  # the month file grows, as in real life
            report = check_and_reconcile(db.session, Path(app.config["LEDGER_PATH"]))
            assert report.ok, report
            db.engine.dispose()
    return {"median_s": round(statistics.median(timings), 3), "max_s": round(max(timings), 3), "runs": runs}


def bench_check_year(accounts: int, cadence: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Path(tmp))
        with app.app_context():
            db.create_all()
            events = year_events(codes(accounts), cadence)
            effect = account_effects(events)
            db.session.execute(sa.insert(EnterpriseAccount), [
                {"code": c, "customer_name": c, "status": "active", "balance": -effect.get(f"Liabilities:Prepaid:{c}", Decimal(0)),
                 "price_per_message": PRICE, "contracted_credit": 0, "receivable": 0} for c in codes(accounts)
            ])  # fmt: skip
            db.session.execute(sa.insert(LedgerEvent), [
                {"event_id": e.event_id, "kind": e.kind, "occurred_on": e.occurred_on, "payload": e.payload, "posted_seq": i + 1}
                for i, e in enumerate(events)
            ])  # fmt: skip
            db.session.commit()
            root = Path(app.config["LEDGER_PATH"])
            build = time.perf_counter()
            books = Books(root)
            for month in range(1, 13):
                books.post(e for e in events if e.occurred_on.month == month and e.occurred_on.year == YEAR)
            build = time.perf_counter() - build
            db.session.execute(sa.update(LedgerEvent).values(posted_at=sa.func.current_timestamp()))
            db.session.commit()
            size = sum(p.stat().st_size for p in root.rglob("*.beancount") if ".check" not in p.parts)
            timings: dict[str, float] = {}

            def timed_check(label: str) -> None:
                start = time.perf_counter()
                report = check_and_reconcile(db.session, root)
                timings[label] = round(time.perf_counter() - start, 2)
                assert report.ok, (label, report.errors[:3], report.differences[:3])

            def post_usage(event_id: str, day: date) -> None:
                lines = usage_lines(codes(accounts), day)
                Books(root).post([Event(event_id, "usage", day, {"lines": lines})])
                for line in lines:
                    db.session.execute(
                        sa.update(EnterpriseAccount)
                        .where(EnterpriseAccount.code == line["account_code"])
                        .values(balance=EnterpriseAccount.balance - Decimal(str(line["amount"])))
                    )
                db.session.commit()

            # 1. No month summaries yet: every month is loaded (what a check costs after a rebuild).
            timed_check("first_check_s")
            # 2. Routine: another day's usage lands in the current month.
            post_usage("us-extra", date(YEAR, 12, 31))
            timed_check("check_s")
            # 3. The month turns over: the nightly job posts late events of the closed month and
            #    the first usage of the new one (December is reloaded, January is new).
            post_usage("us-late", date(YEAR, 12, 31))
            post_usage("us-next", date(YEAR + 1, 1, 1))
            timed_check("after_turnover_s")
            # 4. Worst case: an event back-dated into the first month (a carrier's late bill)
            #    changes the opening balances of every month after it.
            late_bill = {"lines": [{"carrier": "CMCC", "amount": "1234.56"}]}
            Books(root).post([Event("co-backdated", "carrier_cost", date(YEAR, 1, 15), late_bill)])
            timed_check("after_event_backdated_11_months_s")
            transactions = sum(1 for e in events if e.kind != "balance")
            assertions = sum(1 for e in events if e.kind == "balance")
            db.engine.dispose()
    return {
        "cadence": cadence, **timings, "transactions": transactions, "balance_assertions": assertions,
        "books_mb": round(size / 2**20, 1), "write_year_s": round(build, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cadence", default="monthly,daily")
    args = parser.parse_args()
    result: dict[str, object] = {"benchmark": "ledger", "environment": environment(), "accounts": args.accounts}
    result["post_one_day"] = {**bench_post_day(args.accounts, args.runs), "target_s": 2.0}
    result["check_year"] = [{**bench_check_year(args.accounts, c), "target_s": 15.0} for c in args.cadence.split(",")]
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
