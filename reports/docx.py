"""The contract HTML as an editable Word document (python-docx), same text as the PDF."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from io import BytesIO

import lxml.html
from docx import Document
from docx.document import Document as DocxDocument
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.image.exceptions import UnrecognizedImageError
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.oxml.text.font import CT_RPr
from docx.oxml.xmlchemy import BaseOxmlElement
from docx.shared import Cm, Length, Pt, RGBColor
from docx.table import _Cell
from docx.text.paragraph import Paragraph
from docx.text.run import Run
from lxml.html import HtmlElement

from reports.images import ImageError, decode_data_uri

Container = DocxDocument | _Cell

# Runs of HTML whitespace collapse to one space; U+3000 and U+00A0 are not HTML whitespace.
HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
IGNORED = {"head", "style", "title", "script", "noscript", "template", "meta", "link"}
PARAGRAPHS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "pre", "address", "caption"}
CONTAINERS = {
    "body",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "blockquote",
    "nav",
    "aside",
    "form",
    "figure",
    "dl",
}
BLOCKS = PARAGRAPHS | CONTAINERS | {"ul", "ol", "table"}
HEADING_PT = {"h1": 17.0, "h2": 11.5}
SMALL_PT = 9.0
SIGNATURE_HEIGHT, SIGNATURE_MAX_WIDTH, SEAL_WIDTH = Cm(1.4), Cm(5.5), Cm(3.6)
A4_WIDTH, A4_HEIGHT = Cm(21.0), Cm(29.7)


@dataclass(frozen=True)
class _Style:
    """Character formatting inherited down the inline tree."""

    bold: bool = False
    italic: bool = False
    underline: bool = False
    size_pt: float | None = None


@dataclass(frozen=True)
class _Text:
    text: str
    style: _Style


@dataclass(frozen=True)
class _Image:
    src: str
    kind: str  # "signature", "seal" or ""


class _Break:
    pass


Segment = _Text | _Image | _Break


def _classes(element: HtmlElement) -> set[str]:
    return set((element.get("class") or "").split())


def _align(classes: set[str], inherited: WD_ALIGN_PARAGRAPH | None) -> WD_ALIGN_PARAGRAPH | None:
    if "center" in classes:
        return WD_ALIGN_PARAGRAPH.CENTER
    if "right" in classes:
        return WD_ALIGN_PARAGRAPH.RIGHT
    return inherited


def _collapse(segments: list[Segment]) -> list[Segment]:
    """HTML whitespace rules: collapse runs, trim at line starts and ends, drop what is left empty."""
    out: list[Segment] = []
    line_start = True
    for seg in segments:
        if isinstance(seg, _Text):
            text = HTML_SPACE.sub(" ", seg.text)
            if line_start or (out and isinstance(out[-1], _Text) and out[-1].text.endswith(" ")):
                text = text.lstrip(" ")
            if text:
                out.append(_Text(text, seg.style))
                line_start = False
        else:
            if isinstance(seg, _Break):
                _trim_end(out)
                line_start = True
            else:
                line_start = False
            out.append(seg)
    _trim_end(out)
    return out


def _trim_end(out: list[Segment]) -> None:
    while out and isinstance(out[-1], _Text):
        text = out[-1].text.rstrip(" ")
        if text:
            out[-1] = _Text(text, out[-1].style)
            return
        out.pop()


class _Converter:
    """Walks the HTML tree once, appending paragraphs, tables and pictures to the document."""

    def __init__(self, document: DocxDocument, *, east_asia_font: str, latin_font: str, font_size_pt: float) -> None:
        self.document = document
        self.east_asia_font = east_asia_font
        self.latin_font = latin_font
        self.font_size_pt = font_size_pt
        self.page_break_pending = False
        self.used_cells: set[object] = set()

    # Blocks -----------------------------------------------------------------------------------

    def blocks(self, element: HtmlElement, target: Container, align: WD_ALIGN_PARAGRAPH | None = None) -> None:
        """Convert a container's children: inline content between blocks becomes paragraphs."""
        pending: list[Segment] = []
        if element.text:
            pending.append(_Text(element.text, _Style()))
        for child in element:
            if isinstance(child.tag, str) and child.tag in BLOCKS:
                self.paragraph(target, pending, align=align)
                pending = []
                self.block(child, target, align)
            elif isinstance(child.tag, str):
                self.inline(child, _Style(), pending)
            if child.tail:
                pending.append(_Text(child.tail, _Style()))
        self.paragraph(target, pending, align=align)

    def block(self, element: HtmlElement, target: Container, align: WD_ALIGN_PARAGRAPH | None) -> None:
        tag, classes = element.tag, _classes(element)
        align = _align(classes, align)
        if "page-break" in classes or (tag == "section" and "annex" in classes):
            self.page_break_pending = True
        if tag in ("ul", "ol"):
            for number, item in enumerate(element.iterchildren("li"), start=1):
                marker = _Text("· " if tag == "ul" else f"{number}. ", _Style())
                self.paragraph(target, [marker, *self.content(item, _Style())], align=align, indent="item")
        elif tag == "table":
            self.table(element, target)
        elif tag in PARAGRAPHS:
            self.heading_or_paragraph(element, target, classes, align)
        else:
            self.blocks(element, target, align)

    def heading_or_paragraph(self, element: HtmlElement, target: Container, classes: set[str], align: WD_ALIGN_PARAGRAPH | None) -> None:
        tag = element.tag
        if tag.startswith("h") and tag[1:].isdigit():
            style = _Style(bold=True, size_pt=HEADING_PT.get(tag))
            if tag == "h1" and "title" in classes:
                align = WD_ALIGN_PARAGRAPH.CENTER
            paragraph = self.paragraph(target, self.content(element, style), align=align)
            if paragraph is not None:
                fmt = paragraph.paragraph_format
                fmt.keep_with_next = True
                fmt.space_before = Pt(8 if tag == "h1" else 6)
                fmt.space_after = Pt(4 if tag == "h1" else 2)
            return
        style = _Style(size_pt=SMALL_PT if "small" in classes else None)
        indent = "first-line" if "indent" in classes else "item" if "item" in classes or tag == "li" else None
        self.paragraph(target, self.content(element, style), align=align, indent=indent)

    def table(self, element: HtmlElement, target: Container) -> None:
        """A borderless layout table (parties, signatures); cells are converted like the body."""
        rows = element.xpath("./tr|./thead/tr|./tbody/tr|./tfoot/tr")
        cells = [row.xpath("./td|./th") for row in rows]
        columns = max((len(r) for r in cells), default=0)
        if not columns:
            return
        if self.page_break_pending and isinstance(target, DocxDocument):
            self.paragraph_in(target).paragraph_format.page_break_before = True
            self.page_break_pending = False
        keep_together = "signatures" in _classes(element)
        if keep_together and isinstance(target, DocxDocument) and target.paragraphs:
            # like `break-before: avoid`: the last clause comes to the signatures' page, never a page of signatures alone
            target.paragraphs[-1].paragraph_format.keep_with_next = True
        table = target.add_table(rows=len(rows), cols=columns)
        table.alignment = WD_TABLE_ALIGNMENT.CENTER
        for row, html_cells in zip(table.rows, cells, strict=False):
            if keep_together:  # like `page-break-inside: avoid`: signer and seal stay on one page
                row._tr.get_or_add_trPr().append(OxmlElement("w:cantSplit"))
            for cell, html_cell in zip(row.cells, html_cells, strict=False):
                self.blocks(html_cell, cell, _align(_classes(html_cell), None))

    # Inline -----------------------------------------------------------------------------------

    def content(self, element: HtmlElement, style: _Style) -> list[Segment]:
        """The inline segments inside a paragraph-like element."""
        segments: list[Segment] = []
        if element.text:
            segments.append(_Text(element.text, style))
        for child in element:
            if isinstance(child.tag, str):
                self.inline(child, style, segments)
            if child.tail:
                segments.append(_Text(child.tail, style))
        return segments

    def inline(self, element: HtmlElement, style: _Style, out: list[Segment]) -> None:
        tag, classes = element.tag, _classes(element)
        if tag in IGNORED:
            return
        if tag == "br":
            out.append(_Break())
            return
        if tag == "img":
            kind = "signature" if "signature" in classes else "seal" if "seal" in classes else ""
            out.append(_Image(element.get("src") or "", kind))
            return
        if tag in ("strong", "b"):
            style = replace(style, bold=True)
        elif tag in ("em", "i"):
            style = replace(style, italic=True)
        if tag == "u" or "fill" in classes:
            style = replace(style, underline=True)
        if "small" in classes:
            style = replace(style, size_pt=SMALL_PT)
        out.extend(self.content(element, style))  # unknown tags: their text is kept

    # Output -----------------------------------------------------------------------------------

    def paragraph_in(self, target: Container) -> Paragraph:
        if isinstance(target, _Cell) and target._tc not in self.used_cells:
            self.used_cells.add(target._tc)
            return target.paragraphs[0]  # a new cell already holds one empty paragraph
        return target.add_paragraph()

    def paragraph(
        self,
        target: Container,
        segments: list[Segment],
        *,
        align: WD_ALIGN_PARAGRAPH | None = None,
        indent: str | None = None,
    ) -> Paragraph | None:
        segments = _collapse(segments)
        if not any(isinstance(s, (_Text, _Image)) for s in segments):
            return None
        paragraph = self.paragraph_in(target)
        fmt = paragraph.paragraph_format
        fmt.alignment = align if align is not None else WD_ALIGN_PARAGRAPH.JUSTIFY
        two_chars = Pt(2 * self.font_size_pt)
        if indent == "first-line":
            fmt.first_line_indent = two_chars
        elif indent == "item":
            fmt.left_indent = two_chars
        if self.page_break_pending and isinstance(target, DocxDocument):
            fmt.page_break_before = True
            self.page_break_pending = False
        for seg in segments:
            if isinstance(seg, _Text):
                run = self.run(paragraph, seg.text, size_pt=seg.style.size_pt)
                run.bold = seg.style.bold or None
                run.italic = seg.style.italic or None
                run.underline = seg.style.underline or None
            elif isinstance(seg, _Break):
                self.run(paragraph, "").add_break()
            else:
                self.picture(paragraph, seg)
        return paragraph

    def run(self, paragraph: Paragraph, text: str, *, size_pt: float | None = None) -> Run:
        run = paragraph.add_run(text)
        set_fonts(run.element.get_or_add_rPr(), latin=self.latin_font, east_asia=self.east_asia_font)
        if size_pt is not None:
            run.font.size = Pt(size_pt)
        return run

    def picture(self, paragraph: Paragraph, image: _Image) -> None:
        """Only inline data: images (signatures, seal); anything else is left out, as in the PDF."""
        if not image.src.startswith("data:"):
            return
        try:
            data = decode_data_uri(image.src)
            run = self.run(paragraph, "")
            if image.kind == "signature":
                shape = run.add_picture(BytesIO(data), height=SIGNATURE_HEIGHT)
                limit: Length = SIGNATURE_MAX_WIDTH
            elif image.kind == "seal":
                shape = run.add_picture(BytesIO(data), width=SEAL_WIDTH)
                limit = SEAL_WIDTH
            else:
                shape = run.add_picture(BytesIO(data))
                section = self.document.sections[-1]
                width, left, right = section.page_width, section.left_margin, section.right_margin
                assert width is not None and left is not None and right is not None  # set in __init__
                limit = Length(width - left - right)
        except (ImageError, UnrecognizedImageError):
            return
        if shape.width > limit:
            shape.height = Length(int(shape.height * limit / shape.width))
            shape.width = limit


