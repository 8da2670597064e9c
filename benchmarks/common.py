"""What several benchmarks set up the same way."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gunicorn(
    instance: Path, port: int, extra: Sequence[str] = (), database_url: str | None = None
) -> tuple[subprocess.Popen[bytes], list[str]]:
    """gunicorn (`-w 2 --preload`, plus `extra`) serving the app on a loopback port for the
    instance, once it answers; (the server, its arguments). Its log is instance/gunicorn.log."""
    args = ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--preload", *extra]
    env = {**os.environ, "BACKOFFICE_INSTANCE_PATH": str(instance), "SECRET_KEY": "bench"}
    if database_url:
        env["DATABASE_URL"] = database_url
    with open(instance / "gunicorn.log", "wb") as log:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), *args, "wsgi:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/openapi.json")
            if conn.getresponse().status == 200:
                conn.close()
                return server, args
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"gunicorn did not start: see {instance / 'gunicorn.log'}")


def open_funded_account(app: Any, funds: Decimal) -> Any:
    """A real contract (template 000) whose credit is `funds` and paid, issued and confirmed the
    way the product does it; the rate limit raised so the limiter runs but never refuses."""
    from backoffice.cli import signing_identity
    from backoffice.extensions import db
    from backoffice.services.contract_fields import flatten, nest
    from backoffice.services.contracts import issue_contract
    from backoffice.services.credit import credit_receipt
    from backoffice.services.templates import get_template

    raw = flatten(get_template("enterprise_sms_center").sample)
    raw.update({"initial_messages": int(funds / Decimal("0.045")), "initial_amount": str(funds)})
    issued = issue_contract(
        db.session, "enterprise_sms_center", nest(raw), issued_by="bench",
        documents_root=Path(app.config["DOCUMENTS_PATH"]), signing_identity=signing_identity(app),
    )  # fmt: skip
    db.session.commit()
    account = issued.contract.account
    credit_receipt(
        db.session, account_code=account.code, amount=account.receivable, bank="CMB", bank_ref="BENCH-1",
        received_on=account.created_at.date(), actor="bench",
    )  # fmt: skip
    account.rate_limit_per_second = 1_000_000
    db.session.commit()
    return account


def cpu_reference() -> float:
    """Milliseconds this machine takes for a fixed pure-Python workload (JSON, hashing, dict
    work, like a request's), best of three: the VM's speed at the time of a run. The same code
    measured twice half an hour apart on this VM differed by 1.75x, so every run reports this."""
    import hashlib
    import json

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        table: dict[int, str] = {}
        for i in range(40_000):
            text = json.dumps({"to": f"138{i:08d}", "content": "【蓉城会员】验证码", "n": i}, ensure_ascii=False)
            table[i % 997] = hashlib.sha256(text.encode()).hexdigest()
        best = min(best, time.perf_counter() - started)
    return round(1000 * best, 1)
