"""The message path end to end (issue #5), in one run on one machine:

a. the simulator's ceiling: a bare windowed client (window 10, TCP_NODELAY, PDUs encoded
   beforehand; `bench_smpp.raw_ceiling`) sending submit_sm and counting submit_sm_resp, its
   submits asking for receipts over a transmitter bind as the dispatcher's do (the simulator
   makes and holds one per submit; taken off untimed afterwards); and, for comparison with
   earlier runs, the same without receipts (less work for the simulator: a higher ceiling);
a2. for reference, the plainest windowed client written with smpplib (`Client.send_message`,
   `read_pdu`, window 10, TCP_NODELAY, no receipts): what an ESME built on the stack's library reaches;
b. dispatch: N messages queued in the database (charged, as intake leaves them), the dispatcher
   (`backoffice.services.dispatcher.Dispatcher`, window 10, one bind) from the first claim to
   the last submit_sm_resp recorded in the database (target >= 1,500 msg/s and >= 60 % of a);
   the bind is a transmitter, so the SMSC holds the receipts (receipt delay 0) for (c);
c. receipts: a receiver bind of the dispatcher drains that backlog of N receipts into the database
   (part matched, message delivered), receipts/s from before its bind (the simulator sends the
   backlog on the bind_resp's heels) to the last one committed (target >= 1,500/s);
d. API intake under gunicorn (`-w 2 --preload`, sync workers) against a temporary instance:
   messages/s accepted and charged in requests of 1,000 recipients, and requests/s of
   single-message requests from a few client threads (http.client, keep-alive where offered)
   (targets >= 10,000 msg/s and >= 500 req/s).

The simulator runs in its own process, as in production; clients and servers share the cores,
so every figure is a floor. The ceiling is measured before (b) and after (c) and the ratio taken
against their mean, since a shared 2-core VM drifts.

The dispatcher's window is also the most parts a crash can leave to resend: each window's worth
of answers must be committed before the next parts go out, so (b) is bound by one transaction
per window (`--window 100` shows the trade-off).

With `--postgresql`, (b), (c) and (d) run on a throwaway PostgreSQL server on loopback
(`tests/postgresql/server.py`, production's durability settings: fsync and synchronous commit on)
instead of SQLite.

Run: .venv/bin/python benchmarks/bench_dispatch.py [--messages 20000] [--singles 2000] [--window 10] [--postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# serve: the simulator process, as bench_smpp runs it (receipts at once, held while no receiver is bound)
from bench_smpp import drain_raw, raw_ceiling, serve  # noqa: E402
from common import cpu_reference, free_port, open_funded_account, start_gunicorn  # noqa: E402

WINDOW = 10
CONTENT = "【蓉城会员】您的验证码是 482913，5 分钟内有效。"
FUNDS = Decimal("90000.00")  # 2 million messages at 0.045


def environment() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT).stdout
    return {
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "commit": (commit or "?") + ("+dirty" if dirty.strip() else ""),
        "loadavg_1m_at_start": f"{os.getloadavg()[0]:.2f}",
        "cpu_reference_ms_at_start": str(cpu_reference()),  # common.cpu_reference: lower is a faster VM
    }


def smpplib_ceiling(port: int, messages: int, window: int = WINDOW) -> float:
    """(a2) Submits per second from the plainest windowed client built on smpplib, the stack's SMPP
    library: `Client.send_message` and `read_pdu`, TCP_NODELAY set, `window` submit_sm outstanding,
    responses matched by count: the reference an ESME written with the library reaches, next to
    the bare client's ceiling (a). (NOTES.md's 2,400–2,650 msg/s for such a client were against
    another server; against this simulator it reaches several times that.)"""
    import smpplib.client
    import smpplib.consts

    client = smpplib.client.Client("127.0.0.1", port, timeout=30, allow_unknown_opt_params=True)
    client.logger.disabled = True  # it logs every PDU at DEBUG; the formatting alone would be measured
    client.connect()
    try:
        client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.bind_transmitter(system_id="backoffice", password="secret")
        text = CONTENT.encode("utf-16-be")
        fields = {
            "source_addr_ton": 0, "source_addr": "10690001", "dest_addr_ton": 1, "destination_addr": "8613800138000",
            "data_coding": smpplib.consts.SMPP_ENCODING_ISO10646, "short_message": text, "registered_delivery": 0,
        }  # fmt: skip
        sent = answered = 0
        started = time.perf_counter()
        while answered < messages:
            while sent - answered < window and sent < messages:
                client.send_message(**fields)
                sent += 1
            response = client.read_pdu()
            if response.command == "submit_sm_resp":
                assert response.status == 0, response.status
                answered += 1
        return messages / (time.perf_counter() - started)
    finally:
        client.disconnect()


def numbers(start: int, n: int) -> list[str]:
    """`n` distinct China Mobile numbers, never consecutive (no 号码段群发)."""
    return [str(13800000000 + (start + i) * 7) for i in range(n)]


def database_url(instance: Path, server: str | None) -> str:
    """The instance's database: SQLite in its folder, or a new database on the PostgreSQL server."""
    if server is None:
        return f"sqlite:///{instance / 'bench.sqlite3'}"
    from tests.postgresql.server import create_database

    return create_database(server, f"bench_{instance.name}")


