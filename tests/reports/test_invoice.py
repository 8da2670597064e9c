"""The service-fee invoice: what a customer reads in the PDF, and user text that stays text."""

from __future__ import annotations

import dataclasses
import io
from datetime import date
from decimal import Decimal

import pypdf
import pytest

from reports.invoice import (
    InvoiceData,
    InvoiceLine,
    Party,
    format_amount,
    format_date,
    format_unit_price,
    invoice_html,
    render_invoice_pdf,
)
from reports.pdf import SafeURLFetcher, render_pdf

PROVIDER = Party("讯达通信技术有限公司", "深圳市南山区科技园", "0755-86001234", "招商银行深圳分行", "755912345610801", "91440300MA5G8K2X1K")
CUSTOMER = Party("北京创联致信科技有限公司", "北京市海淀区中关村大街1号", None, None, None, "91110108MA01R3YQ2P")


def invoice(**changes: object) -> InvoiceData:
    data = InvoiceData(
        number="INV-2026-0007",
        issued_on=date(2026, 11, 23),
        due_on=date(2026, 12, 7),
        status="待付款",
        provider=PROVIDER,
        customer=CUSTOMER,
        lines=[
            InvoiceLine("行业短信服务费（2026年11月）", 50000, "条", Decimal("0.035"), Decimal("1750.00")),
            InvoiceLine("营销短信服务费（2026年11月）", 1200, "条", Decimal("0.03"), Decimal("36")),
        ],
        total=Decimal("1786.00"),
        total_in_capitals="壹仟柒佰捌拾陆元整",
        contract_number="HT-2026-000001",
        receipt_reference=None,
        notes=None,
    )
    return dataclasses.replace(data, **changes)  # type: ignore[arg-type]


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def test_the_pdf_reads_back_with_everything_a_customer_checks() -> None:
    pdf = render_invoice_pdf(invoice())
    text = pdf_text(pdf)
    for expected in [
        "服务费发票",
        "INV-2026-0007",
        "讯达通信技术有限公司",
        "北京创联致信科技有限公司",
        "91110108MA01R3YQ2P",
        "HT-2026-000001",
        "2026年11月23日",
        "2026年12月7日",
        "待付款",
        "行业短信服务费（2026年11月） 50,000 条 0.035 1,750.00",
        "1,200 条 0.03 36.00",
        "¥ 1,786.00",
        "壹仟柒佰捌拾陆元整",
        "755912345610801",  # where to pay
        "第 1 页 共 1 页",
    ]:
        assert expected in text, expected
    metadata = pypdf.PdfReader(io.BytesIO(pdf)).metadata
    assert metadata is not None
    assert (metadata.title, metadata.author) == ("服务费发票 INV-2026-0007", "讯达通信技术有限公司")


def test_a_paid_invoice_asks_for_no_payment_and_shows_the_receipt() -> None:
    text = pdf_text(render_invoice_pdf(invoice(status="已付款", receipt_reference="SK-2026-000123")))
    assert "已付款" in text
    assert "SK-2026-000123" in text
    assert "请于" not in text
    assert "银行账号：" not in text


def test_a_voided_invoice_is_marked_on_every_page() -> None:
    many = [InvoiceLine(f"短信服务费 第{i}批", 1000, "条", Decimal("0.04"), Decimal("40")) for i in range(60)]
    pdf = render_invoice_pdf(invoice(status="已作废", lines=many, total=Decimal("2400"), total_in_capitals="贰仟肆佰元整"))
    pages = [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages]
    assert len(pages) >= 2
    assert all("已作废" in page and "INV-2026-0007" in page for page in pages)  # mark and header
    assert "贰仟肆佰元整" in pages[-1]


def test_optional_fields_left_out() -> None:
    html = invoice_html(invoice(due_on=None, contract_number=None, customer=Party("张三")))
    assert "2026年12月7日" not in html
    assert "请付款" in html.replace("\n", "").replace(" ", "")
    text = pdf_text(
        render_invoice_pdf(
            invoice(lines=[InvoiceLine("开户费", None, None, None, Decimal("100"))], total=Decimal("100"), total_in_capitals="壹佰元整")
        )
    )
    assert "1 开户费 100.00" in text


def test_user_text_is_escaped_and_nothing_is_fetched() -> None:
    hostile = invoice(
        customer=Party('<img src="file:///etc/passwd">', address='<link rel="stylesheet" href="http://127.0.0.1:9/x.css">'),
        lines=[InvoiceLine("<script>alert(1)</script>", 1, "<b>条</b>", Decimal("1"), Decimal("1"))],
        total=Decimal("1"),
        notes='</style><img src="http://127.0.0.1:9/pixel.png">\n第二行',
    )
    html = invoice_html(hostile)
    assert "<img" not in html and "<script" not in html and "<link" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    fetcher = SafeURLFetcher()
    text = pdf_text(render_pdf(html, fetcher=fetcher))
    assert fetcher.refused == []  # not even attempted
    assert "<script>alert(1)</script>" in text
    assert '<img src="file:///etc/passwd">' in text
    assert "root:" not in text


def test_totals_that_do_not_add_up_are_refused() -> None:
    with pytest.raises(ValueError, match="不符"):
        invoice_html(invoice(total=Decimal("1750.00")))
    with pytest.raises(ValueError, match="至少"):
        invoice_html(invoice(lines=[], total=Decimal(0)))
    with pytest.raises(TypeError):
        invoice_html(invoice(total=1786.0))


@pytest.mark.parametrize(
    ("price", "printed"),
    [("0.035", "0.035"), ("0.03", "0.03"), ("0.0300", "0.03"), ("0.0325", "0.0325"), ("1", "1.00"), ("1200", "1,200.00")],
)
def test_unit_prices_keep_their_significant_decimals(price: str, printed: str) -> None:
    assert format_unit_price(Decimal(price)) == printed


def test_a_unit_price_with_more_than_four_decimals_is_refused() -> None:
    with pytest.raises(ValueError):
        format_unit_price(Decimal("0.03251"))


@pytest.mark.parametrize(
    ("amount", "printed"),
    [("1750", "1,750.00"), ("1750.005", "1,750.01"), ("0.5", "0.50"), ("1234567.891", "1,234,567.89"), ("-100", "-100.00")],
)
def test_amounts_print_to_the_fen_with_thousands_separators(amount: str, printed: str) -> None:
    assert format_amount(Decimal(amount)) == printed


def test_dates_are_written_the_chinese_way() -> None:
    assert format_date(date(2026, 11, 3)) == "2026年11月3日"
