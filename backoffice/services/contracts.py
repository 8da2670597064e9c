"""Issuing a contract: one transaction numbers it, renders and signs its documents, opens the
account and its sub-accounts, books the contracted credit and plans its renewal jobs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy.orm import Session

from backoffice.clock import local_today, to_local
from backoffice.errors import Conflict, NotFound, ValidationFailed
from backoffice.models import Contract, EnterpriseAccount, ProviderProfile
from backoffice.models.accounts import codes_nesting_with
from backoffice.money import format_price
from backoffice.services import audit, documents
from backoffice.services.accounts import OpenedLogin, allocate_account_code, new_passwords, open_account
from backoffice.services.bookkeeping import record_event
from backoffice.services.contract_fields import validate_contract_fields
from backoffice.services.numbering import next_number
from backoffice.services.renewal import plan_jobs, renewal_rule_for
from backoffice.services.staged_files import stage_file
from backoffice.services.templates import ContractTemplate, get_template
from reports import images
from reports.signing import SigningIdentity

#: Plausibility of the dates sales types: a signing date more than a year back, or a term that
#: starts more than a year ahead, is a typing error far more often than a real contract.
SIGNED_WITHIN_DAYS = 366
START_WITHIN_DAYS = 366


@dataclass(frozen=True)
class IssuedContract:
    contract: Contract
    logins: list[OpenedLogin]
    pdf_path: Path
    docx_path: Path


def printed_bank(provider: Mapping[str, str]) -> dict[str, str]:
    """What a contract keeps of the provider's bank (receipts are booked by it, whatever the
    provider's details say later)."""
    return {
        "provider_bank_name": provider.get("bank_name", ""),
        "provider_bank_account": provider.get("bank_account", ""),
        "provider_bank_code": provider.get("bank_code", ""),
    }


def provider_identity(template: ContractTemplate, profile: ProviderProfile | None) -> dict[str, str]:
    """What a template's contracts print of the provider: its saved details over the template's demo values."""
    return {**template.provider, **(profile.identity if profile else {})}


#: The provider's details a contract gives as where to pay (001, 004): never printed blank.
PAYMENT_FIELDS: dict[str, str] = {"bank_account_name": "账户名称", "bank_account": "银行账号", "bank_name": "开户行"}


def provider_settings(session: Session, template: ContractTemplate) -> tuple[dict[str, str], str]:
    """The provider's identity for this template (saved settings over the template's demo
    values) and its seal image as a data URI (the uploaded one, else a drawn demo seal)."""
    profile = session.get(ProviderProfile, template.id)
    identity = provider_identity(template, profile)
    if profile is not None and profile.seal_png:
        return identity, images.to_data_uri(profile.seal_png)
    return identity, documents.demo_seal(identity["name"])


def _payment_details_given(template: ContractTemplate, identity: dict[str, str]) -> None:
    """A new contract (issue, preview) is refused while a payment detail its template prints is
    blank: found by a review, a 004 contract told the customer to pay into 账号：开户行： (nothing).
    Invoices of contracts already signed are not held up by it (a review of the first version)."""
    blank = [
        label for name, label in PAYMENT_FIELDS.items() if template.prints_payment_account and not str(identity.get(name) or "").strip()
    ]
    if blank:
        raise ValidationFailed({"_form": f"乙方的{'、'.join(blank)}为空，合同无法告诉客户向哪里付款：请管理员先在“乙方信息”中补充"})


def service_code_clash(session: Session, service_code: str | None) -> str | None:
    """Why `service_code` cannot be a new account's, or None. Replies are filed under the account
    whose service code is the longest prefix of the address they were sent to
    (`messaging.record_reply`): a code another live (not closed) account has, or one that is a
    prefix of another's or has another's as its prefix, would take that customer's replies and
    unsubscribes (found by a review: the same code given twice sent every reply to the second)."""
    if not service_code:
        return None
    # The platform's shared source address (SMSC_DEFAULT_SOURCE): a code it begins with would take
    # the replies to every account sending from it (the fixer of the above left it: no config here).
    shared = str(current_app.config.get("SMSC_DEFAULT_SOURCE") or "") if has_app_context() else ""
    if shared and shared.startswith(service_code):
        return f"服务代码：{service_code} 是平台共用发送号码 {shared} 的开头部分，回复共用号码的短信会被误归入该账户，请分配另一个服务代码"
    # The platform's notice address (SMSC_NOTICE_SOURCE): a reply to it, or to an extension of it,
    # is the platform's (`messaging.record_reply`); a code nesting with it either way is refused.
    notice = str(current_app.config.get("SMSC_NOTICE_SOURCE") or "") if has_app_context() else ""
    if notice and notice.startswith(service_code):
        return f"服务代码：{service_code} 是平台通知发送号码 {notice} 的开头部分，回复平台通知的短信会被误归入该账户，请分配另一个服务代码"
    if notice and service_code.startswith(notice):
        return f"服务代码：{service_code} 以平台通知发送号码 {notice} 开头，回复该服务代码的短信会与回复平台通知的短信混在一起，请分配另一个服务代码"
    clash = session.execute(codes_nesting_with(service_code).limit(1)).first()
    if clash is None:
        return None
    code, name, taken = clash
    if taken == service_code:
        return f"服务代码：{service_code} 已由账户 {code}（{name}）使用，请分配另一个服务代码"
    return f"服务代码：{service_code} 与账户 {code}（{name}）的服务代码 {taken} 前缀重叠，回复短信将无法分清归属，请分配另一个服务代码"


