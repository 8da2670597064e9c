"""The customer portal: what a sub-account sees of its enterprise account."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, render_template
from flask_login import current_user

from backoffice.auth import roles_required
from backoffice.extensions import db
from backoffice.models import Contract
from backoffice.sales import send_contract_file

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
