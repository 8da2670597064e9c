"""Templates are data: a sixth template is a new folder, with no change to Python code."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from pypdf import PdfReader

from backoffice.services import templates
from tests.conftest import write_json

ROOT = Path(__file__).resolve().parents[2] / "contracts_templates"


def test_a_new_template_folder_is_a_new_template(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "contracts_templates"
    shutil.copytree(ROOT, root)
    folder = root / "sms_marketing_pilot"
    folder.mkdir()
    spec = json.loads((ROOT / "gateway_api_partner" / "template.json").read_text(encoding="utf-8"))
    spec.update(id="sms_marketing_pilot", code="005", title="短信营销试用协议", summary="试用三个月的短信发送协议")
    spec["terms"]["term_rule"] = "fixed_term"
    (folder / "template.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (folder / "contract.html.j2").write_text(
        '{% extends "_shared/base.html.j2" %}{% import "_shared/macros.html.j2" as m %}{% block body %}'
        '<h1 class="title">{{ title }}</h1><p>甲方：{{ m.fill(f.customer.name) }}</p>'
        "<p>单价 {{ f.price_per_message }} 元/条，首次充值 {{ amounts.initial_amount }} 元（大写：{{ amounts.initial_amount_capital }}）。</p>"
        "{{ m.signature_blocks(sign, f.customer.name, provider.name) }}{% endblock %}",
        encoding="utf-8",
    )
    monkeypatch.setattr(templates, "TEMPLATES_ROOT", root)

    listed = json.loads(runner.invoke(args=["contract", "templates", "--json"]).output)
    assert [t["id"] for t in listed][-1] == "sms_marketing_pilot"
    result = runner.invoke(
        args=["contract", "issue", "sms_marketing_pilot", "--data", str(write_json(tmp_path / "c.json", spec["sample"])), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    text = re.sub(r"\s+", "", "".join(p.extract_text() or "" for p in PdfReader(out["pdf"]).pages))
    assert "短信营销试用协议" in text and spec["sample"]["customer"]["name"] in text


def test_every_template_declares_what_the_product_relies_on() -> None:
    for template in templates.list_templates():
        names = {f.name for f in template.fields}
        assert {
            "customer.name",
            "price_per_message",
            "initial_messages",
            "customer_signer",
            "customer_signed_on",
            "provider_signer",
            "provider_signed_on",
        } <= names, template.id
        assert template.terms["term_rule"] in {"fixed_term", "long_term", "until_used_up", "yearly_auto_extend"}
        assert template.terms["credit_policy"] in {"pay_on_signing", "invoice_first"}
        assert template.provider["name"] and template.sample
        assert (template.folder / "contract.html.j2").exists()


def test_a_provider_name_with_markup_characters_prints_as_written_in_the_page_header() -> None:
    """The header is a CSS string inside <style>, where HTML escaping does not apply."""

    from backoffice.services.documents import css_string, environment
    from reports.pdf import render_pdf

    name = '成都A&B "创信" <公司>\\'
    assert "<" not in css_string(name) and '"' not in css_string(name) and "&" not in css_string(name)
    env = environment(Path(__file__).resolve().parents[2] / "contracts_templates")
    html = env.from_string(
        '<html><head><style>@page { @top-right { content: "{{ name | css_string }}"; font-family: "WenQuanYi Zen Hei"; } }</style></head>'
        "<body><p>正文</p></body></html>"
    ).render(name=name)
    text = PdfReader(io.BytesIO(render_pdf(html))).pages[0].extract_text()
    assert name in text, text
