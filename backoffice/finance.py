"""Finance: the books in the browser (trial balance, income statement, balance sheet, BQL),
and the reconciliation of books and database. Read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, render_template, request

from backoffice.auth import roles_required
from backoffice.extensions import db
from backoffice.services.bookkeeping import check_and_reconcile
from ledger.query import QueryError, QueryResult, run_query, statements

bp = Blueprint("finance", __name__, url_prefix="/finance")


@bp.route("/books")
@roles_required("finance", "admin")
def books() -> Any:
    root = Path(current_app.config["LEDGER_PATH"])
    main = root / "main.beancount"
    report = check_and_reconcile(db.session, root)
    query = request.args.get("q", "").strip()
    result: QueryResult | None = None
    query_error = None
    if query and main.exists():
        try:
            result = run_query(main, query)
        except QueryError as exc:
            query_error = f"查询有误：{exc}"
    return render_template(
        "finance/books.html", statements=statements(main) if main.exists() else None, report=report,
        query=query, result=result, query_error=query_error,
    )  # fmt: skip
