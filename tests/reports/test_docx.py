"""HTML to Word: the same text, in order, with the formatting a reader of the contract sees."""

from __future__ import annotations

import io

import docx
from docx.document import Document as DocxDocument
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml.ns import qn
from docx.shared import Cm, Pt

from reports.docx import html_to_docx
from reports.images import render_seal, render_typed_signature, to_data_uri
from tests.reports.conftest import page

SIGNATURE = to_data_uri(render_typed_signature("张三"))
SEAL = to_data_uri(render_seal("讯达通信科技有限公司", size_px=200))

SAMPLE = page(f"""
<h1 class="title">短信业务服务合同</h1>
<p class="right">合同编号：<span class="fill">HT-2026-000001</span></p>
<table class="parties"><tr>
  <td><p>甲方：<strong>北京创联致信科技有限公司</strong></p><p>地址：北京市海淀区</p></td>
  <td><p>乙方：讯达通信</p></td>
</tr></table>
<h2>第一条　服务内容</h2>
<p class="indent">甲方   委托乙方
    发送短信，单价 <span class="fill">0.035</span> 元/条。</p>
<p class="item">首次充值<span class="fill">　　　　</span>元；<br>
   开户费 <b>100.00</b> 元。</p>
<ul class="dots">
  <li>中国移动</li>
  <li>中国联通</li>
</ul>
<p class="small">注：本条款<em>仅供参考</em>。</p>
<h3>付款方式</h3>
<custom-note>未知标签的文字保留</custom-note>
<div class="page-break"></div>
<p class="center">（以下无正文）</p>
<section class="annex"><h2>附件一　资费标准</h2><p>见正文。</p></section>
<table class="signatures"><tr>
  <td><p>甲方签字：<img class="signature" src="{SIGNATURE}" alt="甲方签字"></p></td>
  <td><p>乙方：讯达通信</p><p><img class="seal" src="{SEAL}" alt="乙方公章"></p>
      <p><img src="http://127.0.0.1:9/logo.png">外部图片不嵌入</p></td>
</tr></table>
""")

BODY_TEXT = [
    "短信业务服务合同",
    "合同编号：HT-2026-000001",
    "第一条\u3000服务内容",
    "甲方 委托乙方 发送短信，单价 0.035 元/条。",
    "首次充值\u3000\u3000\u3000\u3000元；\n开户费 100.00 元。",
    "· 中国移动",
    "· 中国联通",
    "注：本条款仅供参考。",
    "付款方式",
    "未知标签的文字保留",
    "（以下无正文）",
    "附件一\u3000资费标准",
    "见正文。",
]


def open_docx(data: bytes) -> DocxDocument:
    return docx.Document(io.BytesIO(data))


def paragraph(document: DocxDocument, text: str):  # type: ignore[no-untyped-def]
    return next(p for p in document.paragraphs if p.text == text)


def test_text_comes_out_in_order_with_html_whitespace_rules() -> None:
    document = open_docx(html_to_docx(SAMPLE))
    assert [p.text for p in document.paragraphs] == BODY_TEXT
    parties, signatures = document.tables
    assert [c.text for c in parties.rows[0].cells] == ["甲方：北京创联致信科技有限公司\n地址：北京市海淀区", "乙方：讯达通信"]
    assert signatures.rows[0].cells[0].text == "甲方签字："
    assert signatures.rows[0].cells[1].text == "乙方：讯达通信\n\n外部图片不嵌入"
    assert document.core_properties.title == "短信业务服务合同"


