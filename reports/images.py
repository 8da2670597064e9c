"""Signature and seal images: validating uploads, data URIs, drawing a demo seal and a typed signature."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import shutil
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from io import BytesIO

from PIL import Image, ImageChops, ImageDraw, ImageFile, ImageFont, ImageOps, features

from reports.fonts import find_cjk_font
from reports.glyphs import code_points

log = logging.getLogger(__name__)

SEAL_RED = (218, 37, 29, 255)
INK_BLUE = (20, 36, 110, 255)
_FORMATS = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}
_DATA_URI = re.compile(r"data:image/(png|jpeg|webp);base64,(?P<payload>[A-Za-z0-9+/=]*)\Z")


class ImageError(ValueError):
    """An image a person supplied that we will not use; the message is for that person."""


def _format_of(data: bytes) -> str | None:
    for name, magic in _FORMATS.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and features.check("webp"):
        return "WEBP"
    return None


_strict_lock = threading.Lock()


@contextmanager
def _strict_decoding() -> Iterator[None]:
    """Refuse truncated images even though importing WeasyPrint sets Pillow's global
    `LOAD_TRUNCATED_IMAGES = True` for the whole process."""
    with _strict_lock:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


#: The largest signature or seal image accepted (the forms name it and check it in the page).
MAX_IMAGE_BYTES = 2_000_000


def size_limit_text(limit: int) -> str:
    """An image's size limit as its refusals say it (decimal megabytes: 2 MB)."""
    return f"{limit / 1_000_000:g} MB"


def validate_image(data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = 4_000_000, what: str = "签名图片") -> bytes:
    """The image re-encoded as a plain PNG, or ImageError.

    Only PNG, JPEG (and WebP when Pillow has it) that actually decode are accepted; re-encoding
    drops metadata and anything smuggled after the image data (polyglot files). `what` the image
    is, as its refusals name it (a seal is no signature: found by an exploratory test, an upload
    of the provider's seal was refused as "签名图片格式无效").
    """
    if len(data) > max_bytes:
        raise ImageError(f"{what}过大（最大 {size_limit_text(max_bytes)}）")
    expected = _format_of(data)
    if expected is None:
        raise ImageError(f"{what}格式无效：仅支持 PNG 或 JPEG")
    try:
        with _strict_decoding():
            image = Image.open(BytesIO(data), formats=[expected])
            if image.width * image.height > max_pixels:
                raise ImageError(f"{what}尺寸过大（最多 {max_pixels:,} 像素）")
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(f"{what}尺寸过大（最多 {max_pixels:,} 像素）") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError… on broken data
        raise ImageError(f"{what}已损坏，无法读取") from exc
    upright: Image.Image = ImageOps.exif_transpose(image)  # phone photos: keep them upright once EXIF is gone
    if upright.mode not in ("RGB", "RGBA", "L", "LA"):
        upright = upright.convert("RGBA")
    out = BytesIO()
    upright.save(out, "PNG")
    return out.getvalue()


def decode_data_uri(uri: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a base64 `data:image/png|jpeg|webp` URI (what a signature pad posts)."""
    if len(uri) > max_bytes * 4 // 3 + 64:  # refuse before decoding a huge payload
        raise ImageError(f"签名图片过大（最大 {size_limit_text(max_bytes)}）")
    match = _DATA_URI.match(uri.strip())
    if match is None:
        raise ImageError("签名图片格式无效：应为 PNG 或 JPEG 图片")
    try:
        return base64.b64decode(match["payload"], validate=True)
    except binascii.Error as exc:
        raise ImageError("签名图片数据损坏") from exc


def to_data_uri(png: bytes) -> str:
    """A PNG as a data URI, the only kind of image the PDF renderer will embed."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def upload_as_data_uri(data: bytes) -> str | None:
    """An uploaded image as the data URI a signature pad posts (`decode_data_uri` reads it), or
    None when it is none of the formats taken."""
    kind = _format_of(data)
    return None if kind is None else f"data:image/{kind.lower()};base64," + base64.b64encode(data).decode("ascii")


@lru_cache(maxsize=16)
def _font(size: int, path: str | None = None) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path or str(find_cjk_font()), size, index=0)


@lru_cache(maxsize=1)
def _cjk_code_points() -> frozenset[int]:
    return code_points(str(find_cjk_font()), first_face=True)  # (looked for once: find_cjk_font walks the font folders)


class _NoAnswer(Exception):
    """fontconfig did not answer in time: not a verdict to remember."""


def _fallback_font(char: str) -> str | None:
    """An installed font that has `char`, as fontconfig picks one (as Pango does for the PDF's
    text), when the CJK font has none; None when no font has it, or fontconfig cannot say in
    time (the image then shows the CJK font's empty box; the document is still made, and the
    next image asks again: fontconfig building its cache on a new server can take that long)."""
    try:
        return _fallback_font_of(char)
    except _NoAnswer:
        log.warning("fc-match gave no font for U+%04X in time", ord(char))
        return None


