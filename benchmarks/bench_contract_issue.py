"""Contract issuance: median seconds from form data to PDF (signed) + DOCX + account + books,
per template, on a fresh embedded instance. Target: < 1 s median (issue #2).

Run: .venv/bin/python benchmarks/bench_contract_issue.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backoffice import create_app  # noqa: E402
from backoffice.cli import after_commit_catch_up, signing_identity  # noqa: E402
from backoffice.clock import local_today  # noqa: E402
from backoffice.extensions import db  # noqa: E402
from backoffice.services.contract_fields import flatten, nest  # noqa: E402
from backoffice.services.contracts import issue_contract  # noqa: E402
from backoffice.services.templates import list_templates  # noqa: E402


def environment() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": str(os.cpu_count()), "commit": commit or "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        instance = Path(tmp)
        app = create_app(
            {
                "INSTANCE_PATH": instance,
                "LEDGER_PATH": instance / "ledger",
                "DOCUMENTS_PATH": instance / "documents",
                "KEYS_PATH": instance / "keys",
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'bench.sqlite3'}",
                "SECRET_KEY": "bench",
            }
        )
        results = {}
        with app.app_context():
            db.create_all()
            identity = signing_identity(app)
            for template in list_templates():
                timings = []
                for i in range(args.runs + 1):
                    data = flatten(template.sample)
                    data["customer.name"] = f"{data['customer.name']}{i}"
                    if data.get("service_code"):  # a live account's code is not given twice: one of the same length each
                        data["service_code"] = f"{data['service_code'][:-4]}{i:04d}"
                    for signed in ("customer_signed_on", "provider_signed_on"):  # the samples' dates age; signing is today
                        data[signed] = local_today().isoformat()
                    start = time.perf_counter()
                    issue_contract(
                        db.session,
                        template.id,
                        nest(data),
                        issued_by="bench",
                        documents_root=instance / "documents",
                        signing_identity=identity,
                    )
                    db.session.commit()
                    warnings = after_commit_catch_up(app)
                    elapsed = time.perf_counter() - start
                    assert not warnings, warnings
                    if i:  # the first run warms caches (fonts, templates, seal)
                        timings.append(elapsed)
                results[template.id] = {
                    "median_s": round(statistics.median(timings), 3),
                    "p90_s": round(sorted(timings)[int(0.9 * len(timings)) - 1], 3),
                    "runs": len(timings),
                }
            db.engine.dispose()
    print(
        json.dumps(
            {"benchmark": "contract_issue", "target_median_s": 1.0, "environment": environment(), "results": results},
            ensure_ascii=False,
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
