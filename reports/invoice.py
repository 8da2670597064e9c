"""The provider's service-fee invoice (服务费发票) as HTML and PDF.

This is the provider's own billing document, not a tax fapiao. The caller supplies every value,
the amount in capitals included (it has the money helpers); this module only formats and lays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from reports.pdf import render_pdf

TEMPLATES = Path(__file__).resolve().parent / "templates"
TITLE = "服务费发票"
FEN = Decimal("0.01")
PRICE_PLACES = 4
STATUS_CLASSES = {"已付款": "paid", "待付款": "open", "部分付款": "open", "已逾期": "overdue", "已作废": "void"}
NOT_PAYABLE = ("已付款", "已作废")  # no payment request on these


@dataclass(frozen=True)
class Party:
    """The issuer or the customer, as printed; empty details are left out."""

    name: str
    address: str | None = None
    phone: str | None = None
    bank_name: str | None = None
    bank_account: str | None = None
    tax_id: str | None = None


@dataclass(frozen=True)
class InvoiceLine:
    """One billed item: quantity, unit and unit price are optional (a flat fee has none)."""

    description: str
    quantity: int | None
    unit: str | None
    unit_price: Decimal | None
    amount: Decimal


@dataclass(frozen=True)
class InvoiceData:
    """Everything printed on an invoice; `status` is shown as given (已付款, 待付款, 部分付款, 已逾期, 已作废 …)."""

    number: str
    issued_on: date
    due_on: date | None
    status: str
    provider: Party
    customer: Party
    lines: Sequence[InvoiceLine]
    total: Decimal
    total_in_capitals: str
    contract_number: str | None
    receipt_reference: str | None
    notes: str | None
    owed: Decimal | None = None  # part paid (an invoice paid in instalments): what is still owed


def format_amount(amount: Decimal) -> str:
    """Yuan to the fen with thousands separators: 1750 -> "1,750.00"."""
    return f"{amount.quantize(FEN, rounding=ROUND_HALF_UP):,.2f}"


def format_unit_price(price: Decimal) -> str:
    """A unit price with its significant decimals, at least 2 and at most 4: 0.035 -> "0.035".

    More than 4 decimals is refused rather than rounded: the price is what the contract says.
    """
    exponent = price.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > PRICE_PLACES:
        raise ValueError(f"单价最多 {PRICE_PLACES} 位小数：{price}")
    places = min(max(-exponent, 2), PRICE_PLACES)
    return f"{price:,.{places}f}"


def format_date(day: date) -> str:
    """As written on Chinese documents: 2026年11月23日."""
    return f"{day.year}年{day.month}月{day.day}日"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    """Autoescaping and strict: user text never becomes markup, a misspelt name never a blank."""
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _check(data: InvoiceData) -> None:
    """Refuse an invoice whose figures do not add up, before anyone receives it."""
    if not data.lines:
        raise ValueError("发票至少需要一个项目")
    money = [data.total, *(line.amount for line in data.lines), *(line.unit_price for line in data.lines if line.unit_price is not None)]
    if not all(isinstance(value, Decimal) and value.is_finite() for value in money):
        raise TypeError("金额和单价必须是有限的 Decimal")
    lines_sum = sum((line.amount.quantize(FEN, rounding=ROUND_HALF_UP) for line in data.lines), Decimal(0))
    if lines_sum != data.total.quantize(FEN, rounding=ROUND_HALF_UP):
        raise ValueError(f"合计 {format_amount(data.total)} 与各项金额之和 {format_amount(lines_sum)} 不符")


def _context(data: InvoiceData) -> dict[str, Any]:
    return {
        "number": data.number,
        "issued_on": format_date(data.issued_on),
        "due_on": format_date(data.due_on) if data.due_on else None,
        "status": data.status,
        "status_class": STATUS_CLASSES.get(data.status, "other"),
        "void": data.status == "已作废",
        "payable": data.status not in NOT_PAYABLE,
        "provider": data.provider,
        "customer": data.customer,
        "lines": [
            {
                "description": line.description,
                "quantity": "" if line.quantity is None else f"{line.quantity:,}",
                "unit": line.unit or "",
                "unit_price": "" if line.unit_price is None else format_unit_price(line.unit_price),
                "amount": format_amount(line.amount),
            }
            for line in data.lines
        ],
        "total": format_amount(data.total),
        "paid_so_far": format_amount(data.total - data.owed) if data.owed is not None else None,
        "owed": format_amount(data.owed) if data.owed is not None else None,
        "total_in_capitals": data.total_in_capitals,
        "contract_number": data.contract_number,
        "receipt_reference": data.receipt_reference,
        "notes": data.notes,
    }


def invoice_html(data: InvoiceData) -> str:
    """The invoice as a self-contained HTML page (no external resource), all text escaped."""
    _check(data)
    return _environment().get_template("invoice.html.j2").render(_context(data))


def render_invoice_pdf(data: InvoiceData) -> bytes:
    """The invoice as an A4 PDF with extractable Chinese text; no file or URL is ever fetched."""
    return render_pdf(
        invoice_html(data),
        allowed_roots=(),
        metadata={"title": f"{TITLE} {data.number}", "author": data.provider.name, "subject": f"{TITLE}：{data.customer.name}"},
    )
