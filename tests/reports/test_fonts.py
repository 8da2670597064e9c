"""The CJK font every renderer needs, and the single-face copy pyHanko's stamp needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fontTools.ttLib import TTFont

from reports.fonts import extract_single_font, find_cjk_font


def test_the_installed_font_has_chinese_glyphs() -> None:
    font = find_cjk_font()
    assert font.is_file()
    assert font.name == "wqy-zenhei.ttc"  # the Makefile installs fonts-wqy-zenhei


def test_wenquanyi_is_preferred_over_noto(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "NotoSansCJK-Regular.ttc").write_bytes(b"")
    (tmp_path / "b" / "wqy-zenhei.ttc").write_bytes(b"")
    assert find_cjk_font([tmp_path]).name == "wqy-zenhei.ttc"
    (tmp_path / "b" / "wqy-zenhei.ttc").unlink()
    assert find_cjk_font([tmp_path]).name == "NotoSansCJK-Regular.ttc"


def test_no_cjk_font_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="fonts-wqy-zenhei"):
        find_cjk_font([tmp_path])


def test_first_face_of_the_collection_becomes_a_single_ttf_once(tmp_path: Path) -> None:
    single = extract_single_font(find_cjk_font(), tmp_path)
    assert single.suffix == ".ttf" and single.parent == tmp_path
    with TTFont(single) as font:
        assert ord("章") in font.getBestCmap()
        assert font["name"].getDebugName(1) == "WenQuanYi Zen Hei"
    written = single.stat().st_mtime_ns
    assert extract_single_font(find_cjk_font(), tmp_path) == single
    assert single.stat().st_mtime_ns == written  # cached, not rewritten
    assert list(tmp_path.iterdir()) == [single]  # no temporary files left behind
