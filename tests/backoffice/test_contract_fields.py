"""Field validation from the template schema: clean values out, a Chinese message per bad field."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from backoffice.errors import ValidationFailed
from backoffice.services.contract_fields import validate_contract_fields
from backoffice.services.templates import get_template
from tests.conftest import TEMPLATE_IDS, sample


def errors_for(template_id: str, **overrides: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_contract_fields(get_template(template_id), sample(template_id, **overrides))
    return caught.value.errors


@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_every_template_sample_is_valid(template_id: str) -> None:
    values = validate_contract_fields(get_template(template_id), sample(template_id))
    assert isinstance(values["price_per_message"], Decimal)
    assert values["initial_amount"] == values["price_per_message"] * values["initial_messages"]
    assert isinstance(values["customer_signed_on"], date)


def test_money_is_decimal_never_float() -> None:
    values = validate_contract_fields(
        get_template("sms_business_service"),
        sample("sms_business_service", price_per_message=0.035, initial_messages=50000, initial_amount="1750.00"),
    )
    assert values["price_per_message"] == Decimal("0.035") and type(values["price_per_message"]) is Decimal
    assert values["initial_amount"] == Decimal("1750.00")


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        ("1750.00", "壹仟柒佰伍拾元整"),
        ("10.10", "壹拾元壹角整"),  # 整 after 角 too (会计基础工作规范 §52(2); found by a review)
        ("0.10", "壹角整"),
        ("1000.50", "壹仟元伍角整"),
        ("1000.05", "壹仟元零伍分"),  # none after 分
        ("0.01", "壹分"),
        ("1.23", "壹元贰角叁分"),
        ("100000000", "壹亿元整"),
        ("100001000", "壹亿零壹仟元整"),  # not 壹亿壹仟元整, read like 壹亿壹仟万 (found by a review)
        ("700006069.87", "柒亿零陆仟零陆拾玖元捌角柒分"),
        ("110000000", "壹亿壹仟万元整"),
        ("100010000", "壹亿零壹万元整"),
        ("107000.53", "壹拾万柒仟元伍角叁分"),  # the rules' own example: 零 after 万 may be left out
    ],
)
def test_amounts_in_chinese_capitals(amount: str, written: str) -> None:
    from backoffice.money import capitals

    assert capitals(Decimal(amount)) == written


def test_a_term_from_the_29th_of_february_ends_on_the_28th_a_year_later() -> None:
    """Found by a review: a year from 2028-02-29 was computed to end 2029-02-27, and the right
    end typed in was refused."""
    from backoffice.services.contract_fields import term_end

    values = validate_contract_fields(
        get_template("enterprise_sms_center"), sample("enterprise_sms_center", term_start="2028-02-29", term_years=1, term_end="2029-02-28")
    )
    assert values["term_end"] == date(2029, 2, 28)
    assert term_end(date(2026, 12, 1), 12) == date(2027, 11, 30) and term_end(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert term_end(date(2027, 3, 1), 12) == date(2028, 2, 29)


def test_a_required_field_cleared_on_the_form_is_refused_not_replaced_by_its_default() -> None:
    """Found by a review: a cleared price issued the 004 contract at 0.035 元/条, a cleared count at
    50,000 messages, a cleared term at one year. Left out altogether (API, CLI), the default applies."""
    assert errors_for("sms_business_service", price_per_message="", initial_amount="")["price_per_message"].endswith("不能为空")
    assert "initial_messages" in errors_for("sms_business_service", initial_messages="", initial_amount="")
    assert "term_years" in errors_for("enterprise_sms_center", term_years="")
    assert "sub_accounts" in errors_for("lingxuntong_service", sub_accounts="")
    # A cleared count with the amount given is worked out from it, as before.
    derived = validate_contract_fields(
        get_template("sms_business_service"), sample("sms_business_service", initial_messages="", initial_amount="1400.00")
    )
    assert derived["initial_messages"] == 40000
    left_out = {k: v for k, v in sample("sms_business_service").items() if k != "price_per_message"}
    assert validate_contract_fields(get_template("sms_business_service"), left_out)["price_per_message"] == Decimal("0.035")


def test_initial_amount_is_derived_when_left_blank() -> None:
    values = validate_contract_fields(
        get_template("sms_business_service"),
        sample("sms_business_service", initial_amount=None, price_per_message="0.035", initial_messages=50000),
    )
    assert values["initial_amount"] == Decimal("1750.00")


def test_sms_genie_accepts_amount_or_quantity() -> None:
    template = get_template("sms_genie_user")
    by_amount = validate_contract_fields(
        template, sample("sms_genie_user", initial_messages=None, initial_amount="500.00", price_per_message="0.05")
    )
    assert by_amount["initial_messages"] == 10000
    by_count = validate_contract_fields(
        template, sample("sms_genie_user", initial_messages=10000, initial_amount=None, price_per_message="0.05")
    )
    assert by_count["initial_amount"] == Decimal("500.00")
    errors = errors_for("sms_genie_user", initial_messages=None, initial_amount=None)
    assert "initial_messages" in errors and "至少" in errors["initial_messages"]


def test_fixed_term_end_is_derived_from_years() -> None:
    values = validate_contract_fields(
        get_template("enterprise_sms_center"), sample("enterprise_sms_center", term_start="2026-12-01", term_end=None, term_years=2)
    )
    assert values["term_end"] == date(2028, 11, 30)


def test_twelve_month_term_end_is_derived() -> None:
    values = validate_contract_fields(
        get_template("sms_business_service"), sample("sms_business_service", term_start="2026-12-01", term_end=None)
    )
    assert values["term_end"] == date(2027, 11, 30)


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"customer__name": None}, "customer.name", "不能为空"),
        ({"customer__name": "   "}, "customer.name", "不能为空"),
        ({"price_per_message": "0"}, "price_per_message", "大于 0"),
        ({"price_per_message": "-0.035"}, "price_per_message", "大于 0"),
        ({"price_per_message": "0.03512"}, "price_per_message", "4 位小数"),
        ({"price_per_message": "abc"}, "price_per_message", "数字"),
        ({"initial_amount": "1750.01"}, "initial_amount", "条数 × 单价"),
        ({"initial_amount": "1750.001"}, "initial_amount", "2 位小数"),
        ({"term_start": "2026-12-01", "term_end": "2026-11-30"}, "term_end", "不能早于"),
        ({"term_start": "2026-13-01"}, "term_start", "YYYY-MM-DD"),
        ({"customer__phone": "12345"}, "customer.phone", "电话号码"),
        ({"customer__contact_phone": "1380013800"}, "customer.contact_phone", "电话号码"),
        ({"customer__email": "not-an-email"}, "customer.email", "邮箱"),
        ({"customer__postcode": "10010"}, "customer.postcode", "6位数字"),
        ({"customer__name": "<script>alert(1)</script>"}, "customer.name", "HTML"),
        ({"customer__address": '<img src="http://127.0.0.1:9/x.png">'}, "customer.address", "HTML"),
        ({"initial_messages": "12.5"}, "initial_messages", "整数"),
        ({"initial_messages": 0}, "initial_messages", "不能小于"),
        ({"no_such_field": "x"}, "no_such_field", "没有这个字段"),
        ({"initial_amount": "1E+3"}, "initial_amount", "数字"),
        ({"price_per_message": "0.0_35"}, "price_per_message", "数字"),
        ({"price_per_message": "٠.035"}, "price_per_message", "数字"),  # Arabic-Indic digits: not what anyone here means
        ({"price_per_message": "0,035"}, "price_per_message", "小数点"),  # a decimal comma, not 35 (a review)
        ({"customer__phone": "86001234"}, "customer.phone", "区号"),
        ({"customer__phone": "010 8274695"}, "customer.phone", "电话号码"),  # 010 numbers have 8 digits
        ({"initial_messages": "1,0,0"}, "initial_messages", "整数"),
        ({"initial_amount": "1e17"}, "initial_amount", "数字"),
        ({"initial_amount": "100000000000.00", "initial_messages": None}, "initial_amount", "金额过大"),
        ({"customer__name": "北京\n创联"}, "customer.name", "换行"),
        ({"customer__name": "北京\u202e创联"}, "customer.name", "格式字符"),
        ({"customer__name": "北京\ufffe创联"}, "customer.name", "控制字符"),
        ({"customer__address": "\x00"}, "customer.address", "控制字符"),
        ({"customer__name": ["a", "b"]}, "customer.name", "应为文字"),
        ({"customer__name": "甲" * 201}, "customer.name", "不能超过"),
        ({"initial_messages": 10**13}, "initial_messages", "整数"),
        ({"term_start": "0001-01-01"}, "term_start", "超出范围"),
        ({"term_start": "2026-12-01", "term_end": "2028-11-30"}, "term_end", "12个月"),
    ],
)
def test_bad_field_gets_a_message_naming_it(overrides: dict[str, Any], field: str, words: str) -> None:
    errors = errors_for("sms_business_service", **overrides)
    assert field in errors, errors
    assert words in errors[field]


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("028 8600-1234", "028-86001234"),
        ("(028)86001234", "028-86001234"),
        ("（028）8600－1234", "028-86001234"),
        ("028-8600 1234", "028-86001234"),
        ("+86 10 8274 6952", "010-82746952"),
        ("010-82746952-123", "010-82746952-123"),
        ("010-82746952 转 123", "010-82746952-123"),
        ("0571-8888 8888 ext 12", "0571-88888888-12"),
        ("0755-8888888", "0755-8888888"),
        ("138-0013-8000", "13800138000"),
        ("+86-138-0013-8000", "13800138000"),
        ("400-820-8820", "400-820-8820"),
        ("800 820 8820", "800-820-8820"),
    ],
)
def test_phone_numbers_are_read_as_people_write_them(typed: str, stored: str) -> None:
    """Found by an exploratory test: 028 8600-1234, (028)86001234, 138-0013-8000 and every 400
    number (many companies list no other) were refused on every template."""
    values = validate_contract_fields(get_template("sms_business_service"), sample("sms_business_service", customer__phone=typed))
    assert values["customer.phone"] == stored


@pytest.mark.parametrize(
    ("field", "typed", "stored"),
    [
        ("price_per_message", "０.０３５", Decimal("0.035")),  # a Chinese input method's full-width digits
        ("initial_messages", "５０,０００", 50000),
        ("initial_messages", "50 000", 50000),
    ],
)
def test_full_width_digits_and_grouped_counts_are_read(field: str, typed: str, stored: Any) -> None:
    """Found by an exploratory test: 条数 took full-width digits and the price refused them as
    "不是有效的数字"; 2,000,000 was taken and 2 000 000 refused."""
    overrides: dict[str, Any] = {field: typed}
    if field == "initial_messages":
        overrides["initial_amount"] = None
    values = validate_contract_fields(get_template("sms_business_service"), sample("sms_business_service", **overrides))
    assert values[field] == stored


def test_reserved_mobile_must_be_a_mobile_number() -> None:
    errors = errors_for("lingxuntong_service", reserved_mobile="010-82176004")
    assert "手机号码" in errors["reserved_mobile"]


def test_mobile_numbers_are_normalised() -> None:
    values = validate_contract_fields(get_template("lingxuntong_service"), sample("lingxuntong_service", reserved_mobile="+86 13800138000"))
    assert values["reserved_mobile"] == "13800138000"


def test_all_errors_are_reported_at_once() -> None:
    errors = errors_for("sms_business_service", customer__name=None, price_per_message="-1", customer__email="x")
    assert {"customer.name", "price_per_message", "customer.email"} <= set(errors)


def test_only_an_amount_still_respects_the_message_count_limits() -> None:
    errors = errors_for("sms_genie_user", initial_messages=None, initial_amount="9999999999.95", price_per_message="0.05")
    assert "不能大于" in errors["initial_amount"]
    errors = errors_for("sms_genie_user", initial_messages=None, initial_amount="0", price_per_message="0.05")
    assert "不能小于" in errors["initial_amount"] or "大于 0" in errors["initial_amount"]


def test_a_missing_bool_takes_the_template_default() -> None:
    values = validate_contract_fields(get_template("sms_business_service"), sample("sms_business_service", auto_renew=None))
    assert values["auto_renew"] is True
    unticked = validate_contract_fields(get_template("sms_business_service"), sample("sms_business_service", auto_renew=""))
    assert unticked["auto_renew"] is False


def test_term_years_and_end_date_must_agree() -> None:
    errors = errors_for("enterprise_sms_center", term_years=1, term_start="2026-12-01", term_end="2036-11-30")
    assert "2027-11-30" in errors["term_end"]


@pytest.mark.parametrize(
    ("field", "typed", "stored"),
    [
        ("customer.phone", "010\u00a062345678", "010-62345678"),
        ("customer.phone", "+86\u00a013800138000", "13800138000"),
        ("customer.phone", "010\u201362345678", "010-62345678"),
        ("customer.phone", "138\u20090013\u20098000", "13800138000"),
        ("customer.postcode", "100080\u00a0", "100080"),
    ],
)
def test_numbers_copied_from_a_web_page_or_word_keep_their_no_break_spaces_and_dashes_out(field: str, typed: str, stored: str) -> None:
    """Found by a review: reading only ASCII digits (right) also stopped `\\s` matching the
    no-break space of a number copied from a web page or a Word document, so it was refused."""
    values = validate_contract_fields(
        get_template("lingxuntong_service"), sample("lingxuntong_service", **{field.replace(".", "__"): typed})
    )
    assert values[field] == stored


def test_an_email_typed_full_width_is_kept_half_width_and_a_non_ascii_local_part_refused() -> None:
    """Found by a fuzzing round: "ｌｉ@126.com" was kept as typed, an address the customer did
    not mean; the platform's mail cannot send to a local part that is not ASCII."""
    template = get_template("sms_business_service")
    values = validate_contract_fields(template, sample("sms_business_service", customer__email="ｌｉ＠１２６.com"))
    assert values["customer.email"] == "li@126.com"
    assert "@ 前只能是英文字母" in errors_for("sms_business_service", customer__email="张三@qq.com")["customer.email"]
    # A domain of Chinese characters as its ASCII form, which the mail can go to without SMTPUTF8 (a review).
    idn = validate_contract_fields(template, sample("sms_business_service", customer__email="li@例子.中国"))
    assert idn["customer.email"] == "li@xn--fsqu00a.xn--fiqs8s"
