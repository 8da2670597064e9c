"""Finance: the queue of bank-transfer receipts (record, confirm, reject, reverse), bank
statement import with proposed matches, invoices, and the books in the browser (trial balance,
income statement, balance sheet, BQL) with the reconciliation of books and database."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from werkzeug.datastructures import FileStorage

from backoffice.auth import roles_required, safe_next
from backoffice.cli import after_commit_catch_up, busy_error
from backoffice.clock import local_today
from backoffice.errors import DamagedDocument, DomainError, ValidationFailed
from backoffice.extensions import db
from backoffice.models import Invoice, Receipt
from backoffice.models.finance import RECEIPT_STATUSES
from backoffice.money import format_price
from backoffice.services import invoices as invoice_service
from backoffice.services import receipts as receipt_service
from backoffice.services import statements as statement_service
from backoffice.services.bookkeeping import check_and_reconcile
from backoffice.services.staged_files import recover_file
from ledger.query import QueryError, QueryResult, run_query, statements_of

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
        "finance/books.html", statements=statements_of(report.balances) if main.exists() else None, report=report,
        query=query, result=result, query_error=query_error,
    )  # fmt: skip


def voucher_of(upload: FileStorage | None, limit: int) -> receipt_service.Voucher | None:
    """The uploaded voucher, read at most one byte past the limit (the service reports the size)."""
    if upload is None or not upload.filename:
        return None
    return receipt_service.Voucher(upload.filename, upload.stream.read(limit + 1))


def attempt(action: Callable[[], Any]) -> tuple[Any, dict[str, str]]:
    """Run a form's service call and commit it: (result, {}) or, refused and rolled back,
    (None, the errors per field; "_form" for the form as a whole)."""
    try:
        result = action()
        db.session.commit()
        return result, {}
    except ValidationFailed as failed:
        db.session.rollback()
        return None, failed.errors
    except DomainError as error:
        db.session.rollback()
        return None, {"_form": error.message}
    except sa.exc.OperationalError as exc:
        return None, {"_form": busy_error(exc).message}


def record_receipt_from_form(account_code: str) -> Receipt:
    """The receipt form (finance's or the customer's portal) as a recorded receipt."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    form, limit = request.form, app.config["VOUCHER_MAX_BYTES"]
    return receipt_service.record_receipt(
        db.session, account_code=account_code, amount=form.get("amount", ""), paid_on=form.get("paid_on", ""),
        payer_name=form.get("payer_name"), bank_reference=form.get("bank_reference", ""), bank=receiving_bank(account_code),
        voucher=voucher_of(request.files.get("voucher"), limit), recorded_by=current_user.actor,
        documents_root=Path(app.config["DOCUMENTS_PATH"]), max_voucher_bytes=limit,
    )  # fmt: skip


def receiving_bank(account_code: str) -> str:
    return receipt_service.receiving_bank(db.session, account_code, default=current_app.config["RECEIVING_BANK"])


def send_document(relative: str | None, mimetype: str | None = None, *, sha256: str | None, download: bool = False) -> Any:
    """A stored document, served only if it is the file the database recorded (its SHA-256):
    a damaged one was served as valid (found by a review); now it is refused, and logged. One
    committed but left `.pending` by a process that died before the rename is put in place."""
    documents = Path(current_app.config["DOCUMENTS_PATH"])
    root = documents.resolve()
    path = (root / (relative or "")).resolve()
    if not relative or not path.is_relative_to(root):
        abort(404)
    if not recover_file(db.session, documents, relative):  # (in place already: True at once)
        abort(404)
    content = path.read_bytes()  # (small files: a contract, an invoice, a voucher)
    if sha256 and hashlib.sha256(content).hexdigest() != sha256:
        current_app.logger.error("document %s does not match the SHA-256 recorded for it: not served", relative)
        raise DamagedDocument(f"文件 {path.name} 已损坏（与签发时记录的校验值不符），未提供下载：请联系管理员从备份恢复")
    return send_file(io.BytesIO(content), mimetype=mimetype, download_name=path.name, as_attachment=download)


