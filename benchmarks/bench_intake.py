"""API intake under gunicorn (issue #5): messages accepted and charged per second.

A temporary instance (embedded SQLite, WAL) gets one funded account (template 000, a real issued
contract and a confirmed receipt) with its rate limit raised out of the way (the limiter still
runs: one conditional UPDATE per request), and an API key. gunicorn serves it as `make run` does
(`--workers 2 --preload`, sync workers) on a random loopback port; N client threads post with
http.client (keep-alive where the server offers it; sync workers close after each answer):

a. single: one recipient per request, requests/s (target >= 500);
b. batch: 1,000 recipients per request, messages/s (target >= 10,000).

Each round measures both; the JSON has every round and the medians, the CPU the server and the
client used, and the load average before each measurement. Client and server share the machine's
cores (2 on the development machine), so the figures are a floor for the server alone; other work
on the machine shows in `loadavg_1m`. Every answer must be 202; afterwards the send log's chain
is verified and the account checked (accepted = sent + queued + refused + refunded, balance =
funded - charged).

Run: .venv/bin/python benchmarks/bench_intake.py [--seconds 10] [--rounds 3] [--threads 8]
     [--batch-threads 2] [--client-ref] [--keywords 10000] [--gunicorn-arg=--workers=1 ...]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
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

from common import cpu_reference, free_port, open_funded_account, start_gunicorn  # noqa: E402

CONTENT = "【蓉城会员】您的验证码是 482913，5 分钟内有效。"
FUNDS = Decimal("900000.00")  # 20 million messages at 0.045


def environment(gunicorn_args: list[str], options: argparse.Namespace) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT).stdout
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "commit": (commit or "?") + ("+uncommitted changes" if dirty.strip() else ""),
        "server": "gunicorn " + " ".join(gunicorn_args) + " wsgi:app",
        "client": f"{options.threads} threads (single), {options.batch_threads} threads (batch), http.client"
        + (", a client_ref on every request" if options.client_ref else ""),
        "keywords_listed": options.keywords,
        "note": "client and server share the machine's cores; loadavg_1m shows other work",
    }


def prepare(instance: Path, keywords: int = 0) -> tuple[str, str]:
    """A funded active account and an API key, and `keywords` forbidden keywords the content does
    not hold (real words, as `bench_keywords.py` draws them); returns (account code, secret)."""
    os.environ["BACKOFFICE_INSTANCE_PATH"] = str(instance)
    from backoffice import create_app
    from backoffice.cli import after_commit_catch_up
    from backoffice.extensions import db
    from backoffice.services.api_keys import create_api_key

    app = create_app({"SECRET_KEY": "bench"})
    with app.app_context():
        db.create_all()
        account = open_funded_account(app, FUNDS)
        problems = after_commit_catch_up(app)
        assert not problems, problems
        primary = next(s for s in account.sub_accounts if s.is_primary)
        _, secret = create_api_key(db.session, primary, label="bench", actor="bench")
        if keywords:
            from bench_keywords import workload

            from backoffice.models import ForbiddenKeyword

            db.session.add_all(ForbiddenKeyword(word=word, created_by="bench") for word in workload(keywords, 0, False)[0])
        db.session.commit()
        code = account.code
        db.session.remove()
        db.engine.dispose()
    return code, secret


def process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by `pid` and its children (gunicorn's master and workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    ticks = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def recipients(rng: random.Random, n: int) -> list[str]:
    """`n` distinct mobile numbers of one carrier prefix, never consecutive."""
    prefixes = ("138", "139", "150", "186", "189", "177", "133")
    base = rng.randrange(0, 10**8 - n * 7)
    prefix = rng.choice(prefixes)
    return [f"{prefix}{base + i * 7:08d}" for i in range(n)]


def load(port: int, secret: str, server_pid: int, *, threads: int, seconds: float, size: int, client_ref: bool) -> dict[str, Any]:
    """`threads` clients posting requests of `size` recipients for `seconds`."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    stop = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]
    statuses: list[dict[int, int]] = [{} for _ in range(threads)]
    accepted = [0] * threads
    start = threading.Barrier(threads + 1)
    run = f"{time.time_ns():x}"

    def client(i: int) -> None:
        rng = random.Random(i * 7919 + size + time.time_ns())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        bodies = [{"to": recipients(rng, size) if size > 1 else recipients(rng, 1)[0], "content": CONTENT} for _ in range(50)]
        texts = [json.dumps(b) for b in bodies]
        start.wait()
        n = 0
        while time.monotonic() < stop:
            n += 1
            body = json.dumps({**bodies[n % 50], "client_ref": f"{run}-{i}-{n}"}) if client_ref else texts[n % 50]
            began = time.perf_counter()
            try:
                conn.request("POST", "/api/v1/messages", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # the next request reconnects
                statuses[i][0] = statuses[i].get(0, 0) + 1
                continue
            latencies[i].append(time.perf_counter() - began)
            statuses[i][response.status] = statuses[i].get(response.status, 0) + 1
            if response.status == 202:
                accepted[i] += sum(1 for m in json.loads(data)["messages"] if m["status"] == "queued")
            if response.headers.get("Connection", "").lower() == "close":
                conn.close()
        conn.close()

    pool = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    load_before = os.getloadavg()[0]
    start.wait()
    began, server_cpu, client_cpu = time.perf_counter(), process_tree_cpu(server_pid), sum(os.times()[:2])
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - began
    server_cpu, client_cpu = process_tree_cpu(server_pid) - server_cpu, sum(os.times()[:2]) - client_cpu
    all_latencies = sorted(x for per in latencies for x in per)
    merged: dict[int, int] = {}
    for per in statuses:
        for status, count in per.items():
            merged[status] = merged.get(status, 0) + count
    requests = len(all_latencies)
    return {
        "recipients_per_request": size,
        "seconds": round(elapsed, 2),
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "messages_per_s": round(sum(accepted) / elapsed, 1),
        "latency_ms_p50": round(1000 * statistics.median(all_latencies), 1) if all_latencies else None,
        "latency_ms_p99": round(1000 * all_latencies[int(0.99 * (requests - 1))], 1) if all_latencies else None,
        "statuses": {str(k): v for k, v in sorted(merged.items())},
        "server_cores": round(server_cpu / elapsed, 2),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, requests), 2),
        "client_cores": round(client_cpu / elapsed, 2),
        "loadavg_1m_before": round(load_before, 2),
        "cpu_reference_ms_after": cpu_reference(),  # common.cpu_reference: lower is a faster VM
    }


