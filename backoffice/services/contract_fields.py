"""Validation of a filled-in contract form against its template's field schema.

One function serves the web form, the command line and the API alike: it returns clean values
(Decimal, date, int, bool, list) or raises `ValidationFailed` naming every bad field."""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from email_validator import EmailNotValidError, validate_email

from backoffice.errors import ValidationFailed
from backoffice.money import FEN, FULL_WIDTH_NUMBER, MoneyFormatError, format_money, parse_decimal
from backoffice.services.templates import NETWORKS, ContractTemplate, FieldSpec
from reports.glyphs import unprintable

# ASCII digits only (re.ASCII): `\d` took every script's digits, and a reserved mobile typed in
# Arabic-Indic digits was issued, stored as typed and refused by the dispatcher (a review).
MOBILE = re.compile(r"^(?:\+?86|0086)?[-\s]?(1[3-9]\d{9})$", re.ASCII)
#: 400/800 service numbers, as companies list them (400-820-8820).
SERVICE_NUMBER = re.compile(r"^([48]00)(\d{3})(\d{4})$", re.ASCII)
#: A landline's digits once its separators are gone: 0 and an area code (3 digits with the 0 for
#: 010 and 02x, 8-digit numbers; 4 elsewhere, 7 or 8), or +86 and the area code without its 0.
LANDLINE_DIGITS = re.compile(r"^(?:(?:\+?86|0086)0?|0)([12]\d(?=\d{8}$)|[3-9]\d{2}(?=\d{7,8}$))(\d{7,8})$", re.ASCII)
#: An extension after the number: 转 123, 分机 123, ext 123, x123, or a last "-123" (below).
EXTENSION = re.compile(r"\s*(?:转|分机|ext\.?|x)\s*(\d{1,6})\s*$", re.ASCII | re.IGNORECASE)
_PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
POSTCODE = re.compile(r"^\d{6}$", re.ASCII)
#: A Chinese input method's full-width digits and signs (as money reads them), its brackets, and
#: the no-break and thin spaces and dashes of a number copied from a web page or a Word
#: document, read as the ASCII ones they stand for.
_FULL_WIDTH = {
    **FULL_WIDTH_NUMBER,
    **str.maketrans(
        {
            **dict.fromkeys((0x3000, 0x00A0, 0x2007, 0x2009, 0x202F), " "),
            **dict.fromkeys((0x2010, 0x2011, 0x2012, 0x2013, 0x2212), "-"),
            0xFF08: "(",
            0xFF09: ")",
        }
    ),
}
PHONE_MESSAGE = "不是有效的电话号码（手机如 138 0013 8000，固定电话带区号如 028-8600 1234 或 (028) 86001234，或 400-820-8820）"


def _phone(text: str) -> str:
    """A mobile (11 digits), a 400/800 number or a landline with its area code, as people write
    them: spaces, dashes, dots and brackets anywhere, +86 in front, an extension behind (a
    review found 028 8600-1234, (028)86001234, 138-0013-8000 and 400 numbers refused). Stored
    as 13800138000, 400-820-8820, 028-86001234 or 028-86001234-123."""
    compact = _PHONE_SEPARATORS.sub("", text)
    if m := MOBILE.match(compact):
        return m.group(1)
    if m := SERVICE_NUMBER.match(compact):
        return "-".join(m.groups())
    number, extension = text, None
    if m := EXTENSION.search(text):
        number, extension = text[: m.start()], m.group(1)
    candidates = [(number, extension)]
    if extension is None and (m := re.fullmatch(r"(.*\d)\s*-\s*(\d{1,6})\s*", number)):
        candidates.append((m.group(1), m.group(2)))  # 010-82746952-123: the whole first, then a last group as the extension
    for main, ext in candidates:
        if m := LANDLINE_DIGITS.match(_PHONE_SEPARATORS.sub("", main)):
            area, local = m.groups()
            return f"0{area}-{local}" + (f"-{ext}" if ext else "")
    digits = _PHONE_SEPARATORS.sub("", number)
    if digits.isascii() and digits.isdigit() and 7 <= len(digits) <= 8:
        raise ValueError(f"固定电话请带上区号，如 028-{digits}")
    raise ValueError(PHONE_MESSAGE)