@bp.route("/receipts", methods=["GET", "POST"])
@roles_required("finance", "admin")
def receipts() -> Any:
    """The queue of receipts waiting for finance, and a form to record one for a customer."""
    errors: dict[str, str] = {}
    # A GET may carry the fields filled in (from a statement line nobody recorded yet).
    form = request.form if request.method == "POST" else request.args
    if request.method == "POST":
        receipt, errors = attempt(lambda: record_receipt_from_form(form.get("account", "").strip()))
        if receipt is not None:
            flash(f"已登记到账记录 {receipt.id}，等待确认", "ok")
            return redirect(url_for("finance.receipt_detail", receipt_id=receipt.id))
    recent = db.session.scalars(
        sa.select(Receipt).where(Receipt.status.in_(("confirmed", "rejected", "reversed"))).order_by(Receipt.id.desc()).limit(50)
    ).all()
    return render_template(
        "finance/receipts.html", queue=receipt_service.receipt_queue(db.session), recent=recent, errors=errors, form=form,
        threshold=current_app.config["FOUR_EYES_THRESHOLD"], statuses=RECEIPT_STATUSES,
    ), (422 if errors else 200)  # fmt: skip


@bp.route("/receipts/<id32:receipt_id>")
@roles_required("finance", "admin")
def receipt_detail(receipt_id: int) -> Any:
    receipt = receipt_service.get_receipt(db.session, receipt_id)
    invoices = list(db.session.scalars(sa.select(Invoice).where(Invoice.receipt_id == receipt.id)))
    return render_template(
        "finance/receipt.html", receipt=receipt, invoices=invoices, owed=invoice_service.amounts_owed(db.session, invoices),
        threshold=current_app.config["FOUR_EYES_THRESHOLD"], today=local_today(),
    )  # fmt: skip


@bp.route("/receipts/<id32:receipt_id>/voucher")
@roles_required("finance", "admin")
def receipt_voucher(receipt_id: int) -> Any:
    receipt = receipt_service.get_receipt(db.session, receipt_id)
    return send_document(receipt.voucher_file, receipt.voucher_type, sha256=receipt.voucher_sha256)


