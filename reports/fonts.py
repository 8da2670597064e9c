"""Locate the CJK font the PDF, seal and signature renderers rely on."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fontTools.ttLib import TTCollection

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
# Best first: WenQuanYi Zen Hei is small and complete; Noto Sans CJK is the common alternative.
PREFERRED = ("wqy-zenhei.ttc", "NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "NotoSansSC-Regular.otf")


def find_cjk_font(search_dirs: Sequence[Path] = FONT_DIRS) -> Path:
    """The installed font with Chinese glyphs, preferring WenQuanYi Zen Hei, then Noto Sans CJK.

    Raises RuntimeError when none is installed: Chinese would otherwise render as empty boxes.
    """
    for name in PREFERRED:
        for folder in search_dirs:
            if folder.is_dir():
                found = sorted(folder.rglob(name))
                if found:
                    return found[0]
    raise RuntimeError(
        "未找到中文字体（No CJK font found）：请安装 Debian 软件包 fonts-wqy-zenhei （apt-get install fonts-wqy-zenhei）或 fonts-noto-cjk"
    )


def extract_single_font(ttc: Path, dest_dir: Path) -> Path:
    """Face 0 of a font collection as a single .ttf in dest_dir (cached there).

    pyHanko's stamp text needs one TTF/OTF, not a .ttc collection.
    """
    if ttc.suffix.lower() != ".ttc":
        return ttc
    target = dest_dir / f"{ttc.stem}-0.ttf"
    if target.exists() and target.stat().st_mtime >= ttc.stat().st_mtime:
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    collection = TTCollection(str(ttc), lazy=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".ttf.tmp")
        os.close(fd)
        try:
            collection.fonts[0].save(tmp)
            os.replace(tmp, target)  # atomic: a concurrent reader never sees half a font
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        collection.close()
    return target
