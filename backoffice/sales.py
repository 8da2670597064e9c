"""Sales: pick a template, fill in the form its schema generates, preview, sign, issue."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from backoffice.auth import roles_required
from backoffice.cli import after_commit_catch_up, busy_error, disarm_warnings, objection_recorded, renewal_recorded, signing_identity
from backoffice.clock import local_today
from backoffice.errors import Conflict, ValidationFailed
from backoffice.extensions import db
from backoffice.finance import send_document
from backoffice.models import Contract
from backoffice.services.contracts import (
    CONFIRM_ANOTHER_ACCOUNT,
    existing_customer_warning,
    get_contract,
    issue_contract,
    live_account_codes_named,
    preview_contract,
)
from backoffice.services.renewal import (
    earliest_renewal_end,
    objection_deadline,
    parse_received_on,
    parse_until,
    renew_contract,
    renewable,
    stop_renewal,
)
from backoffice.services.templates import NETWORKS, ContractTemplate, get_template, list_templates
from reports.images import upload_as_data_uri

bp = Blueprint("sales", __name__, url_prefix="/sales")


def _form_values(template: ContractTemplate) -> dict[str, Any]:
    """The submitted form as raw field values (validation is the service's job)."""
    raw: dict[str, Any] = {}
    for spec in template.fields:
        if spec.type == "networks":
            raw[spec.name] = request.form.getlist(spec.name)
        else:  # a box too, as posted: "on" when ticked, nothing when not, "false" or 否 from a script
            # (found by a fuzzing round: any value of a box, "false" too, was taken as ticked)
            raw[spec.name] = request.form.get(spec.name, "")
    return raw


def _signature(side: str) -> bytes | str | None:
    upload = request.files.get(f"{side}_signature_file")
    if upload and upload.filename:
        return upload.read()
    return request.form.get(f"{side}_signature") or None


@bp.route("/")
@roles_required("sales", "admin")
def index() -> Any:
    contracts = db.session.scalars(sa.select(Contract).order_by(Contract.id.desc()).limit(200)).all()
    return render_template("sales/index.html", templates=list_templates(), contracts=contracts)


@bp.route("/new/<template_id>", methods=["GET", "POST"])
@roles_required("sales", "admin")
def new_contract(template_id: str) -> Any:
    template = get_template(template_id)
    errors: dict[str, str] = {}
    preview_html = None
    if request.method == "GET":
        # A fresh submission id per form shown: resubmitting the same form issues once.
        return _render_form(template, {f.name: f.default for f in template.fields}, {}, uuid.uuid4().hex)
    values = _form_values(template)
    submission_id = request.form.get("submission_id") or uuid.uuid4().hex
    cust, prov = _signature("customer"), _signature("provider")
    try:
        if request.form.get("action") == "preview":
            preview_html = preview_contract(db.session, template.id, values, customer_signature=cust, provider_signature=prov)
        else:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            issued = issue_contract(
                db.session,
                template.id,
                values,
                issued_by=current_user.actor,
                documents_root=Path(app.config["DOCUMENTS_PATH"]),
                signing_identity=signing_identity(app),
                customer_signature=cust,
                provider_signature=prov,
                submission_key=f"web-{submission_id}",
                signatures_required=True,
                refuse_existing_customer=True,
                confirmed_accounts=request.form.get(CONFIRM_ANOTHER_ACCOUNT, "").split(","),
            )
            db.session.commit()
            warnings = [w for w in (existing_customer_warning(db.session, issued.contract),) if w] + after_commit_catch_up(app)
            return render_template("sales/issued.html", issued=issued, contract=issued.contract, warnings=warnings)
    except ValidationFailed as failed:
        db.session.rollback()
        errors = failed.errors
    except Conflict as conflict:
        db.session.rollback()
        errors = {"_form": conflict.message}
    except sa.exc.OperationalError as exc:
        errors = {"_form": busy_error(exc).message}
    # An uploaded signature goes back in the form as the image (as a drawn one does): found by an
    # exploratory test, the form refused for another reason came back without them, and the next
    # submit was refused for missing signatures.
    kept = {side: uri for side, image in (("customer", cust), ("provider", prov)) if (uri := _kept_upload(image, errors, side))}
    return _render_form(template, values, errors, submission_id, preview_html, kept), 200 if not errors else 422


def _kept_upload(image: bytes | str | None, errors: dict[str, str], side: str) -> str | None:
    """A data URI of an uploaded signature the form did not refuse, or None."""
    if not isinstance(image, bytes) or errors.get(f"{side}_signature"):
        return None
    return upload_as_data_uri(image)


def _render_form(
    template: ContractTemplate,
    values: dict[str, Any],
    errors: dict[str, str],
    submission_id: str,
    preview_html: str | None = None,
    signatures: dict[str, str] | None = None,
) -> str:
    from backoffice.services.provider import provider_of

    return render_template(
        "sales/form.html",
        provider_saved=provider_of(db.session, template.id).saved,
        template=template,
        values=values,
        errors=errors,
        networks=NETWORKS,
        submission_id=submission_id,
        preview_html=preview_html,
        signatures=signatures or {},
        # The box stands for the accounts it names: ticked, it lets those pass, not others.
        confirm_for=",".join(live_account_codes_named(db.session, str(values.get("customer.name") or "")))
        if errors.get(CONFIRM_ANOTHER_ACCOUNT)
        else request.form.get(CONFIRM_ANOTHER_ACCOUNT, ""),
    )


@bp.route("/contracts/<contract_no>")
@roles_required("sales", "finance", "admin")
def contract_detail(contract_no: str) -> Any:
    return _contract_page(get_contract(db.session, contract_no))


def _contract_page(contract: Contract, errors: dict[str, str] | None = None, form: str | None = None) -> str:
    """The contract's page; `errors` of the form named `form` ("stop-renewal", "renew")."""
    return render_template(
        "sales/contract.html",
        contract=contract,
        objection_deadline=objection_deadline(contract),
        renewable=(can_renew := renewable(contract)),
        renewal_min=earliest_renewal_end(contract, local_today()) if can_renew else None,
        errors=errors or {},
        failed_form=form,
    )


@bp.post("/contracts/<contract_no>/stop-renewal")
@roles_required("sales", "admin")
def contract_stop_renewal(contract_no: str) -> Any:
    """The customer's written objection to the yearly extension, as sales received it."""

    def record(contract: Contract) -> str:
        received_on = parse_received_on(request.form.get("received_on"))
        expire = stop_renewal(db.session, contract, received_on=received_on, actor=current_user.actor, today=local_today())
        return objection_recorded(contract, expire)

    return _contract_action(contract_no, "stop-renewal", "received_on", record)


@bp.post("/contracts/<contract_no>/renew")
@roles_required("sales", "admin")
def contract_renew(contract_no: str) -> Any:
    """A fixed-term contract renewed on paper: its new last day, as sales recorded it."""

    def record(contract: Contract) -> str:
        until = parse_until(request.form.get("until"))
        reason = request.form.get("reason")
        return renewal_recorded(
            renew_contract(db.session, contract, until=until, actor=current_user.actor, today=local_today(), reason=reason)
        )

    return _contract_action(contract_no, "renew", "until", record)


def _contract_action(contract_no: str, form: str, field: str, act: Callable[[Contract], str]) -> Any:
    """One of the contract page's forms (`form`): `act` records it and says what was done; a
    refusal, or the database busy, shows the page again with the message at `field`."""
    contract = get_contract(db.session, contract_no)
    try:
        done = act(contract)
        db.session.commit()
    except (ValidationFailed, Conflict) as refused:
        db.session.rollback()
        errors = getattr(refused, "errors", None) or {field: refused.message}
        return _contract_page(contract, errors, form), 422
    except sa.exc.OperationalError as exc:  # (both take the database's write lock: it may be busy)
        db.session.rollback()
        return _contract_page(contract, {field: busy_error(exc).message}, form), 503
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for warning in after_commit_catch_up(app) + disarm_warnings(app, contract_no):
        flash(warning, "error")
    flash(done, "ok")
    return redirect(url_for("sales.contract_detail", contract_no=contract_no))


def send_contract_file(contract: Contract, kind: str) -> Any:
    """The contract's PDF or DOCX, checked against the SHA-256 recorded when it was issued."""
    if kind == "pdf":
        return send_document(contract.pdf_file, "application/pdf", sha256=contract.pdf_sha256)
    mimetype = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    return send_document(contract.docx_file, mimetype, sha256=contract.docx_sha256, download=True)


@bp.route("/contracts/<contract_no>.<kind>")
@roles_required("sales", "finance", "admin")
def contract_file(contract_no: str, kind: str) -> Any:
    if kind not in ("pdf", "docx"):
        abort(404)
    return send_contract_file(get_contract(db.session, contract_no), kind)
