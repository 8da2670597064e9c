"""PDF rendering: extractable Chinese text, embedded fonts, no resource fetched from outside."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pypdf
import pytest
import weasyprint

from reports.pdf import SafeURLFetcher, render_pdf
from tests.reports.conftest import CLAUSE, contract_html, page, png_bytes


def pdf_text(pdf: bytes) -> str:
    return "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)


class CountingServer:
    """A loopback HTTP server that counts every request it receives."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png" if self.path.endswith(".png") else "text/css")
                self.end_headers()
                self.wfile.write(png_bytes() if self.path.endswith(".png") else b"p { color: red }")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"


@pytest.fixture
def http_server() -> Iterator[CountingServer]:
    server = CountingServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    thread.join(timeout=5)


def test_chinese_text_comes_back_out_of_the_pdf_with_the_font_embedded() -> None:
    pdf = render_pdf(contract_html(clauses=3), metadata={"title": "短信业务服务合同", "author": "讯达通信"})
    text = pdf_text(pdf)
    assert "短信业务服务合同" in text
    assert CLAUSE[:30] in text.replace("\n", "")
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    embedded = [f.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"] for f in fonts.values()]
    assert any("WenQuanYi" in d["/FontName"] and "/FontFile2" in d for d in embedded)
    assert reader.metadata is not None
    assert (reader.metadata.title, reader.metadata.author) == ("短信业务服务合同", "讯达通信")


def test_unknown_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match="titel"):
        render_pdf(page("<p>x</p>"), metadata={"titel": "typo"})


def test_remote_urls_and_local_files_are_never_fetched(http_server: CountingServer) -> None:
    remote = [
        f"{http_server.url}/x.png",
        f"{http_server.url}/style.css",
        f"{http_server.url}/imported.css",
        f"{http_server.url}/background.png",
    ]
    html = page(
        f'<link rel="stylesheet" href="{remote[1]}"><style>@import url("{remote[2]}");'
        f' body {{ background: url("{remote[3]}") }}</style>'
        f'<p>正文</p><img src="{remote[0]}"><img src="file:///etc/passwd"><img src="ftp://127.0.0.1/x.png">'
    )
    fetcher = SafeURLFetcher()
    pdf = render_pdf(html, fetcher=fetcher)
    assert "正文" in pdf_text(pdf)
    assert http_server.hits == []
    assert set(fetcher.refused) >= {*remote, "file:///etc/passwd", "ftp://127.0.0.1/x.png"}
    # Control: WeasyPrint's own fetcher does reach the server, so the count above is meaningful.
    weasyprint.HTML(string=html).write_pdf()
    assert "/x.png" in http_server.hits


def test_files_are_read_only_under_the_allowed_roots(tmp_path: Path) -> None:
    assets, outside = tmp_path / "assets", tmp_path / "outside"
    assets.mkdir()
    outside.mkdir()
    (assets / "logo.png").write_bytes(png_bytes((30, 30)))
    (outside / "secret.png").write_bytes(png_bytes((50, 50)))
    (assets / "link.png").symlink_to(outside / "secret.png")
    html = page(f'<img src="logo.png"><img src="{(outside / "secret.png").as_uri()}"><img src="link.png"><img src="../outside/secret.png">')
    fetcher = SafeURLFetcher([assets])
    pdf = render_pdf(html, base_url=str(assets) + "/", fetcher=fetcher)
    images = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].images
    assert [(i.image.width, i.image.height) for i in images] == [(30, 30)]
    # `../outside/secret.png` is the same URL as the absolute one (WeasyPrint asks only once).
    assert set(fetcher.refused) == {(outside / "secret.png").as_uri(), (assets / "link.png").as_uri()}


def test_escaped_markup_is_printed_as_text() -> None:
    pdf = render_pdf(page("<p>客户名称：&lt;script&gt;alert(1)&lt;/script&gt;</p>"))
    assert "客户名称：<script>alert(1)</script>" in pdf_text(pdf)


def test_inline_png_signature_is_embedded() -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes((120, 40))).decode()
    pdf = render_pdf(page(f'<p>签字：<img src="{data_uri}" style="height: 14mm"></p>'))
    images = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].images
    assert [(i.image.width, i.image.height) for i in images] == [(120, 40)]


def test_four_page_chinese_contract_render_time() -> None:
    html = contract_html()
    start = time.perf_counter()
    pdf = render_pdf(html, metadata={"title": "短信业务服务合同"})
    elapsed = time.perf_counter() - start
    pages = len(pypdf.PdfReader(io.BytesIO(pdf)).pages)
    print(f"\nrender_pdf: {pages} pages of Chinese in {elapsed:.2f} s, {len(pdf) / 1024:.0f} KiB")
    assert pages == 4
    assert "第 4 页 共 4 页" in pdf_text(pdf)