def test_formatting_follows_the_classes() -> None:
    document = open_docx(html_to_docx(SAMPLE))
    title = paragraph(document, "短信业务服务合同")
    assert title.alignment == WD_ALIGN_PARAGRAPH.CENTER
    assert all(r.bold for r in title.runs) and title.runs[0].font.size == Pt(17)
    assert paragraph(document, "第一条\u3000服务内容").runs[0].bold
    assert paragraph(document, "付款方式").runs[0].bold
    assert paragraph(document, "合同编号：HT-2026-000001").alignment == WD_ALIGN_PARAGRAPH.RIGHT
    assert paragraph(document, "（以下无正文）").alignment == WD_ALIGN_PARAGRAPH.CENTER

    clause = paragraph(document, BODY_TEXT[3])
    assert clause.paragraph_format.first_line_indent == Pt(21)  # two characters of 10.5 pt
    assert [r.text for r in clause.runs if r.underline] == ["0.035"]
    item = paragraph(document, BODY_TEXT[4])
    assert item.paragraph_format.left_indent == Pt(21)
    assert [r.text for r in item.runs if r.underline] == ["\u3000" * 4]
    assert [r.text for r in item.runs if r.bold] == ["100.00"]
    assert paragraph(document, "· 中国移动").paragraph_format.left_indent == Pt(21)
    small = paragraph(document, "注：本条款仅供参考。")
    assert {r.font.size for r in small.runs} == {Pt(9)}
    assert [r.text for r in small.runs if r.italic] == ["仅供参考"]


def test_page_breaks_before_the_marked_paragraph_and_the_annex() -> None:
    document = open_docx(html_to_docx(SAMPLE))
    breaks = [p.text for p in document.paragraphs if p.paragraph_format.page_break_before]
    assert breaks == ["（以下无正文）", "附件一\u3000资费标准"]


def test_data_images_become_pictures_of_the_right_size_and_others_are_dropped() -> None:
    document = open_docx(html_to_docx(SAMPLE))
    shapes = document.inline_shapes
    assert len(shapes) == 2  # the http:// image is not fetched
    signature, seal = shapes
    assert abs(signature.height - Cm(1.4)) < Cm(0.01)
    assert abs(seal.width - Cm(3.6)) < Cm(0.01) and abs(seal.height - Cm(3.6)) < Cm(0.01)


def test_layout_tables_have_no_borders() -> None:
    document = open_docx(html_to_docx(SAMPLE))
    for table in document.tables:
        assert table._tbl.xpath(".//w:tblBorders|.//w:tcBorders") == []
        assert table.style is None or table.style.name == "Normal Table"


def test_chinese_font_is_set_for_east_asian_text_everywhere() -> None:
    document = open_docx(html_to_docx(SAMPLE, east_asia_font="FangSong", latin_font="Arial", font_size_pt=12))
    normal = document.styles["Normal"]
    assert normal.element.rPr.rFonts.get(qn("w:eastAsia")) == "FangSong"
    assert normal.font.name == "Arial" and normal.font.size == Pt(12)
    runs = [r for p in document.paragraphs for r in p.runs] + [
        r for t in document.tables for c in t._cells for p in c.paragraphs for r in p.runs
    ]
    assert runs
    assert {r.element.rPr.rFonts.get(qn("w:eastAsia")) for r in runs} == {"FangSong"}
    assert {r.font.name for r in runs} == {"Arial"}


def test_a4_margins_header_and_page_number_footer() -> None:
    document = open_docx(html_to_docx(SAMPLE, margins_cm=2.5, header_text="讯达通信　合同编号 HT-2026-000001"))
    section = document.sections[0]
    assert (round(section.page_width.cm, 1), round(section.page_height.cm, 1)) == (21.0, 29.7)
    assert round(section.left_margin.cm, 2) == round(section.top_margin.cm, 2) == 2.5
    assert section.header.paragraphs[0].text == "讯达通信　合同编号 HT-2026-000001"
    footer = section.footer.paragraphs[0]
    assert footer.text.startswith("第 ") and "页" in footer.text
    instructions = [i.text.strip() for i in footer._p.iter(qn("w:instrText"))]
    assert instructions == ["PAGE", "NUMPAGES"]


def test_no_header_unless_asked() -> None:
    document = open_docx(html_to_docx(SAMPLE))
    assert document.sections[0].header.paragraphs[0].text == ""


def test_escaped_markup_stays_literal_text() -> None:
    document = open_docx(html_to_docx(page("<p>客户：&lt;script&gt;alert(1)&lt;/script&gt; &amp; 合作方</p><script>alert(2)</script>")))
    assert [p.text for p in document.paragraphs] == ["客户：<script>alert(1)</script> & 合作方"]
