"""The customer portal: what a sub-account sees of its enterprise account."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa
from flask import Blueprint, Response, abort, render_template
from flask_login import current_user

from backoffice.auth import roles_required
from backoffice.extensions import db
from backoffice.models import Contract
from backoffice.sales import send_contract_file

if TYPE_CHECKING:
    from backoffice.services.message_export import ExportPeriod

bp = Blueprint("portal", __name__, url_prefix="/portal")


@bp.route("/")
@roles_required("customer")
def home() -> Any:
    account = current_user.record.account
    contracts = db.session.scalars(sa.select(Contract).where(Contract.account_id == account.id).order_by(Contract.id.desc())).all()
    return render_template("portal/home.html", account=account, sub=current_user.record, contracts=contracts)


@bp.route("/contracts/<contract_no>.pdf")
@roles_required("customer")
def contract_pdf(contract_no: str) -> Any:
    contract = db.session.scalar(sa.select(Contract).where(Contract.contract_no == contract_no))
    if contract is None or contract.account_id != current_user.record.account_id:
        abort(404)
    return send_contract_file(contract, "pdf")


@bp.route("/receipts", methods=["GET", "POST"])
@roles_required("customer")
def receipts() -> Any:
    """The customer records a bank transfer with its voucher, and sees what finance made of it
    (a rejection shows the reason) and the invoices."""

    from flask import flash, redirect, request, url_for

    from backoffice.clock import local_today
    from backoffice.finance import attempt, record_receipt_from_form
    from backoffice.models import Invoice, Receipt
    from backoffice.services.invoices import amounts_owed

    account = current_user.record.account
    errors: dict[str, str] = {}
    if request.method == "POST":
        receipt, errors = attempt(lambda: record_receipt_from_form(account.code))
        if receipt is not None:
            flash(f"已提交汇款登记（编号 {receipt.id}），财务确认到账后会充值并通知您", "ok")
            return redirect(url_for("portal.receipts"))
    rows = db.session.scalars(sa.select(Receipt).where(Receipt.account_id == account.id).order_by(Receipt.id.desc())).all()
    invoices = list(db.session.scalars(sa.select(Invoice).where(Invoice.account_id == account.id).order_by(Invoice.id.desc())))
    owed = amounts_owed(db.session, invoices)
    return render_template(
        "portal/receipts.html",
        account=account,
        receipts=rows,
        invoices=invoices,
        owed=owed,
        errors=errors,
        form=request.form,
        today=local_today(),
    ), (422 if errors else 200)


@bp.route("/invoices/<number>.pdf")
@roles_required("customer")
def invoice_pdf(number: str) -> Any:
    from backoffice.finance import send_document
    from backoffice.services.invoices import get_invoice

    invoice = get_invoice(db.session, number)
    if invoice.account_id != current_user.record.account_id:
        abort(404)
    return send_document(invoice.pdf_file, "application/pdf", sha256=invoice.pdf_sha256)


@bp.route("/receipts/<id32:receipt_id>/voucher")
@roles_required("customer")
def receipt_voucher(receipt_id: int) -> Any:
    from backoffice.finance import send_document
    from backoffice.models import Receipt

    receipt = db.session.get(Receipt, receipt_id)
    if receipt is None or receipt.account_id != current_user.record.account_id:
        abort(404)
    return send_document(receipt.voucher_file, receipt.voucher_type, sha256=receipt.voucher_sha256)


@bp.route("/statement")
@roles_required("customer")
def statement() -> Any:
    """余额明细: the balance's movements over a range of days, on the page or as CSV (?format=csv)."""
    from flask import request

    from backoffice.errors import ValidationFailed
    from backoffice.services.balance_statement import balance_statement, statement_csv
    from backoffice.services.message_export import export_period

    account = current_user.record.account
    try:
        period = export_period(request.args.get("from"), request.args.get("to"), verb="查询")
    except ValidationFailed as failed:
        return render_template("portal/statement.html", account=account, statement=None, errors=failed.errors, form=request.args), 400
    found = balance_statement(db.session, account, period.first, period.last)
    if request.args.get("format") == "csv":
        return csv_download(period, statement_csv(found, account), "statement", "余额明细")
    form = {"from": period.first.isoformat(), "to": period.last.isoformat()}
    return render_template("portal/statement.html", account=account, statement=found, errors={}, form=form)


def csv_download(period: ExportPeriod, rows: Iterable[str], ascii_name: str, name: str) -> Response:
    """`rows` as a CSV download of `period`: `name_<first>-<last>.csv` (Chinese, for browsers that
    read RFC 5987's filename*), `ascii_name_…` for those that do not."""
    days = f"{period.first:%Y%m%d}-{period.last:%Y%m%d}"
    disposition = f"attachment; filename=\"{ascii_name}_{days}.csv\"; filename*=UTF-8''{quote(f'{name}_{days}.csv')}"
    return Response(rows, mimetype="text/csv", headers={"Content-Disposition": disposition})