def funded_app(instance: Path, url: str | None = None) -> tuple[Any, str]:
    """A temporary instance with one funded active account (a real issued contract, a confirmed
    receipt, books posted) whose rate limit is out of the way; returns (app, account code)."""
    from backoffice import create_app
    from backoffice.cli import after_commit_catch_up
    from backoffice.extensions import db

    app = create_app({"SECRET_KEY": "bench", "INSTANCE_PATH": instance, "SQLALCHEMY_DATABASE_URI": url or database_url(instance, None)})
    with app.app_context():
        db.create_all()
        account = open_funded_account(app, FUNDS)
        assert not after_commit_catch_up(app)
        code = account.code
        db.session.remove()
    return app, code


# --- b and c: the dispatcher ------------------------------------------------------------------------


def queue_messages(app: Any, code: str, count: int) -> None:
    """`count` charged messages in the queue, accepted through the intake service in requests of 1,000."""
    import sqlalchemy as sa

    from backoffice.extensions import db
    from backoffice.models import EnterpriseAccount
    from backoffice.services.messaging import accept_messages

    with app.app_context():
        account = db.session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code))
        primary = next(s for s in account.sub_accounts if s.is_primary)
        for start in range(0, count, 1000):
            accept_messages(db.session, sub_account=primary, recipients=numbers(start, min(1000, count - start)), content=CONTENT)
            db.session.commit()
        db.session.remove()


def dispatch(app: Any, port: int, count: int, window: int = WINDOW) -> dict[str, Any]:
    """(b) queue to every submit_sm_resp recorded, over one transmitter bind."""
    from backoffice.services.dispatcher import Dispatcher
    from dispatch.smpp_link import LinkConfig

    dispatcher = Dispatcher(app, LinkConfig(port=port, window=window, bind_mode="transmitter"), "bench-transmitter")
    started = time.perf_counter()
    dispatcher.run_until(lambda: dispatcher.stats.submitted >= count, timeout=600)
    elapsed = time.perf_counter() - started
    stats = dispatcher.stats
    dispatcher.close()
    return {
        "messages": count,
        "seconds": round(elapsed, 2),
        "per_second": round(count / elapsed),
        "commits": stats.commits,
        "window": window,
        "resent": stats.resent,
    }


def drain_receipts(app: Any, port: int, count: int) -> dict[str, Any]:
    """(c) the SMSC's backlog of receipts into the database, over one receiver bind."""
    from backoffice.services.dispatcher import Dispatcher
    from dispatch.smpp_link import LinkConfig

    dispatcher = Dispatcher(app, LinkConfig(port=port, window=WINDOW, bind_mode="receiver"), "bench-receiver")
    started = time.perf_counter()  # before the bind: the first turn already takes part of the backlog (found by a review)
    dispatcher.run_until(lambda: dispatcher.stats.receipts >= count, timeout=600)
    elapsed = time.perf_counter() - started
    stats = dispatcher.stats
    dispatcher.close()
    return {"receipts": count, "seconds": round(elapsed, 2), "per_second": round(count / elapsed), "unknown": stats.receipts_unknown}


