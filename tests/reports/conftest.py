"""Fixtures for the rendering library: a contract-like Chinese HTML, a signing identity, PNGs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from reports.signing import SigningIdentity, ensure_signing_identity

CSS = """
@page { size: A4; margin: 22mm 20mm;
  @bottom-center { content: "第 " counter(page) " 页 共 " counter(pages) " 页";
                   font-family: "WenQuanYi Zen Hei", "Noto Sans CJK SC", sans-serif; font-size: 8pt; } }
html { font-family: "WenQuanYi Zen Hei", "Noto Sans CJK SC", sans-serif; font-size: 10.5pt; line-height: 1.6; }
h1.title { font-size: 17pt; text-align: center; }
p.indent { text-indent: 2em; }
span.fill { text-decoration: underline; }
.page-break { page-break-before: always; }
"""

CLAUSE = (
    "甲方应当按照本合同约定及时足额支付短信服务费用，乙方保证短信通道稳定可用，"
    "并对甲方提交的短信内容依法进行审核；任何一方违反本合同约定的，应当承担相应的违约责任。"
)


def page(body: str, *, title: str = "短信业务服务合同") -> str:
    """A full HTML document with the contract templates' fonts and page layout."""
    return f'<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style></head><body>{body}</body></html>'


def contract_html(clauses: int = 50) -> str:
    """About four A4 pages of Chinese clauses with a signature block, like a real contract."""
    body = ['<h1 class="title">短信业务服务合同</h1>', '<p>合同编号：<span class="fill">HT-2026-000001</span></p>']
    for number in range(1, clauses + 1):
        if number % 10 == 1:
            body.append(f"<h2>第{number // 10 + 1}章　服务条款</h2>")
        body.append(f'<p class="indent">第{number}条　{CLAUSE}</p>')
    body.append('<table class="signatures"><tr><td><p>甲方：北京创联致信科技有限公司</p></td><td><p>乙方：讯达通信</p></td></tr></table>')
    return page("".join(body))


def png_bytes(size: tuple[int, int] = (40, 20), color: tuple[int, int, int, int] = (16, 32, 107, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, color).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def identity(tmp_path_factory: pytest.TempPathFactory) -> SigningIdentity:
    return ensure_signing_identity(tmp_path_factory.mktemp("keys"), common_name="测试签章", organization="Test Provider")