def check(instance: Path, code: str) -> dict[str, Any]:
    """After the run: the send log's chain and the account's invariant and money."""
    import sqlalchemy as sa

    from backoffice import create_app
    from backoffice.extensions import db
    from backoffice.models import EnterpriseAccount, Message, SendLog
    from backoffice.services.messaging import message_counts
    from backoffice.services.send_log import verify_chain

    app = create_app({"SECRET_KEY": "bench", "INSTANCE_PATH": instance})
    with app.app_context():
        account = db.session.scalar(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code))
        counts = message_counts(db.session, account.id)
        charged = db.session.scalar(sa.select(sa.func.sum(Message.charge)).where(Message.account_id == account.id))
        logged = db.session.scalar(sa.select(sa.func.count()).select_from(SendLog))
        result = {
            "messages": counts.accepted,
            "counts_balanced": counts.balanced,
            "balance_matches_charges": FUNDS - (charged or 0) == account.balance,
            "send_log_rows": logged,
            "send_log_problems": verify_chain(db.session)[:5],
        }
        db.session.remove()
        db.engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="single + batch measurements, alternating")
    parser.add_argument("--threads", type=int, default=8, help="client threads for single-message requests")
    parser.add_argument("--batch-threads", type=int, default=2, help="client threads for 1,000-recipient requests")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--client-ref", action="store_true", help="send a (unique) client_ref with every request")
    parser.add_argument("--gunicorn-arg", action="append", default=[], help="extra gunicorn argument (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance")
    parser.add_argument("--keywords", type=int, default=0, help="forbidden keywords listed (none in the content)")
    options = parser.parse_args()

    instance = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    code, secret = prepare(instance, options.keywords)
    port = free_port()
    server, args = start_gunicorn(instance, port, options.gunicorn_arg)
    env = environment(args, options)
    singles, batches = [], []
    try:
        common = {"client_ref": options.client_ref}
        load(port, secret, server.pid, threads=options.threads, seconds=1.0, size=1, **common)  # warm-up: imports, caches
        for _ in range(options.rounds):
            singles.append(load(port, secret, server.pid, threads=options.threads, seconds=options.seconds, size=1, **common))
            batches.append(
                load(port, secret, server.pid, threads=options.batch_threads, seconds=options.seconds, size=options.batch_size, **common)
            )
    finally:
        server.terminate()
        server.wait(30)
    report = {
        "environment": env,
        "single_requests_per_s": statistics.median(r["requests_per_s"] for r in singles),
        "batch_messages_per_s": statistics.median(r["messages_per_s"] for r in batches),
        "targets": {"single_requests_per_s": 500, "batch_messages_per_s": 10_000},
        "single": singles,
        "batch": batches,
        "after": check(instance, code),
    }
    print(json.dumps(report, ensure_ascii=False, indent=2))
    if options.keep:
        print(f"instance kept in {instance}", file=sys.stderr)
    else:
        shutil.rmtree(instance, ignore_errors=True)


if __name__ == "__main__":
    main()
