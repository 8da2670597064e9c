"""Contract documents: the render context from validated fields, the HTML from the template's
clause text, and the PDF (signed, PAdES) and DOCX made from that one HTML."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from backoffice.clock import chinese_date
from backoffice.money import capitals, format_money, format_price
from backoffice.services.contract_fields import nest
from backoffice.services.templates import NETWORKS, PAYMENT_METHODS, ContractTemplate
from reports import images
from reports.docx import html_to_docx
from reports.pdf import render_pdf
from reports.signing import SigningIdentity, sign_pdf

PASSWORD_NOTE = "已于开户时另行告知，不在合同中留存"


def cn_date(day: date | None) -> str:
    if day is None:
        return "\u3000\u3000年\u3000\u3000月\u3000\u3000日"
    return chinese_date(day)


def css_string(value: object) -> Markup:
    """Text for inside a CSS string (`content: "…"` in the page margins). HTML escaping does not
    apply inside <style>, so "&" would print as "&amp;"; quotes, backslashes and "<" would end
    the string or the style sheet. Everything but letters, digits and a few safe marks becomes a
    CSS escape."""
    out = []
    for ch in str(value):
        if ch.isalnum() or ch in " -_.,:：，。（）()·":
            out.append(ch)
        else:
            out.append(f"\\{ord(ch):x} ")
    return Markup("".join(out))  # noqa: S704 (every character is whitelisted or CSS-escaped above)


@lru_cache(maxsize=2)
def environment(root: Path) -> SandboxedEnvironment:
    """Sandboxed, autoescaping, strict: a field can never become markup, a typo never a blank."""
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(root)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cn_date"] = cn_date
    env.filters["css_string"] = css_string
    return env


def _printable(name: str, value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_price(value) if name == "price_per_message" else format_money(value)
    if name == "networks" and isinstance(value, list):
        return [NETWORKS[c] for c in value]
    if name == "payment_method" and value is not None:
        return PAYMENT_METHODS.get(value, value)
    return value


def _yuan(amount: Decimal) -> str:
    return "元整" if amount == amount.to_integral_value() else "元"


def build_context(
    template: ContractTemplate,
    values: dict[str, Any],
    *,
    contract_no: str | None,
    provider: dict[str, str],
    account_code: str | None,
    sub_logins: list[str],
    customer_signature: str | None,
    provider_signature: str | None,
    seal: str | None,
) -> dict[str, Any]:
    """Everything `contract.html.j2` sees (documented in contracts_templates/README.md)."""
    f = nest({name: _printable(name.rsplit(".", 1)[-1], v) for name, v in values.items()})
    f.setdefault("customer", {})
    initial = values.get("initial_amount") or Decimal(0)
    fee = values.get("opening_fee") or Decimal(0)
    amounts = {
        "initial_amount": format_money(initial),
        "initial_amount_capital": capitals(initial),
        "opening_fee": format_money(fee),
        "opening_fee_capital": capitals(fee),
        "total": format_money(initial + fee),
        "total_capital": capitals(initial + fee),
        # The texts' "…元整" says "no 角 or 分": said only when true (900.45 is "900.45 元").
        "initial_amount_unit": _yuan(initial),
        "opening_fee_unit": _yuan(fee),
        "total_unit": _yuan(initial + fee),
    }
    return {
        "title": template.title,
        "f": f,
        "amounts": amounts,
        "contract_no": contract_no or "",
        "provider": provider,
        "terms": template.terms,
        "account": {
            "code": account_code or "（签发时生成）",
            "sub_accounts": sub_logins,
            "password_note": PASSWORD_NOTE,
        },
        "sign": {
            "customer": {
                "signer": values.get("customer_signer") or "",
                "date": values.get("customer_signed_on"),
                "image": customer_signature,
            },
            "provider": {
                "signer": values.get("provider_signer") or "",
                "date": values.get("provider_signed_on"),
                "image": provider_signature,
                "seal": seal,
            },
        },
    }


def render_contract_html(template: ContractTemplate, context: dict[str, Any]) -> str:
    return environment(template.folder.parent).get_template(f"{template.id}/contract.html.j2").render(context)


def render_contract_pdf(template: ContractTemplate, html: str, *, title: str, identity: SigningIdentity | None, location: str) -> bytes:
    """The PDF with real, extractable text and embedded CJK font; signed when an identity is
    given. The renderer may read files of the templates' folder only, and fetch no URL."""
    pdf = render_pdf(html, allowed_roots=[template.folder.parent], metadata={"title": title})
    if identity is None:
        return pdf
    return sign_pdf(pdf, identity, reason=f"乙方签署合同：{title}", location=location)


def render_contract_docx(template: ContractTemplate, html: str, *, header: str) -> bytes:
    opts = template.docx
    return html_to_docx(
        html,
        east_asia_font=opts.get("east_asia_font", "SimSun"),
        latin_font=opts.get("latin_font", "Times New Roman"),
        font_size_pt=float(opts.get("font_size_pt", 10.5)),
        margins_cm=float(opts.get("margins_cm", 2.2)),
        header_text=header,
    )


@lru_cache(maxsize=32)
def demo_seal(provider_name: str) -> str:
    """A drawn company seal for a provider that has not uploaded its own."""
    return images.to_data_uri(images.render_seal(provider_name))


def typed_signature(name: str) -> str:
    return images.to_data_uri(images.render_typed_signature(name))