@lru_cache(maxsize=512)
def _fallback_font_of(char: str) -> str | None:
    """`_fallback_font`, asked once a character per process; _NoAnswer when fontconfig is late."""
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        found = subprocess.run(  # noqa: S603
            [fc_match, "--format", "%{file}", f"sans-serif:charset={ord(char):x}"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (subprocess.TimeoutExpired, OSError):
        raise _NoAnswer from None
    if not found:
        return None
    try:
        return found if ord(char) in code_points(found, first_face=True) else None
    except Exception:  # noqa: BLE001 - a font fontTools cannot read draws nothing either
        return None


def _font_for(char: str, size: int) -> ImageFont.FreeTypeFont:
    """The CJK font, or for a character it lacks (•, ő, ư: a name the PDF's text prints through
    another font) one that has it: the images showed an empty box where the text did not."""
    if ord(char) in _cjk_code_points() or char.isspace():
        return _font(size)
    return _font(size, _fallback_font(char))


def _runs(text: str, size: int) -> list[tuple[str, ImageFont.FreeTypeFont]]:
    """`text` cut into runs drawn with one font each."""
    runs: list[tuple[str, ImageFont.FreeTypeFont]] = []
    for char in text:
        font = _font_for(char, size)
        if runs and runs[-1][1] is font:
            runs[-1] = (runs[-1][0] + char, font)
        else:
            runs.append((char, font))
    return runs


def _png(image: Image.Image) -> bytes:
    out = BytesIO()
    image.save(out, "PNG")  # optimize=True halves the speed for 2 % smaller files
    return out.getvalue()


def _star(cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    inner = radius * 0.382  # regular five-pointed star
    return [
        (cx + r * math.sin(math.pi * i / 5), cy - r * math.cos(math.pi * i / 5))
        for i, r in ((i, radius if i % 2 == 0 else inner) for i in range(10))
    ]


def _glyph(char: str, font: ImageFont.FreeTypeFont, color: tuple[int, int, int, int]) -> Image.Image:
    """One character centred on a square transparent tile, ready to be rotated."""
    side = int(font.size * 1.5)
    tile = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    weight = max(1, round(font.size / 30))  # seal lettering is heavier than the regular face
    ImageDraw.Draw(tile).text((side / 2, side / 2), char, font=font, fill=color, anchor="mm", stroke_width=weight, stroke_fill=color)
    return tile


def render_seal(name: str, *, size_px: int = 600, caption: str = "合同专用章") -> bytes:
    """A demo company seal (公章) as a transparent PNG: red ring, star, name along the upper arc.

    Only for providers that have not uploaded their own seal; it is drawn, not a legal seal.
    """
    scale = 2  # draw large, then downsample: Pillow's circles and polygons are not anti-aliased
    side = size_px * scale
    c = side / 2
    seal = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(seal)
    outer = side * 0.48
    ring = side * 0.036
    draw.ellipse((c - outer, c - outer, c + outer, c + outer), outline=SEAL_RED, width=round(ring))
    draw.polygon(_star(c, c, side * 0.16), fill=SEAL_RED)

    chars = [ch for ch in name.strip() if not ch.isspace()]
    if chars:
        span = min(250.0, max(120.0, 21.0 * len(chars)))  # degrees of arc the name covers
        text_radius = outer - ring - side * 0.1
        step = span / max(len(chars) - 1, 1)
        size = int(min(side * 0.13, math.radians(step) * text_radius * 0.9))
        for index, char in enumerate(chars):
            angle = -span / 2 + index * step if len(chars) > 1 else 0.0
            glyph = _glyph(char, _font_for(char, size), SEAL_RED).rotate(-angle, resample=Image.Resampling.BICUBIC)
            x = c + text_radius * math.sin(math.radians(angle))
            y = c - text_radius * math.cos(math.radians(angle))
            seal.alpha_composite(glyph, (round(x - glyph.width / 2), round(y - glyph.height / 2)))
    if caption:
        caption_font = _font(int(side * 0.075))
        draw.text(
            (c, c + side * 0.25),
            caption,
            font=caption_font,
            fill=SEAL_RED,
            anchor="mm",
            stroke_width=max(1, round(caption_font.size / 30)),
            stroke_fill=SEAL_RED,
        )
    return _png(seal.resize((size_px, size_px), Image.Resampling.LANCZOS))


def render_typed_signature(name: str, *, height_px: int = 120) -> bytes:
    """The signer's name in dark blue ink on a transparent PNG, slanted like handwriting.

    Used when a contract is issued without a drawn signature (e.g. from the CLI).
    """
    size = int(height_px * 0.7)
    runs = _runs(name.strip() or "—", size)
    main = _font(size)
    ascent = main.getmetrics()[0]
    pad = height_px * 0.15
    width = int(sum(font.getlength(text) for text, font in runs) + 2 * pad + height_px * 0.25)  # room for the slant
    image = Image.new("RGBA", (width, height_px), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    baseline = (height_px + ascent - main.getmetrics()[1]) / 2
    x = pad
    for text, font in runs:  # on one baseline, each run in a font that has its characters
        draw.text((x, baseline), text, font=font, fill=INK_BLUE, anchor="ls")
        x += font.getlength(text)
    slant = 0.2
    image = image.transform(image.size, Image.Transform.AFFINE, (1, slant, -slant * height_px, 0, 1, 0), resample=Image.Resampling.BICUBIC)
    return _png(image)


def has_ink(png: bytes) -> bool:
    """Whether a signature image shows anything: not fully transparent, not blank white."""
    with Image.open(BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A").point(lambda a: 255 if a > 16 else 0)
    # Ink is a visible pixel that is not near-white.
    dark = rgba.convert("L").point(lambda v: 255 if v < 200 else 0)
    return ImageChops.multiply(alpha, dark).getbbox() is not None
