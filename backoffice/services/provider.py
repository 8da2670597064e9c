"""The provider's identity printed on each template's contracts (乙方: name, address, bank
account customers pay into, contacts) and its seal image: the template's demo values until an
administrator saves the real ones. A contract issued after a change prints the new values; one
issued before keeps what it printed (its PDF and hash are fixed)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from backoffice.errors import ValidationFailed
from backoffice.models import ProviderProfile
from backoffice.services import audit
from backoffice.services.contract_fields import _clean
from backoffice.services.contracts import PAYMENT_FIELDS, provider_identity
from backoffice.services.form_version import check_version, form_version
from backoffice.services.receipts import BANK_CODE, BANK_CODES, bank_code_for
from backoffice.services.sql import insert_ignoring_conflict
from backoffice.services.templates import FieldSpec, get_template
from reports import images

#: One or more numbers, as the texts print them: "028-84782186 18980062919", "010-51664546 转 8".
_PHONES = r"[0-9][0-9+\-()（） /、,，转]{4,58}[0-9]"
_PHONES_MESSAGE = "电话号码只能包含数字、空格、-、/、、和“转”"

#: What an administrator fills in, in the form's order; a template may use fewer.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("name", "公司名称（乙方）", "text", required=True, max_length=100),
    FieldSpec("address", "地址", "text", max_length=200),
    FieldSpec("postcode", "邮编", "text", pattern=r"[0-9]{6}", pattern_message="邮编应为 6 位数字"),
    FieldSpec("phone", "电话", "text", max_length=60, pattern=_PHONES, pattern_message=_PHONES_MESSAGE),
    FieldSpec("fax", "传真", "text", max_length=60, pattern=_PHONES, pattern_message=_PHONES_MESSAGE),
    FieldSpec("email", "电子邮箱", "email"),
    FieldSpec("contact_name", "联系人", "text", max_length=50),
    FieldSpec("contact_phone", "联系人电话", "text", max_length=60, pattern=_PHONES, pattern_message=_PHONES_MESSAGE),
    FieldSpec("bank_name", "开户行", "text", max_length=100),
    FieldSpec("bank_account_name", "账户名称", "text", max_length=100),
    FieldSpec(
        "bank_account", "银行账号", "text", pattern=r"[0-9][0-9 ]{5,38}[0-9]", pattern_message="银行账号应为 7–40 位数字（可含空格）"
    ),
    FieldSpec(
        "bank_code",
        "开户行记账代码",
        "text",
        pattern=BANK_CODE.pattern,  # as a receipt takes it
        pattern_message="记账代码为 2–16 位大写字母或数字、以字母开头，如 CDCB（成都银行）",
    ),  # fmt: skip
    FieldSpec("product_name", "产品名称", "text", max_length=50),
    FieldSpec("product_name_alt", "产品名称（另称）", "text", max_length=50),
    FieldSpec("website", "网址", "text", max_length=200, pattern=r"(https?://)?[A-Za-z0-9.\-]+(/\S*)?", pattern_message="网址格式不正确"),
)


#: Kept with the identity but not printed: the code of the provider's bank in the books
#: (Assets:Bank:<code>), for a bank whose name the application does not know.
NOT_PRINTED = frozenset({"bank_code"})


@dataclass(frozen=True)
class Provider:
    template_id: str
    identity: dict[str, str]  # what contracts print now
    fields: tuple[FieldSpec, ...]  # the ones this template prints
    saved: bool  # False: still the template's demo values
    seal_png: bytes | None  # the uploaded seal; None: a drawn demo seal is printed


def provider_of(session: Session, template_id: str) -> Provider:
    template = get_template(template_id)
    profile = session.get(ProviderProfile, template.id)
    identity = provider_identity(template, profile)
    fields = tuple(
        dataclasses.replace(f, required=True) if template.prints_payment_account and f.name in PAYMENT_FIELDS else f  # where to pay
        for f in FIELDS
        if f.name in template.provider or f.name in NOT_PRINTED
    )
    return Provider(template.id, identity, fields, profile is not None, profile.seal_png if profile else None)


#: The refusal of a form opened before another administrator saved (the view answers 409).
STALE = "乙方信息已被他人修改，请刷新后再改"


def provider_version(provider: Provider) -> str:
    """A fingerprint of what the form shows (identity and seal), carried by the form so that a
    save made on values another administrator has since changed is refused."""
    seal = hashlib.sha256(provider.seal_png).hexdigest() if provider.seal_png is not None else None
    return form_version({"identity": provider.identity, "seal": seal})


def save_provider(
    session: Session,
    template_id: str,
    raw: Mapping[str, Any],
    *,
    seal: bytes | None = None,
    drop_seal: bool = False,
    actor: str,
    version: str | None = None,
) -> Provider:
    """Validate and save the identity (every field the template prints; blank where allowed) and,
    when given, the seal (PNG or JPEG, stored as PNG). All or nothing, with a reason per field.

    `version`: the `provider_version` of the values the form was opened with; when they are no
    longer the saved ones, nothing is saved (error "version"). Found by a review: a form opened
    before another administrator changed the bank account put the old account back, unsaid.
    None (the command line, which names only the fields it changes): no check."""
    template = get_template(template_id)
    # The row first, empty if there was none (rolled back with the rest if the save is refused):
    # two first saves at once then wait for each other instead of the second failing on the
    # primary key (found by a review: a 500). It also takes the row's lock (PostgreSQL) or the
    # write lock (SQLite) before the saved values are read and compared with the form's.
    table = ProviderProfile.__table__
    session.execute(insert_ignoring_conflict(session, table, {"template_id": template.id, "identity": {}}, ["template_id"]))
    session.get(ProviderProfile, template.id, with_for_update=True, populate_existing=True)
    current = provider_of(session, template.id)
    check_version(version, provider_version(current), STALE)
    identity: dict[str, str] = {}
    errors: dict[str, str] = {}
    for spec in current.fields:
        if spec.name not in raw:  # kept as it is (a command line saving some fields)
            identity[spec.name] = current.identity.get(spec.name, "")
            continue
        value = raw[spec.name]
        if value is None or (isinstance(value, str) and not value.strip()):
            if spec.required:
                errors[spec.name] = f"{spec.label}不能为空"
            identity[spec.name] = ""
            continue
        try:
            identity[spec.name] = str(_clean(spec, value))
        except ValueError as bad:
            errors[spec.name] = f"{spec.label}：{bad}"
    bank = identity.get("bank_name", "")
    if bank and "bank_name" not in errors and not identity.get("bank_code") and bank_code_for(bank, "") == "":
        # Receipts are booked to Assets:Bank:<code>: a bank without one would be booked to the default.
        errors["bank_code"] = f"开户行记账代码：无法从“{bank}”识别银行，请填写记账代码（已知：{'、'.join(dict.fromkeys(BANK_CODES))}）"
    unknown = sorted(set(raw) - {f.name for f in current.fields})
    if unknown:
        errors["_form"] = "该模板没有这些字段：" + "、".join(unknown)
    png = None
    if seal is not None:  # given, even empty: an empty file is refused, not taken for "keep the seal"
        try:
            png = images.validate_image(seal, what="公章图片")
        except images.ImageError as bad:
            errors["seal"] = str(bad)
    if errors:
        raise ValidationFailed(errors)
    profile = session.get(ProviderProfile, current.template_id)
    if profile is None:
        profile = ProviderProfile(template_id=current.template_id, identity=identity, seal_png=None)
        session.add(profile)
    profile.identity = identity
    if png is not None:
        profile.seal_png = png
    elif drop_seal:
        profile.seal_png = None
    changed = sorted(k for k in identity if identity[k] != current.identity.get(k, ""))
    audit.record(
        session,
        actor,
        "save_provider",
        "template",
        current.template_id,
        changed=",".join(changed),
        seal="new" if png else ("dropped" if drop_seal else "kept"),
    )
    session.flush()
    return provider_of(session, template_id)