def _act(receipt_id: int, action: str) -> Any:
    """Run one finance action on a receipt; success and failure both come back to its page."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        if action == "confirm":
            line_id = request.form.get("line_id")
            if line_id:
                statement_service.match_line(db.session, line_id, receipt_id, actor=current_user.actor)
            result = receipt_service.confirm_receipt(
                db.session, receipt_id, actor=current_user.actor, four_eyes_threshold=app.config["FOUR_EYES_THRESHOLD"],
                documents_root=Path(app.config["DOCUMENTS_PATH"]),
            )  # fmt: skip
            if result.receipt.status == "approved":
                message = "已初审：金额超过四眼原则限额，须由另一位财务人员复核确认"
            elif result.already:
                message = "该到账此前已确认，未重复入账"
            else:
                number = result.invoice.number if result.invoice else ""
                message = f"已确认入账，可用余额 {format_price(result.balance)} 元，发票 {number}"
        elif action == "reject":
            receipt_service.reject_receipt(db.session, receipt_id, reason=request.form.get("reason"), actor=current_user.actor)
            message = "已驳回，客户会看到原因"
        else:
            reversal = receipt_service.reverse_receipt(
                db.session, receipt_id, reason=request.form.get("reason"), actor=current_user.actor,
                documents_root=Path(app.config["DOCUMENTS_PATH"]),
            )  # fmt: skip
            message = reversal.summary()
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        flash(error.message, "error")
        return redirect(safe_next(request.form.get("back")) or url_for("finance.receipt_detail", receipt_id=receipt_id))
    except sa.exc.OperationalError as exc:
        flash(busy_error(exc).message, "error")
        return redirect(url_for("finance.receipt_detail", receipt_id=receipt_id))
    for warning in after_commit_catch_up(app):
        flash(warning, "error")
    flash(message, "ok")
    return redirect(url_for("finance.receipt_detail", receipt_id=receipt_id))


@bp.post("/receipts/<id32:receipt_id>/confirm")
@roles_required("finance", "admin")
def receipt_confirm(receipt_id: int) -> Any:
    return _act(receipt_id, "confirm")


@bp.post("/receipts/<id32:receipt_id>/reject")
@roles_required("finance", "admin")
def receipt_reject(receipt_id: int) -> Any:
    return _act(receipt_id, "reject")


@bp.post("/receipts/<id32:receipt_id>/reverse")
@roles_required("finance", "admin")
def receipt_reverse(receipt_id: int) -> Any:
    return _act(receipt_id, "reverse")


@bp.route("/statements", methods=["GET", "POST"])
@roles_required("finance", "admin")
def statements_page() -> Any:
    """Import a bank statement; every unmatched credit with its proposed receipt."""
    errors: dict[str, str] = {}
    if request.method == "POST":
        upload = request.files.get("statement")

        def load() -> Any:
            if upload is None or not upload.filename:
                raise ValidationFailed({"file": "请选择对账单文件（CSV）"})
            content = upload.stream.read(statement_service.MAX_STATEMENT_BYTES + 1)
            return statement_service.import_statement(db.session, filename=upload.filename, content=content, actor=current_user.actor)

        record, errors = attempt(load)
        if record is not None:
            flash(f"已导入对账单：{record.line_count} 笔入账，跳过支出 {record.skipped_debits} 笔、重复 {record.duplicate_lines} 笔", "ok")
            return redirect(url_for("finance.statements_page"))
    ignored = statement_service.ignored_lines(db.session)
    show_ignored = request.args.get("ignored") == "1"
    return render_template(
        "finance/statements.html", proposals=statement_service.proposals(db.session), errors=errors, ignored=ignored,
        show_ignored=show_ignored,
    ), (422 if errors else 200)  # fmt: skip


def _line_action(action: Callable[[], str], back: str | None = None) -> Any:
    """Run one action on a statement line, commit, and come back to the statements page."""
    try:
        message, category = action(), "ok"
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        message, category = error.message, "error"
    except sa.exc.OperationalError as exc:
        message, category = busy_error(exc).message, "error"
    flash(message, category)
    return redirect(back or url_for("finance.statements_page"))


@bp.post("/statements/lines/<id32:line_id>/link")
@roles_required("finance", "admin")
def statement_line_link(line_id: int) -> Any:
    """Tie a line to the receipt confirmed before the statement came (nothing credited again)."""

    def link() -> str:
        receipt = statement_service.link_line(db.session, line_id, request.form.get("receipt_id", ""), actor=current_user.actor)
        reference = statement_service.get_line(db.session, line_id).reference
        return f"已将对账单明细（流水号 {reference}）关联到已入账的到账记录 {receipt.id}，未重复入账"

    return _line_action(link)


@bp.post("/statements/lines/<id32:line_id>/ignore")
@roles_required("finance", "admin")
def statement_line_ignore(line_id: int) -> Any:
    """Set a line aside with a reason, off the queue of lines to match."""

    def ignore() -> str:
        line = statement_service.ignore_line(db.session, line_id, reason=request.form.get("reason"), actor=current_user.actor)
        return f"已忽略对账单明细（流水号 {line.reference}），可在“已忽略的明细”中查看或恢复"

    return _line_action(ignore)


@bp.post("/statements/lines/<id32:line_id>/restore")
@roles_required("finance", "admin")
def statement_line_restore(line_id: int) -> Any:
    def restore() -> str:
        line = statement_service.restore_line(db.session, line_id, actor=current_user.actor)
        return f"已恢复对账单明细（流水号 {line.reference}），重新列入待匹配"

    return _line_action(restore, url_for("finance.statements_page", ignored=1))


@bp.post("/statements/lines/<id32:line_id>/record")
@roles_required("finance", "admin")
def statement_line_record(line_id: int) -> Any:
    """Record the receipt a statement line shows, for the proposed account (then confirm it)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    code = request.form.get("account", "").strip()
    try:
        receipt = statement_service.receipt_from_line(
            db.session, line_id, account_code=code, actor=current_user.actor, default_bank=receiving_bank(code),
            documents_root=Path(app.config["DOCUMENTS_PATH"]), max_voucher_bytes=app.config["VOUCHER_MAX_BYTES"],
        )  # fmt: skip
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        flash(error.message, "error")
        return redirect(url_for("finance.statements_page"))
    flash(f"已按对账单登记到账记录 {receipt.id}，请确认入账", "ok")
    return redirect(url_for("finance.receipt_detail", receipt_id=receipt.id))


@bp.route("/invoices")
@roles_required("finance", "admin")
def invoices() -> Any:
    today = local_today()
    overdue = request.args.get("overdue") == "1"
    rows = invoice_service.invoice_list(db.session, overdue_only=overdue, today=today)
    owed = invoice_service.amounts_owed(db.session, rows)
    return render_template("finance/invoices.html", invoices=rows, today=today, overdue=overdue, owed=owed)


@bp.route("/invoices/<number>.pdf")
@roles_required("finance", "admin")
def invoice_pdf(number: str) -> Any:
    invoice = invoice_service.get_invoice(db.session, number)
    return send_document(invoice.pdf_file, "application/pdf", sha256=invoice.pdf_sha256)