def _count(value: Any) -> int:
    """A whole number as typed: 2000000, 2,000,000, 2 000 000, full-width digits."""
    if isinstance(value, (bool, float)):
        raise ValueError("应为整数")
    text = str(value).strip().translate(_FULL_WIDTH)
    if re.fullmatch(r"-?[1-9]\d{0,2}(?:([, ])\d{3})(?:\1\d{3})*", text, re.ASCII):
        text = text.replace(",", "").replace(" ", "")
    if not re.fullmatch(r"-?\d{1,12}", text, re.ASCII):
        raise ValueError("应为整数（如 2000000 或 2,000,000）")
    return int(text)


MARKUP = re.compile(r"<\s*[A-Za-z/!?]|javascript:", re.IGNORECASE)
# C0 controls but tab/newline, DEL, the C1 controls (U+0080–U+009F: found by fuzzing, a NEL
# passed into a party's name), surrogates and non-characters: never valid in a document.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# What breaks a line besides CR/LF: a one-line field printed across two lines (found by fuzzing).
LINE_BREAKS = "\r\n\t\u2028\u2029"
MAX_PRICE = Decimal("10")
MAX_AMOUNT = Decimal("9999999999.99")  # 百亿元: far above any contract, inside what documents can spell
TRUE = {"1", "true", "yes", "on", "y", "是"}
FALSE = {"0", "false", "no", "off", "n", "否", ""}