def _signature(field: str, supplied: bytes | str | None, signer: str, errors: dict[str, str]) -> str:
    """A validated signature image as a data URI; a typed one from the name when none was drawn."""
    if _unsigned(supplied):
        return documents.typed_signature(signer)
    try:
        raw = images.decode_data_uri(supplied) if isinstance(supplied, str) else supplied
        png = images.validate_image(raw)
    except images.ImageError as exc:
        errors[field] = str(exc)
        return ""
    if not images.has_ink(png):
        errors[field] = "签名图片是空白的，请重新签字"
        return ""
    return images.to_data_uri(png)


def submission_key_for(template_id: str, raw: dict[str, Any]) -> str:
    """A stable key for one form submission when the caller gives none (the same data twice is
    the same submission)."""
    canonical = json.dumps({"template": template_id, "data": raw}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


#: The length of `contracts.submission_key`.
SUBMISSION_KEY_MAX = 64


def _storable_key(key: str) -> str:
    """A submission key the column holds: a longer or unprintable one (a form's hidden field and a
    data file's `submission_id` are the client's) stands as its hash, equal for equal keys. Found
    by a review: past 64 characters PostgreSQL refused it after the PDF was rendered, and sales
    saw a generic error naming no field."""
    if len(key) <= SUBMISSION_KEY_MAX and key.isprintable():
        return key
    return "h:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[: SUBMISSION_KEY_MAX - 2]


#: A side that must sign by hand (the web form) and did not: what it is told.
SIGNATURE_MISSING = {
    "customer_signature": "请甲方签字（在签名框内手写或上传签名图片）",
    "provider_signature": "请乙方签字（在签名框内手写或上传签名图片）",
}


def _unsigned(supplied: Any) -> bool:
    return supplied is None or supplied == "" or supplied == b""


def _validate(
    session: Session,
    template: ContractTemplate,
    raw: dict[str, Any],
    customer_signature: Any,
    provider_signature: Any,
    *,
    signatures_required: bool = False,
    refuse_existing_customer: bool = False,
    confirmed_accounts: Collection[str] = (),
) -> tuple[dict[str, Any], str, str]:
    try:
        values = validate_contract_fields(template, raw)
        errors: dict[str, str] = {}
    except ValidationFailed as failed:
        values, errors = {}, dict(failed.errors)
    today = local_today()
    for name in ("customer_signed_on", "provider_signed_on"):
        if values.get(name) and values[name] > today:
            errors[name] = "签署日期不能晚于今天"
        elif values.get(name) and values[name] < today - timedelta(days=SIGNED_WITHIN_DAYS):
            errors[name] = f"签署日期 {values[name].isoformat()} 早于一年前：请核对（补录旧合同请联系管理员）"
    if values.get("term_start") and values["term_start"] > today + timedelta(days=START_WITHIN_DAYS):
        errors["term_start"] = f"合同开始日期 {values['term_start'].isoformat()} 晚于一年后：请核对"
    if values.get("term_end") and values["term_end"] < today and "term_end" not in errors:
        errors["term_end"] = f"合同期限已于 {values['term_end'].isoformat()} 结束，不能签发已到期的合同"
    if clash := service_code_clash(session, values.get("service_code")):
        errors["service_code"] = clash
    existing = (
        existing_customer_refusal(session, values["customer.name"], confirmed_accounts) if refuse_existing_customer and values else None
    )
    if existing:
        errors[CONFIRM_ANOTHER_ACCOUNT] = existing
    # A missing hand signature is told with every other problem, not first and alone (found by an
    # exploratory test: the phone and price errors only showed in a second round, after signing).
    supplied = {"customer_signature": customer_signature, "provider_signature": provider_signature}
    missing = {field: message for field, message in SIGNATURE_MISSING.items() if signatures_required and _unsigned(supplied[field])}
    errors.update(missing)
    cust = _signature("customer_signature", customer_signature, values.get("customer_signer", ""), errors) if values and not missing else ""
    prov = _signature("provider_signature", provider_signature, values.get("provider_signer", ""), errors) if values and not missing else ""
    if errors:
        raise ValidationFailed(errors)
    return values, cust, prov


def preview_contract(
    session: Session, template_id: str, raw: dict[str, Any], *, customer_signature: Any = None, provider_signature: Any = None
) -> str:
    """The contract as HTML, exactly as it will print, without issuing anything."""
    template = get_template(template_id)
    values, cust, prov = _validate(session, template, raw, customer_signature, provider_signature)
    provider, seal = provider_settings(session, template)
    _payment_details_given(template, provider)
    subs = values.get("sub_accounts") or 0
    context = documents.build_context(
        template,
        values,
        # Every issued contract carries its number in the page header (and, where the original
        # has a line for it, in the text): the preview shows where it goes.
        contract_no="（签发时生成）",
        provider=provider,
        account_code=None,
        sub_logins=[f"（子号{i}）" for i in range(1, subs + 1)],
        customer_signature=cust,
        provider_signature=prov,
        seal=seal,
    )
    return documents.render_contract_html(template, context)


def issue_contract(
    session: Session,
    template_id: str,
    raw: dict[str, Any],
    *,
    issued_by: str,
    documents_root: Path,
    signing_identity: SigningIdentity | None,
    customer_signature: bytes | str | None = None,
    provider_signature: bytes | str | None = None,
    submission_key: str | None = None,
    signatures_required: bool = False,
    refuse_existing_customer: bool = False,
    confirmed_accounts: Collection[str] = (),
) -> IssuedContract:
    """Issue a contract from a filled-in template. Raises ValidationFailed (per field),
    NotFound (template) or Conflict (same submission twice); the caller commits.
    `signatures_required`: both sides must have signed by hand (the web form); otherwise a side
    that did not is signed with its signer's typed name (the command line).
    `refuse_existing_customer`: a customer who already has a live account is refused (the web
    form), unless every such account is among `confirmed_accounts` (the codes its
    确认为该客户另开一个账户 box was shown for); otherwise the caller warns after."""
    template = get_template(template_id)
    # The same form again is told so first: its own account now has the service code it gives.
    key = _storable_key(submission_key or submission_key_for(template_id, raw))
    existing = session.scalar(sa.select(Contract).where(Contract.submission_key == key))
    if existing is not None:
        raise Conflict(f"该表单已提交过：合同 {existing.contract_no} 已签发，未重复签发")
    values, cust_sig, prov_sig = _validate(
        session,
        template,
        raw,
        customer_signature,
        provider_signature,
        signatures_required=signatures_required,
        refuse_existing_customer=refuse_existing_customer,
        confirmed_accounts=confirmed_accounts,
    )
    provider, seal = provider_settings(session, template)
    _payment_details_given(template, provider)
    initial, fee = values["initial_amount"], values.get("opening_fee") or Decimal(0)
    # Hashed before the lock: 50 sub-accounts' hashes held it 2.3 s (found by a review).
    passwords = new_passwords((values.get("sub_accounts") or 0) + 1)

    # From here on the database write lock is held until the caller commits: keep it short.
    today = local_today()
    contract_no = f"HT-{today.year}-{next_number(session, 'contract', today.year):06d}"
    code = allocate_account_code(session)
    # Asked again under the account counter's lock, which every account opening takes: two
    # contracts given the same code at once cannot both pass (the first had not committed when
    # the second was validated above).
    if clash := service_code_clash(session, values.get("service_code")):
        raise ValidationFailed({"service_code": clash})
    # So is the customer's live account: two tabs signing the same customer's form at once both
    # passed the check above, and each opened an account (found by an exploratory test).
    if refuse_existing_customer and (existing := existing_customer_refusal(session, values["customer.name"], confirmed_accounts)):
        raise ValidationFailed({CONFIRM_ANOTHER_ACCOUNT: existing})
    account, logins = open_account(
        session,
        code=code,
        customer_name=values["customer.name"],
        price_per_message=values["price_per_message"],
        sub_account_count=values.get("sub_accounts") or 0,
        sms_signature=values.get("sms_signature"),
        service_code=values.get("service_code"),
        reserved_mobile=values.get("reserved_mobile"),
        contact_email=values.get("customer.email"),
        contact_phone=values.get("customer.contact_phone") or values.get("customer.phone"),
        passwords=passwords,
    )
    account.contracted_credit, account.receivable = initial, initial + fee

    context = documents.build_context(
        template,
        values,
        contract_no=contract_no,
        provider=provider,
        account_code=code,
        sub_logins=[o.login for o in logins if not o.is_primary],
        customer_signature=cust_sig,
        provider_signature=prov_sig,
        seal=seal,
    )
    html = documents.render_contract_html(template, context)
    title = f"{template.title}（{contract_no}）"
    pdf = documents.render_contract_pdf(template, html, title=title, identity=signing_identity, location=provider.get("address", ""))
    docx = documents.render_contract_docx(template, html, header=f"{provider['name']}　合同编号：{contract_no}")

    folder = documents_root / "contracts" / str(today.year)
    pdf_path, docx_path = folder / f"{contract_no}.pdf", folder / f"{contract_no}.docx"
    stage_file(session, pdf_path, pdf)
    stage_file(session, docx_path, docx)

    printable = {k: (str(v) if v is not None and not isinstance(v, (int, bool, list)) else v) for k, v in values.items()}
    contract = Contract(
        contract_no=contract_no,
        template_id=template.id,
        status="issued",
        submission_key=key,
        customer_name=values["customer.name"],
        fields=printable,
        # The template's terms, and the bank account this contract tells the customer to pay into
        # (receipts are booked to that bank, whatever the provider's details say later).
        terms={**template.terms, **printed_bank(provider)},
        price_per_message=values["price_per_message"],
        initial_messages=values["initial_messages"],
        initial_amount=values["initial_amount"],
        opening_fee=values.get("opening_fee") or 0,
        term_start=values.get("term_start"),
        term_end=values.get("term_end"),
        renewal_rule=renewal_rule_for(template.terms, values.get("auto_renew")),
        customer_signer=values["customer_signer"],
        customer_signed_on=values["customer_signed_on"],
        provider_signer=values["provider_signer"],
        provider_signed_on=values["provider_signed_on"],
        issued_by=issued_by,
        account=account,
        pdf_file=str(pdf_path.relative_to(documents_root)),
        pdf_sha256=hashlib.sha256(pdf).hexdigest(),
        docx_file=str(docx_path.relative_to(documents_root)),
        docx_sha256=hashlib.sha256(docx).hexdigest(),
    )
    session.add(contract)
    record_event(
        session,
        "contract_credit",
        today,
        {
            "account_code": code,
            "customer_name": contract.customer_name,
            "contract_no": contract_no,
            "initial_amount": values["initial_amount"],
            "opening_fee": values.get("opening_fee") or 0,
        },
        event_id=f"contract-credit-{contract_no}",
    )
    plan_jobs(session, contract)
    try:
        session.flush()
    except sa.exc.IntegrityError as exc:
        if "submission_key" in str(exc.orig):  # a concurrent submit of the same form won
            raise Conflict("该表单已提交过，未重复签发") from None
        raise
    if template.terms.get("credit_policy") == "invoice_first":  # 004 §3: invoice now, pay within N working days
        from backoffice.services import invoices, notifications

        invoice = invoices.invoice_at_signing(
            session,
            contract,
            working_days=invoices.payment_working_days(template.terms),
            documents_root=documents_root,
            today=today,
        )
        notifications.invoice_issued(session, invoice)
    audit.record(session, issued_by, "issue_contract", "contract", contract_no, template=template.id, account=code)
    return IssuedContract(contract, logins, pdf_path, docx_path)


def get_contract(session: Session, contract_no: str) -> Contract:
    contract = session.scalar(sa.select(Contract).where(Contract.contract_no == contract_no))
    if contract is None:
        raise NotFound(f"合同不存在：{contract_no}")
    return contract


def account_summary(session: Session, code: str) -> dict[str, Any]:
    """What `account show` prints: status, balance, price, sub-accounts, contract and term."""
    from backoffice.services.accounts import get_account

    account = get_account(session, code)
    contract = session.scalar(sa.select(Contract).where(Contract.account_id == account.id).order_by(Contract.id.desc()))
    return {
        "account_code": account.code,
        "customer_name": account.customer_name,
        "status": account.status,
        "status_name": account.status_name,
        "balance": format_price(account.balance),
        "price_per_message": format_price(account.price_per_message),
        "sms_signature": account.sms_signature,
        "service_code": account.service_code,
        "sub_accounts": [{"login": s.login, "primary": s.is_primary, "active": s.active} for s in account.sub_accounts],
        "contract_no": contract.contract_no if contract else None,
        "template_id": contract.template_id if contract else None,
        "contract_status": contract.status if contract else None,
        "term_start": contract.term_start.isoformat() if contract and contract.term_start else None,
        "term_end": contract.term_end.isoformat() if contract and contract.term_end else None,
        "renewal_rule": contract.renewal_rule if contract else None,
        "renewal_rule_name": contract.renewal_rule_name if contract else None,
        "scheduled_jobs": [
            {"kind": j.kind, "due_on": j.due_on.isoformat(), "armed": j.armed_at is not None, "done": j.done_at is not None}
            for j in (contract.jobs if contract else [])
        ],
    }


def other_accounts_of_customer(session: Session, contract: Contract) -> list[str]:
    """Codes of the customer's other enterprise accounts (same 甲方 name): each contract opens an
    account of its own, so sales is told when a customer already has one (its balance stays there)."""
    return [code for account_id, code in _accounts_named(session, contract.customer_name) if account_id != contract.account_id]


def _accounts_named(session: Session, customer_name: str, *, live_only: bool = False) -> list[tuple[int, str]]:
    """(id, code) of the accounts whose customer is `customer_name` as the statement matcher
    compares names (full-width and half-width alike, no spaces, any case): found by an
    exploratory test, 演示客户(成都) with ASCII brackets passed for another customer than
    演示客户（成都）. Read in Python: a few thousand names a contract, once."""
    from reports.matching import normalise

    wanted = normalise(customer_name)
    query = sa.select(EnterpriseAccount.id, EnterpriseAccount.code, EnterpriseAccount.customer_name).order_by(EnterpriseAccount.id)
    if live_only:
        query = query.where(EnterpriseAccount.status != "closed")
    return [(account_id, code) for account_id, code, name in session.execute(query) if normalise(name) == wanted]


def existing_customer_warning(session: Session, contract: Contract) -> str | None:
    others = other_accounts_of_customer(session, contract)
    if not others:
        return None
    return (
        f"{contract.customer_name} 已有企业号 {'、'.join(others)}：本合同开立了新的企业号 {contract.account.code}，"
        "两个账户的余额互不相通（如本应在原账户续约，请联系管理员）"
    )


#: The web form's box that says a second account for a customer who has one is meant.
CONFIRM_ANOTHER_ACCOUNT = "confirm_another_account"


def live_account_codes_named(session: Session, customer_name: str) -> list[str]:
    """The codes of the live accounts of the customer named so: what the confirmation box is for."""
    return [code for _, code in _accounts_named(session, customer_name, live_only=True)]


def existing_customer_refusal(session: Session, customer_name: str, confirmed: Collection[str] = ()) -> str | None:
    """Why a new contract for `customer_name` waits for sales to confirm it, or None: the customer
    (the same 甲方 name, as `other_accounts_of_customer` compares it) has a live (not closed)
    account. Found by an exploratory test: Back after issuing showed the filled-in form again
    with a new submission id, and signing again issued a second contract and account that
    nothing can void (numbers have no gaps); a warning after the fact came too late."""
    accounts = _accounts_named(session, customer_name, live_only=True)
    # The box counts for the accounts it was shown for only (found by an exploratory test: ticked
    # for one customer, then the name changed to another who has an account, it let that pass
    # unseen).
    if not accounts or {code for _, code in accounts} <= set(confirmed):
        return None
    named = [account_id for account_id, _ in accounts]
    rows = session.execute(
        sa.select(EnterpriseAccount.code, sa.func.max(Contract.contract_no), sa.func.max(Contract.issued_at))
        .outerjoin(Contract, Contract.account_id == EnterpriseAccount.id)
        .where(EnterpriseAccount.id.in_(named))
        .group_by(EnterpriseAccount.id, EnterpriseAccount.code)
        .order_by(EnterpriseAccount.id)
    ).all()  # (an outer join: a row for every account named)
    held = "、".join(
        f"企业号 {code}" + (f"（合同 {no}，{to_local(at).strftime('%Y-%m-%d %H:%M')} 签发）" if no else "") for code, no, at in rows
    )
    return (
        f"{customer_name} 已有{held}：再签发将另开一个新的企业号，两个账户的余额互不相通，已签发的合同无法作废。"
        "如是重复提交（例如签发后按了浏览器的“后退”），请不要再签发，原合同可在合同登记簿中查看；"
        "如确需为该客户另开一个账户，请勾选“确认为该客户另开一个账户”后再签发"
    )