def set_fonts(rpr: CT_RPr, *, latin: str, east_asia: str) -> None:
    """Latin and East Asian font names on a run or style; Word ignores font.name for Chinese."""
    rfonts = rpr.get_or_add_rFonts()
    for attr in list(rfonts.attrib):  # theme fonts would win over the names below
        if attr.endswith("Theme") or attr.endswith("theme"):
            del rfonts.attrib[attr]
    for attr in ("w:ascii", "w:hAnsi", "w:cs"):
        rfonts.set(qn(attr), latin)
    rfonts.set(qn("w:eastAsia"), east_asia)


def _add_field(converter: _Converter, paragraph: Paragraph, instruction: str, size_pt: float) -> None:
    """A Word field (PAGE, NUMPAGES) Word computes on display; "1" until then."""

    def field_char(kind: str) -> BaseOxmlElement:
        char = OxmlElement("w:fldChar")
        char.set(qn("w:fldCharType"), kind)
        return char

    instr = OxmlElement("w:instrText")
    instr.set(qn("xml:space"), "preserve")
    instr.text = f" {instruction} "
    for part in (field_char("begin"), instr, field_char("separate"), None, field_char("end")):
        run = converter.run(paragraph, "1" if part is None else "", size_pt=size_pt)
        if part is not None:
            run.element.append(part)


