"""Normalising mobile numbers as customers type them, and telling their carrier."""

from __future__ import annotations

from pathlib import Path

import phonenumbers
import pytest
from phonenumbers import carrier as pn_carrier

from dispatch.numbers import (
    CARRIER_NAMES,
    InvalidNumber,
    PrefixTable,
    carrier_of,
    default_prefix_table,
    load_prefix_table,
    normalise_mobile,
)


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        "+86 138-0013-8000",
        "+8613800138000",
        "008613800138000",
        "86 138 0013 8000",
        " 138 0013 8000 ",
        "１３８００１３８０００",  # full-width digits from a Chinese input method
        "＋８６　１３８００１３８０００",  # full-width plus and ideographic space
    ],
)
def test_accepted_spellings_give_the_national_number(raw: str) -> None:
    assert normalise_mobile(raw) == "13800138000"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("010-62345678", "固定电话"),
        ("02887654321", "固定电话"),
        ("+852 9123 4567", "国际号码"),
        ("001 202 555 0100", "国际号码"),
        ("1380013800", "应为 11 位，这里是 10 位"),
        ("138001380001", "应为 11 位，这里是 12 位"),
        ("1380013800O", "只能包含数字"),
        ("138.0013.8000", "只能包含数字"),
        ("①3800138000", "只能包含数字"),  # circled and superscript digits are not typed as numbers (NFKC read them: a review)
        ("¹³⁸⁰⁰¹³⁸⁰⁰⁰", "只能包含数字"),
        ("23800138000", "不是中国大陆手机号码"),
        ("14012345678", "号段 140 未分配"),
        ("12345678901", "不是中国大陆手机号码"),
        ("1", "不是中国大陆手机号码"),
        ("", "号码为空"),
        ("+86", "号码为空"),
        # Found by an exploratory test: a number Excel showed as 1.38001E+10, copied from the sheet,
        # was refused as holding letters, with nothing said of the cause or the cure.
        ("1.38001E+10", "被 Excel 转成了科学计数法.*设为“文本”格式"),
        ("8.6138e12", "被 Excel 转成了科学计数法"),
        ("1E5x", "只能包含数字"),
    ],
)
def test_refused_numbers_say_why_in_chinese(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNumber, match=reason) as caught:
        normalise_mobile(raw)
    assert isinstance(caught.value, ValueError)
    assert caught.value.reason == str(caught.value)


@pytest.mark.parametrize("raw", ["+86 10 6234 5678", "0086 28 8765 4321"])
def test_a_landline_with_country_code_is_refused(raw: str) -> None:
    with pytest.raises(InvalidNumber, match="不是中国大陆手机号码（手机号码以 13–19 开头）"):
        normalise_mobile(raw)


def test_the_reason_echoes_the_input_but_not_a_whole_pasted_paragraph() -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalise_mobile("请联系" + "x" * 200)
    assert len(caught.value.reason) < 80


@pytest.mark.parametrize(
    ("number", "carrier"),
    [
        ("+86 138-0013-8000", "cmcc"),
        ("13412345678", "cmcc"),
        ("13491234567", "ctcc"),  # 1349: satellite block, longest prefix beats 134
        ("17012345678", "ctcc"),
        ("17031234567", "cmcc"),
        ("17041234567", "cucc"),
        ("17091234567", "cucc"),
        ("16212345678", "ctcc"),
        ("16512345678", "cmcc"),
        ("16712345678", "cucc"),
        ("19212345678", "cbn"),
        ("19912345678", "ctcc"),
        ("18612345678", "cucc"),
        ("19812345678", "cmcc"),
    ],
)
def test_carrier_of(number: str, carrier: str) -> None:
    assert carrier_of(number) == carrier


def test_carrier_of_refuses_what_normalise_refuses() -> None:
    with pytest.raises(InvalidNumber):
        carrier_of("010-62345678")


def test_carrier_names_cover_every_carrier_in_the_table() -> None:
    assert {c for _, c in default_prefix_table().items()} == set(CARRIER_NAMES)
    assert CARRIER_NAMES["cmcc"] == "中国移动"


# Where the phonenumbers library names a carrier, the table agrees, except for the documented 161
# (phonenumbers says China Broadnet; not in the MIIT allocations this table follows).
PN_NAMES = {"China Mobile": "cmcc", "China Unicom": "cucc", "China Telecom": "ctcc", "China Broadnet": "cbn"}
KNOWN_DIFFERENCES = ("161",)


def test_table_agrees_with_phonenumbers_where_it_knows_the_carrier() -> None:
    table = default_prefix_table()
    disagreements = []
    for block in range(1300, 2000):
        for tail in ("0000000", "5555555", "9999999"):
            number = f"{block}{tail}"
            name = pn_carrier.name_for_number(phonenumbers.parse(number, "CN"), "en")
            if name and not number.startswith(KNOWN_DIFFERENCES) and table.carrier_of(number) != PN_NAMES[name]:
                disagreements.append((number, name, table.carrier_of(number)))
    assert disagreements == []


def test_a_new_block_is_a_line_of_data(tmp_path: Path) -> None:
    csv_file = tmp_path / "prefixes.csv"
    csv_file.write_text("# test table\nprefix,carrier\n\n138,cmcc\n1381,cucc\n161,cbn\n", encoding="utf-8")
    table = load_prefix_table(csv_file)
    assert len(table) == 3
    assert normalise_mobile("16112345678", table) == "16112345678"
    assert carrier_of("16112345678", table) == "cbn"
    assert carrier_of("13812345678", table) == "cucc"
    assert carrier_of("13822345678", table) == "cmcc"
    with pytest.raises(InvalidNumber, match="号段 139 未分配"):
        normalise_mobile("13912345678", table)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("prefix,carrier\n138,cmcc\n138,cucc\n", "号段重复"),
        ("prefix,carrier\n138,chinamobile\n", "运营商代码未知"),
        ("prefix,carrier\n0138,cmcc\n", "以 1 开头"),
        ("number,carrier\n138,cmcc\n", "prefix,carrier"),
        ("prefix,carrier\n138,cmcc,extra\n", "每行应为"),
    ],
)
def test_a_broken_table_is_refused_at_load(tmp_path: Path, content: str, error: str) -> None:
    csv_file = tmp_path / "prefixes.csv"
    csv_file.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=error):
        load_prefix_table(csv_file)


def test_an_empty_table_is_not_mistaken_for_the_default() -> None:
    with pytest.raises(InvalidNumber, match="未分配"):
        normalise_mobile("13800138000", PrefixTable({}))