# Keys that travel with the form but are not template fields.
EXTRA_KEYS = {"submission_id", "customer_signature", "provider_signature"}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"customer": {"name": x}}` and `{"customer.name": x}` both become `{"customer.name": x}`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def term_end(start: date, months: int) -> date:
    """The last day of a term of `months` from `start`: the day before the same day that many
    months on, or that month's last day when it has no such day (a year from 2028-02-29 ends on
    2029-02-28, not 02-27: found by a review; 民法典 §203 takes the month's end likewise)."""
    month = start.month - 1 + months
    year, month = start.year + month // 12, month % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, last) if start.day > last else date(year, month, start.day) - timedelta(days=1)


EMAIL_REFUSED = "不是有效的电子邮箱地址（@ 前只能是英文字母、数字或 . _ - + 等符号）"


def email_address(text: str) -> str:
    """An e-mail address as notices are sent to it, or ValueError (EMAIL_REFUSED). Full-width
    letters and digits, as a Chinese input method types them, are half-width (NFKC); a local part
    that is still not ASCII is refused, since the platform's mail does not use SMTPUTF8 (found by
    a fuzzing round: "ｌｉ@126.com" was kept as typed, and notices went to an address the customer
    did not mean)."""
    try:
        valid = validate_email(unicodedata.normalize("NFKC", text), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise ValueError(EMAIL_REFUSED) from None
    # An internationalised domain as its ASCII (punycode) form, which the mail goes to without
    # SMTPUTF8 (found by a review: li@例子.中国 was kept in Unicode and every notice failed).
    return valid.ascii_email or valid.normalized


def _clean_text(spec: FieldSpec, value: Any) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError("应为文字")
    text = str(value).strip()
    if MARKUP.search(text):
        raise ValueError("不能包含 HTML 标记或脚本")
    if CONTROL.search(text):
        raise ValueError("包含无效的控制字符")
    if spec.type != "textarea" and any(c in LINE_BREAKS for c in text):
        raise ValueError("不能包含换行或制表符")
    # Format characters (right-to-left override, zero-width…) can disguise a name.
    if any(unicodedata.category(c) == "Cf" for c in text):
        raise ValueError("包含不可见的格式字符")
    if missing := unprintable(text):  # would print as an empty box in the signed contract
        raise ValueError(f"包含合同字体无法打印的字：{'、'.join(missing[:5])}（请改用可打印的写法，并与客户确认）")
    limit = spec.max_length or (2000 if spec.type == "textarea" else 200)
    if len(text) > limit:
        raise ValueError(f"不能超过 {limit} 个字")
    if spec.pattern and not re.fullmatch(spec.pattern, text):
        raise ValueError(spec.pattern_message or "格式不正确")
    return text


def _clean(spec: FieldSpec, value: Any) -> Any:
    """One field's clean value; raises ValueError with a Chinese reason."""
    kind = spec.type
    if kind in ("text", "textarea"):
        return _clean_text(spec, value)
    if kind == "mobile":
        match = MOBILE.match(_PHONE_SEPARATORS.sub("", _clean_text(spec, value).translate(_FULL_WIDTH)))
        if not match:
            raise ValueError("不是有效的中国大陆手机号码（11位，以1开头）")
        return match.group(1)
    if kind == "phone":
        return _phone(_clean_text(spec, value).translate(_FULL_WIDTH))
    if kind == "email":
        return email_address(_clean_text(spec, value))
    if kind == "postcode":
        text = _clean_text(spec, value).translate(_FULL_WIDTH)
        if not POSTCODE.match(text):
            raise ValueError("邮编应为6位数字")
        return text
    if kind in ("price", "money"):
        places = 4 if kind == "price" else 2
        try:
            amount = parse_decimal(value, places=places)
        except MoneyFormatError as exc:
            raise ValueError(f"金额{exc}" if str(exc) != "不是数字" else "不是有效的数字") from None
        if kind == "price" and amount <= 0:
            raise ValueError("单价必须大于 0")
        if kind == "price" and amount > MAX_PRICE:
            raise ValueError(f"单价不能超过 {MAX_PRICE} 元/条")
        if amount < 0:
            raise ValueError("金额不能为负数")
        if amount > MAX_AMOUNT:
            raise ValueError(f"金额过大（上限 {MAX_AMOUNT} 元）")
        return amount
    if kind == "count":
        number = _count(value)
        if spec.min is not None and number < spec.min:
            raise ValueError(f"不能小于 {spec.min}")
        if spec.max is not None and number > spec.max:
            raise ValueError(f"不能大于 {spec.max}")
        return number
    if kind == "date":
        if isinstance(value, date):
            day = value
        else:
            try:
                day = date.fromisoformat(str(value).strip())
            except ValueError:
                raise ValueError("日期格式应为 YYYY-MM-DD") from None
        if not date(2000, 1, 1) <= day <= date(2099, 12, 31):
            raise ValueError("日期超出范围")
        return day
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise ValueError("应为 是/否")
    if kind == "choice":
        if str(value) not in spec.choices:
            raise ValueError("请从选项中选择：" + "、".join(spec.choices.values()))
        return str(value)
    if kind == "networks":
        items = value if isinstance(value, list) else str(value).split(",")
        codes = [str(i).strip() for i in items if str(i).strip()]
        unknown = [c for c in codes if c not in NETWORKS]
        if unknown:
            raise ValueError("未知的运营商：" + "、".join(unknown))
        if not codes:
            raise ValueError("至少选择一个运营商")
        return [c for c in NETWORKS if c in codes]
    raise ValueError(f"未知的字段类型 {kind}")


_DERIVED_FROM = {"initial_messages": "initial_amount"}  # a required field left blank, worked out from the other


def validate_contract_fields(template: ContractTemplate, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Clean values keyed by dotted field name, defaults applied and derived amounts/dates filled
    in; raises ValidationFailed with one Chinese message per bad field."""
    given = {k: v for k, v in flatten(raw).items() if k not in EXTRA_KEYS}
    errors: dict[str, str] = {}
    known = {f.name for f in template.fields}
    for name in sorted(set(given) - known):
        errors[name] = "该模板没有这个字段"
    values: dict[str, Any] = {}
    for spec in template.fields:
        value = given.get(spec.name)
        if spec.type == "networks" and spec.name in given and value == []:
            errors[spec.name] = f"{spec.label}：请至少选择一个运营商"  # every box unticked is not "the default"
            continue
        if spec.required and spec.default is not None and spec.type != "bool" and spec.name in given and _is_blank(value):
            # Cleared on the form: not the template's default in its place (found by a review: a
            # cleared price issued the contract at 0.035). Left out altogether, the default applies.
            source = _DERIVED_FROM.get(spec.name)
            if source is None or _is_blank(given.get(source)):
                errors[spec.name] = f"{spec.label}不能为空"
            else:
                values[spec.name] = None  # worked out from the other (`_check_amounts`)
            continue
        if _is_blank(value) and not (spec.type == "bool" and value == ""):
            value = spec.default  # a bool sent as "" is an unticked box, not a missing value
        if spec.type == "bool" and _is_blank(value):
            value = False
        if _is_blank(value):
            if spec.required:
                errors[spec.name] = f"{spec.label}不能为空"
            else:
                values[spec.name] = None
            continue
        try:
            values[spec.name] = _clean(spec, value)
        except ValueError as exc:
            errors[spec.name] = f"{spec.label}：{exc}"
    for group in template.require_one_of:
        if all(values.get(n) is None and n not in errors for n in group):
            labels = "或".join(template.field(n).label for n in group if template.field(n))  # type: ignore[union-attr]
            errors[group[0]] = f"请填写{labels}（至少一项）"
    _check_amounts(template, values, errors)
    _check_term(template, values, errors)
    if errors:
        raise ValidationFailed(errors)
    return values


def _check_amounts(template: ContractTemplate, values: dict[str, Any], errors: dict[str, str]) -> None:
    price, messages, amount = (values.get(k) for k in ("price_per_message", "initial_messages", "initial_amount"))
    if price is None or any(k in errors for k in ("price_per_message", "initial_messages", "initial_amount")):
        return
    if messages is not None:
        exact = price * messages
        if amount is None:
            if exact != exact.quantize(FEN):
                errors["initial_messages"] = f"条数 × 单价 = {exact} 元，不足一分的金额无法收款，请调整条数"
            else:
                values["initial_amount"] = exact.quantize(FEN)
        elif amount != exact:
            errors["initial_amount"] = (
                f"首次充值金额应等于 条数 × 单价 = {messages} × {price} = {format_money(exact) if exact == exact.quantize(FEN) else exact} 元，"
                f"填写的是 {format_money(amount)} 元"
            )
    elif amount is not None:
        count = amount / price
        if count != count.to_integral_value():
            errors["initial_amount"] = f"金额 {format_money(amount)} 元除以单价 {price} 元/条不是整数条数"
        else:
            spec = template.field("initial_messages")
            derived = int(count)
            if spec is not None and spec.min is not None and derived < spec.min:
                errors["initial_amount"] = f"金额 {format_money(amount)} 元只够 {derived} 条，{spec.label}不能小于 {spec.min}"
            elif spec is not None and spec.max is not None and derived > spec.max:
                errors["initial_amount"] = f"金额 {format_money(amount)} 元折合 {derived} 条，{spec.label}不能大于 {spec.max}"
            else:
                values["initial_messages"] = derived
    if values.get("initial_amount") is not None and values["initial_amount"] <= 0 and "initial_amount" not in errors:
        errors["initial_amount"] = "首次充值金额必须大于 0"
    if "opening_fee" in values and values["opening_fee"] is None:
        values["opening_fee"] = Decimal(0)


def _check_term(template: ContractTemplate, values: dict[str, Any], errors: dict[str, str]) -> None:
    start, end = values.get("term_start"), values.get("term_end")
    if start is None or "term_start" in errors or "term_end" in errors:
        return
    years, months = values.get("term_years"), template.terms.get("term_months")
    # The printed term ("有效期限为N年" / "有效期12个月") and the dates must agree.
    length = 12 * years if years else int(months) if months else None
    expected = term_end(start, length) if length else None
    if end is None:
        values["term_end"] = expected
    elif end < start:
        errors["term_end"] = "结束日期不能早于开始日期"
    elif expected is not None and end != expected and "term_years" not in errors:
        what = f"{years}年" if years else f"{months}个月"
        errors["term_end"] = f"与合同期限{what}不符：应为 {expected.isoformat()}（或留空自动计算）"
