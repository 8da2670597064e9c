"""Bank statement CSV files: the generic layout, a China Merchants Bank export, and the first bad line."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from reports.bank_statements import GENERIC_HEADER, StatementError, StatementLine, parse_statement

DATA = Path(__file__).resolve().parents[1] / "data" / "statements"
HEADER = ",".join(GENERIC_HEADER)


def parse_error(data: bytes) -> StatementError:
    with pytest.raises(StatementError) as caught:
        parse_statement(data)
    return caught.value


def generic(*rows: str) -> bytes:
    return "\n".join([HEADER, *rows]).encode("utf-8")


def test_generic_layout_with_bom_returns_the_credits_with_their_file_lines() -> None:
    statement = parse_statement((DATA / "generic_ok.csv").read_bytes())
    assert statement.layout == "generic"
    assert statement.skipped_debits == 1
    assert statement.lines == [
        StatementLine(
            2, date(2026, 11, 20), Decimal("1750.00"), "北京创联致信科技有限公司", "110912345678901", "K2026112000012", "充值 AC1001"
        ),
        StatementLine(
            5, date(2026, 11, 21), Decimal("50000.00"), "上海云讯信息技术有限公司", None, "K2026112100003", "INV-2026-0007, 服务费"
        ),
        StatementLine(6, date(2026, 11, 23), Decimal("0.35"), "张三", "6222020200112233445", "K2026112300001", ""),
    ]


def test_cmb_export_in_gb18030_is_detected_after_its_preamble() -> None:
    data = (DATA / "cmb_ok.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # the sample really is what the bank writes, not UTF-8
    statement = parse_statement(data)
    assert statement.layout == "cmb"
    assert statement.skipped_debits == 1
    first, second, third = statement.lines
    assert first == StatementLine(
        8,
        date(2026, 11, 20),
        Decimal("50000.00"),
        "北京创联致信科技有限公司",
        "110912345678901",
        "K0212800000012",
        "汇入汇款 / 短信充值 AC1001",
    )
    assert (second.line_no, second.amount, second.payer_name, second.reference) == (
        10,
        Decimal("1750.00"),
        "上海云讯信息技术有限公司",
        "K0212800000031",
    )
    assert "INV-2026-0007" in second.memo
    assert (third.amount, third.payer_account, third.memo) == (Decimal("128.50"), None, "网银转账")


def test_cmb_columns_are_found_by_name_whatever_their_order() -> None:
    text = '账号：,755912345610801\n\n流水号,收(付)方名称,贷方金额,借方金额,交易日,摘要\nK9,北京创联致信科技有限公司,"1,234,567.89",,2026-11-20,货款\n'
    statement = parse_statement(text.encode("gbk"))
    assert statement.layout == "cmb"
    assert [(line.line_no, line.amount, line.reference) for line in statement.lines] == [(4, Decimal("1234567.89"), "K9")]


def test_cmb_amounts_with_a_currency_sign_and_summary_lines_anywhere_are_read() -> None:
    """Found by an exploratory test: ￥70,000.00 was "不是金额", and a 合计 line with its label in
    the second cell, or a lone 共 N 笔 footer, was refused as a line of the wrong width."""
    text = (
        "账号：,755912345610801\n\n交易日,流水号,收(付)方名称,贷方金额,借方金额,摘要\n"
        '2026-11-20,K1,北京创联致信科技有限公司,"￥70,000.00",,货款\n'
        "2026-11-21,K2,上海云讯信息技术有限公司,¥1750.00,,货款\n"
        '2026-11-22,K3,成都蜀信科技有限公司,"RMB 128.50",,货款\n'
        '"",合计,,"71,878.50",,\n'
        '本页合计,,,"71,878.50",,\n'
        "共 3 笔，收入 3 笔，支出 0 笔\n"
        "共计3笔\n"
    )
    statement = parse_statement(text.encode("gb18030"))  # (GBK has the full-width ￥, not ¥)
    assert [(line.reference, line.amount) for line in statement.lines] == [
        ("K1", Decimal("70000.00")),
        ("K2", Decimal("1750.00")),
        ("K3", Decimal("128.50")),
    ]


@pytest.mark.parametrize(
    ("name", "line_no", "words"),
    [
        ("bad_header.csv", 1, [HEADER]),
        ("bad_amount.csv", 3, ["1,750.00", "千位分隔符"]),
        ("bad_date.csv", 3, ["2026-02-30", "日期"]),
        ("bad_columns.csv", 3, ["6 列", "7 列"]),
        ("bad_cmb_amount.csv", 9, ["贷方金额", "1,75.00"]),
    ],
)
def test_sample_files_stop_at_their_first_bad_line(name: str, line_no: int, words: list[str]) -> None:
    error = parse_error((DATA / name).read_bytes())
    assert error.line_no == line_no
    for word in words:
        assert word in error.reason
    assert str(error).startswith(f"第 {line_no} 行：")


@pytest.mark.parametrize(
    ("rows", "line_no", "word"),
    [
        (["2026-11-20,0,张三,,K1,"], 2, "不能为 0"),
        (["2026-11-20,0.001,张三,,K1,"], 2, "2 位小数"),
        (["2026-11-20,1e3,张三,,K1,"], 2, "不是金额"),
        (["2026-11-20,１００,张三,,K1,"], 2, "不是金额"),  # full-width digits
        (["2026-11-20,12.00,张三,,K1,", "2026-11-20,-1.234,,,K2,"], 3, "2 位小数"),  # a bad debit is still bad
        (["20.11.2026,10.00,张三,,K1,"], 2, "YYYY-MM-DD"),
        (["2026-11-20,10.00,张三,,,充值"], 2, "reference"),
        (["2026-11-20,10.00,张三,,K1,", "", "2026-11-21,20.00,李四,,K1,"], 4, "与第 2 行重复"),
        (['2026-11-20,10.00,"张三,,K1,'], 2, "引号"),
    ],
)
def test_generic_rules(rows: list[str], line_no: int, word: str) -> None:
    error = parse_error(generic(*rows))
    assert (error.line_no, word in error.reason) == (line_no, True), error.reason


def test_cmb_row_with_both_or_neither_amount_is_refused() -> None:
    head = "交易日,借方金额,贷方金额,流水号,收(付)方名称\n"
    assert parse_error((head + "20261120,1.00,2.00,K1,张三\n").encode("gbk")).reason == "借方金额和贷方金额不能同时有值"
    assert parse_error((head + "20261120,,,K1,张三\n").encode("gbk")).line_no == 2


def test_a_header_with_the_right_names_in_another_order_is_refused() -> None:
    error = parse_error(b"amount,date,payer_name,payer_account,reference,memo\n10.00,2026-11-20,x,,K1,\n")
    assert error.line_no == 1
    assert HEADER in error.reason


@pytest.mark.parametrize(
    ("data", "word"),
    [
        (b"", "空"),
        (b"\n\n", "空"),
        (b"PK\x03\x04rest-of-a-zip", "Excel"),
        (HEADER.encode() + b"\n2026-11-20,1.00,\x81\x30\xff,,K1,\n", "编码"),
    ],
)
def test_unreadable_files(data: bytes, word: str) -> None:
    assert word in parse_error(data).reason


def test_an_excel_formatted_account_number_and_trailing_comma_are_accepted() -> None:
    data = generic('2026-11-20,10.00,张三,="0123456789",K1,充值,').decode().replace(HEADER, HEADER + ",").encode()
    assert parse_error(data).line_no == 1  # the generic header is exact: no trailing comma
    statement = parse_statement(generic('2026-11-20,10.00,张三,="0123456789",K1,充值,'))
    assert statement.lines[0].payer_account == "0123456789"


def test_statement_error_is_a_value_error() -> None:
    assert issubclass(StatementError, ValueError)


def test_dates_as_excel_writes_them_when_it_saves_a_csv_again_are_read() -> None:
    """A review: 2026/11/5 (Excel re-saving the export) was refused as not a date."""
    statement = parse_statement(generic("2026/11/5,100.00,甲,,K1,", "2026-1-9,200.00,乙,,K2,"))
    assert [line.booked_on for line in statement.lines] == [date(2026, 11, 5), date(2026, 1, 9)]


def test_a_reference_is_upper_cased_and_one_in_another_case_is_the_same_number() -> None:
    """Found by an exploratory test: references were kept as typed, so K1 and k1 in one file both
    passed the check for a number seen twice, and k-html-1 in a later export was another line."""
    (line,) = parse_statement(generic("2026-11-20,100.00,甲,,k-html-1,")).lines
    assert line.reference == "K-HTML-1"
    error = parse_error(generic("2026-11-20,100.00,甲,,K1,", "2026-11-21,200.00,乙,,k1,"))
    assert (error.line_no, error.reason) == (3, "reference（银行流水号）“K1”与第 2 行重复")
