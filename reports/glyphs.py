"""Which characters the installed fonts can print: a contract's text is drawn by WeasyPrint
(Pango), which falls back to any installed font that has a glyph; a character none of them has
prints as an empty box, in a document both parties sign. Rare CJK characters of names (Extension
B and later: 𠮷, 𫖯) are the usual case."""

from __future__ import annotations

import io
import shutil
import subprocess
from functools import lru_cache

from fontTools.ttLib import TTCollection, TTFont


@lru_cache(maxsize=1)
def printable_code_points() -> frozenset[int] | None:
    """Every code point some installed font maps to a glyph; None when fontconfig cannot say."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    listed = subprocess.run([fc_list, "--format", "%{file}\n"], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    points: set[int] = set()
    for path in sorted(set(filter(None, listed.stdout.splitlines()))):
        try:
            points.update(code_points(path))
        except Exception:  # noqa: BLE001, S112 - a font fontTools cannot read prints nothing either
            continue
    return frozenset(points) if points else None


@lru_cache(maxsize=32)
def code_points(path: str, *, first_face: bool = False) -> frozenset[int]:
    """The code points a font file maps to glyphs: every face of a collection (.ttc), or with
    `first_face` only face 0 (the one Pillow draws with). fontTools' errors pass through."""
    with open(path, "rb") as file:  # closed here: fontTools' lazy reading would keep it open
        data = io.BytesIO(file.read())
    fonts = TTCollection(data).fonts if path.lower().endswith((".ttc", ".otc")) else [TTFont(data)]
    points: set[int] = set()
    for font in fonts[:1] if first_face else fonts:
        points.update(font.getBestCmap() or {})
    return frozenset(points)


def unprintable(text: str) -> list[str]:
    """The characters of `text` no installed font can draw (spaces and line breaks aside), each once."""
    points = printable_code_points()
    if points is None:
        return []
    return list(dict.fromkeys(c for c in text if not c.isspace() and ord(c) not in points))
