"""HTML to PDF with WeasyPrint, fetching nothing but inline data and files we ship."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import weasyprint
from weasyprint.urls import URLFetcherResponse

from reports.fonts import find_cjk_font

METADATA_KEYS = ("title", "author", "subject", "keywords")


class URLRefused(ValueError):
    """A resource URL outside what the renderer may read; WeasyPrint skips the resource."""


class SafeURLFetcher(weasyprint.URLFetcher):
    """Allows `data:` URLs and `file:` URLs under `allowed_roots`; refuses everything else.

    Templates hold user-supplied text, so a stray `http:` or `file:///etc/passwd` reference
    must neither leak a request nor read a file. Refused URLs are kept in `refused`.
    """

    def __init__(self, allowed_roots: Sequence[Path] = (), **kwargs: Any) -> None:
        super().__init__(allowed_protocols=("data", "file"), allow_redirects=False, **kwargs)
        self.allowed_roots = [Path(root).resolve() for root in allowed_roots]
        self.refused: list[str] = []

    def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
        """WeasyPrint's hook for every resource (images, stylesheets, fonts, attachments)."""
        if not self.allows(url):
            self.refused.append(url)
            raise URLRefused(f"resource refused: {url[:200]}")
        return super().fetch(url, headers)

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "data":
            return True
        if scheme != "file" or parts.netloc not in ("", "localhost"):
            return False
        # resolve() follows symlinks and `..`, so neither can climb out of a root.
        path = Path(url2pathname(parts.path)).resolve()
        return any(path.is_relative_to(root) for root in self.allowed_roots)


def render_pdf(
    html: str,
    *,
    base_url: str | None = None,
    allowed_roots: Sequence[Path] = (),
    metadata: Mapping[str, str] | None = None,
    fetcher: SafeURLFetcher | None = None,
) -> bytes:
    """The PDF of `html`, with embedded (subset) fonts so the Chinese text stays extractable.

    `metadata` may set title, author, subject, keywords. Pass `fetcher` to read its `refused`
    list afterwards; it then replaces `allowed_roots`.
    """
    find_cjk_font()  # fail loudly rather than print Chinese as empty boxes
    unknown = set(metadata or {}) - set(METADATA_KEYS)
    if unknown:
        raise ValueError(f"unknown PDF metadata: {sorted(unknown)}")
    fetcher = fetcher if fetcher is not None else SafeURLFetcher(allowed_roots)
    document = weasyprint.HTML(string=html, base_url=base_url, url_fetcher=fetcher).render()
    meta = metadata or {}
    if "title" in meta:
        document.metadata.title = meta["title"]
    if "author" in meta:
        document.metadata.authors = [meta["author"]]
    if "subject" in meta:
        document.metadata.description = meta["subject"]
    if "keywords" in meta:
        document.metadata.keywords = [k.strip() for k in meta["keywords"].split(",") if k.strip()]
    pdf = document.write_pdf()
    assert pdf is not None
    return pdf