def check_dispatch(app: Any, code: str, count: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from backoffice.extensions import db
    from backoffice.models import EnterpriseAccount, Message, MessagePart
    from backoffice.services.messaging import message_counts
    from backoffice.services.send_log import verify_chain

    with app.app_context():
        account = db.session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code))
        counts = message_counts(db.session, account.id)
        by_status = dict(db.session.execute(sa.select(Message.status, sa.func.count()).group_by(Message.status)).all())
        resent = db.session.scalar(sa.select(sa.func.count()).select_from(MessagePart).where(MessagePart.resent))
        result = {
            "statuses": by_status,
            "all_delivered": by_status.get("delivered") == count,
            "counts_balanced": counts.balanced,
            "parts_resent": resent,
            "send_log_problems": verify_chain(db.session)[:5],
        }
        db.session.remove()
    return result


# --- d: intake under gunicorn -----------------------------------------------------------------------


def post_all(port: int, secret: str, bodies: list[bytes], threads: int) -> tuple[float, int, dict[int, int], list[float]]:
    """Post every body from `threads` clients; (seconds, messages queued, statuses, latencies)."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    lock = threading.Lock()
    cursor = 0
    queued = 0
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    barrier = threading.Barrier(threads + 1)

    def client() -> None:
        nonlocal cursor, queued
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        barrier.wait()
        while True:
            with lock:
                if cursor >= len(bodies):
                    break
                body = bodies[cursor]
                cursor += 1
            began = time.perf_counter()
            conn.request("POST", "/api/v1/messages", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            took = time.perf_counter() - began
            ok = sum(1 for m in json.loads(data)["messages"] if m["status"] == "queued") if response.status == 202 else 0
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                queued += ok
                latencies.append(took)
            if response.will_close:
                conn.close()  # sync workers close after each response; the next request reconnects
        conn.close()

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    return time.perf_counter() - began, queued, statuses, latencies


def intake(instance: Path, code: str, app: Any, batches: int, singles: int, threads: int, url: str) -> dict[str, Any]:
    import sqlalchemy as sa

    from backoffice.extensions import db
    from backoffice.models import EnterpriseAccount, SubAccount
    from backoffice.services.api_keys import create_api_key

    with app.app_context():
        account = db.session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code))
        primary = db.session.scalar(sa.select(SubAccount).where(SubAccount.account_id == account.id, SubAccount.is_primary))
        _, secret = create_api_key(db.session, primary, label="bench", actor="bench")
        db.session.commit()
        db.session.remove()
    port = free_port()
    server, _ = start_gunicorn(instance, port, database_url=url)
    try:
        batch_bodies = [json.dumps({"to": numbers(5_000_000 + i * 1000, 1000), "content": CONTENT}).encode() for i in range(batches)]
        single_bodies = [json.dumps({"to": numbers(9_000_000 + i, 1)[0], "content": CONTENT}).encode() for i in range(singles)]
        post_all(port, secret, single_bodies[:100], threads)  # warm-up: imports, caches, connections
        single_seconds, single_queued, single_statuses, single_latencies = post_all(port, secret, single_bodies[100:], threads)
        batch_seconds, batch_queued, batch_statuses, batch_latencies = post_all(port, secret, batch_bodies, 2)
    finally:
        server.terminate()
        server.wait(30)
    single_latencies.sort()
    return {
        "batch": {
            "requests": batches,
            "recipients_per_request": 1000,
            "client_threads": 2,
            "seconds": round(batch_seconds, 2),
            "messages_per_s": round(batch_queued / batch_seconds),
            "all_accepted": batch_statuses == {202: batches} and batch_queued == 1000 * batches,
            "latency_ms_median": round(1000 * statistics.median(batch_latencies), 1),
            "statuses": batch_statuses,
        },
        "single": {
            "requests": singles - 100,
            "client_threads": threads,
            "seconds": round(single_seconds, 2),
            "requests_per_s": round(single_statuses.get(202, 0) / single_seconds),  # accepted ones only
            "all_accepted": single_statuses == {202: singles - 100} and single_queued == singles - 100,
            "latency_ms_median": round(1000 * statistics.median(single_latencies), 1),
            "latency_ms_p99": round(1000 * single_latencies[int(0.99 * (len(single_latencies) - 1))], 1),
            "statuses": single_statuses,
        },
        "server": "gunicorn --workers 2 --preload (sync)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="queued messages for (b) and receipts for (c)")
    parser.add_argument("--batches", type=int, default=20, help="requests of 1,000 recipients for (d)")
    parser.add_argument("--singles", type=int, default=2000, help="single-message requests for (d)")
    parser.add_argument("--threads", type=int, default=4, help="client threads for single-message requests")
    parser.add_argument("--window", type=int, default=WINDOW, help="the dispatcher's window in (b); the ceiling keeps 10")
    parser.add_argument("--skip-intake", action="store_true")
    parser.add_argument("--postgresql", action="store_true", help="(b), (c), (d) on a throwaway PostgreSQL server, not SQLite")
    options = parser.parse_args()

    env = environment()
    work = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    context = multiprocessing.get_context("spawn")
    port_out = context.Queue()
    stop = context.Event()
    server = context.Process(target=serve, args=(port_out, stop), daemon=True)
    server.start()
    port = port_out.get(timeout=30)
    report: dict[str, Any] = {"environment": env, "ceiling_window": WINDOW}
    databases = contextlib.ExitStack()
    try:
        pg_server = None
        if options.postgresql:
            from tests.postgresql.server import throwaway_server

            pg_server = databases.enter_context(throwaway_server(durable=True))
        env["database"] = "PostgreSQL (throwaway server, fsync on)" if pg_server else f"SQLite {sqlite3.sqlite_version} (WAL)"
        (work / "dispatch").mkdir()
        app, code = funded_app(work / "dispatch", database_url(work / "dispatch", pg_server))
        queue_messages(app, code, options.messages)
        half = (WINDOW + 1) // 2

        def ceilings() -> tuple[float, float]:
            """(with receipts, without): the held receipts taken off before anything else runs."""
            with_receipts = raw_ceiling(port, options.messages, chunk=half, receipts=True)
            drain_raw(port, options.messages)
            return with_receipts, raw_ceiling(port, options.messages, chunk=half)

        ceilings()  # warm-up, not counted
        before, bare_before = ceilings()
        report["b_dispatch"] = dispatch(app, port, options.messages, options.window)
        report["c_receipts"] = drain_receipts(app, port, options.messages)
        after, bare_after = ceilings()  # after (c): the backlog (b) left is the dispatcher's to take
        ceiling, bare = (before + after) / 2, (bare_before + bare_after) / 2
        report["a_ceiling_raw_client"] = {
            "per_second": round(ceiling),
            "before_b": round(before),
            "after_c": round(after),
            "without_receipts": {"per_second": round(bare), "before_b": round(bare_before), "after_c": round(bare_after)},
        }
        report["b_share_of_ceiling"] = f"{report['b_dispatch']['per_second'] / ceiling:.0%}"
        report["b_share_of_ceiling_without_receipts"] = f"{report['b_dispatch']['per_second'] / bare:.0%}"
        library = smpplib_ceiling(port, min(options.messages, 10_000))
        report["a2_smpplib_client"] = {"per_second": round(library), "b_share": f"{report['b_dispatch']['per_second'] / library:.0%}"}
        report["after_b_c"] = check_dispatch(app, code, options.messages)
        if not options.skip_intake:
            (work / "intake").mkdir()
            intake_url = database_url(work / "intake", pg_server)
            intake_app, intake_code = funded_app(work / "intake", intake_url)
            report["d_intake"] = intake(
                work / "intake", intake_code, intake_app, options.batches, options.singles, options.threads, intake_url
            )
    finally:
        stop.set()
        server.join(10)
        port_out.close()
        port_out.join_thread()
        databases.close()  # the PostgreSQL server, if any
        shutil.rmtree(work, ignore_errors=True)
    report["environment"]["cpu_reference_ms_at_end"] = str(cpu_reference())
    report["targets"] = {
        "dispatch_per_s": 1500,
        "share_of_ceiling": "60%",
        "receipts_per_s": 1500,
        "intake_batch_messages_per_s": 10_000,
        "intake_single_requests_per_s": 500,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