def _set_up(document: DocxDocument, converter: _Converter, margins_cm: float, header_text: str | None) -> None:
    styles = document.styles.element
    defaults = styles.find(f"{qn('w:docDefaults')}/{qn('w:rPrDefault')}/{qn('w:rPr')}")
    for rpr in (defaults, document.styles["Normal"].element.get_or_add_rPr()):
        if rpr is None:
            continue
        set_fonts(rpr, latin=converter.latin_font, east_asia=converter.east_asia_font)
        lang = rpr.find(qn("w:lang"))
        if lang is None:
            lang = OxmlElement("w:lang")
            rpr.append(lang)
        lang.set(qn("w:val"), "en-US")
        lang.set(qn("w:eastAsia"), "zh-CN")  # Chinese line breaking and punctuation rules
    normal = document.styles["Normal"]
    normal.font.size = Pt(converter.font_size_pt)
    normal.paragraph_format.space_before = Pt(0)
    normal.paragraph_format.space_after = Pt(2)
    normal.paragraph_format.line_spacing = 1.3

    section = document.sections[0]
    section.page_width, section.page_height = A4_WIDTH, A4_HEIGHT
    section.top_margin = section.bottom_margin = Cm(margins_cm)
    section.left_margin = section.right_margin = Cm(margins_cm)

    if header_text:
        header = section.header.paragraphs[0]
        header.alignment = WD_ALIGN_PARAGRAPH.RIGHT
        converter.run(header, header_text, size_pt=SMALL_PT).font.color.rgb = RGBColor(0x66, 0x66, 0x66)
    footer = section.footer.paragraphs[0]
    footer.alignment = WD_ALIGN_PARAGRAPH.CENTER
    converter.run(footer, "第 ", size_pt=SMALL_PT)
    _add_field(converter, footer, "PAGE", SMALL_PT)
    converter.run(footer, " 页 共 ", size_pt=SMALL_PT)
    _add_field(converter, footer, "NUMPAGES", SMALL_PT)
    converter.run(footer, " 页", size_pt=SMALL_PT)


def html_to_docx(
    html: str,
    *,
    east_asia_font: str = "SimSun",
    latin_font: str = "Times New Roman",
    font_size_pt: float = 10.5,
    margins_cm: float = 2.2,
    header_text: str | None = None,
) -> bytes:
    """A Word document (A4, page numbers in the footer) with the text of the contract HTML.

    Understands the subset our templates use (headings, paragraph classes, fill-in blanks,
    borderless layout tables, data: images, page breaks); other tags keep their text.
    """
    root = lxml.html.document_fromstring(html)
    document = Document()
    converter = _Converter(document, east_asia_font=east_asia_font, latin_font=latin_font, font_size_pt=font_size_pt)
    _set_up(document, converter, margins_cm, header_text)
    properties = document.core_properties
    properties.author = properties.last_modified_by = ""  # not "python-docx"
    properties.comments = ""
    title = root.findtext("head/title")
    properties.title = HTML_SPACE.sub(" ", title).strip(" ") if title else ""
    body = root.find("body")
    converter.blocks(body if body is not None else root, document)
    out = BytesIO()
    document.save(out)
    return out.getvalue()
