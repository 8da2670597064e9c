"""Signature uploads are checked and re-encoded; the demo seal and typed signature look the part."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from reports.images import ImageError, decode_data_uri, render_seal, render_typed_signature, to_data_uri, validate_image
from tests.reports.conftest import png_bytes


def open_png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def count(image: Image.Image, test) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for pixel in image.convert("RGBA").get_flattened_data() if test(*pixel))


def is_red(r: int, g: int, b: int, a: int) -> bool:
    return a > 128 and r > 150 and g < 90 and b < 90


def is_blue(r: int, g: int, b: int, a: int) -> bool:
    return a > 128 and b > 80 and r < 60 and g < 80


def test_seal_is_a_red_transparent_png_with_the_name_on_it() -> None:
    seal = open_png(render_seal("北京讯达通信科技有限公司", size_px=300))
    assert seal.mode == "RGBA" and seal.size == (300, 300)
    assert seal.getpixel((0, 0))[3] == 0 and seal.getpixel((299, 299))[3] == 0  # corners show the paper
    assert seal.getpixel((150, 150))[:3] == (218, 37, 29)  # the star in the centre
    red = count(seal, is_red)
    assert red > 300 * 300 * 0.08
    assert count(seal, is_blue) == 0
    # The name is drawn along the upper arc: above the star there is red between ring and centre.
    unnamed = open_png(render_seal("", size_px=300, caption=""))
    upper_band = (100, 30, 200, 95)  # between the ring and the star
    assert count(seal.crop(upper_band), is_red) > 1000
    assert count(unnamed.crop(upper_band), is_red) == 0


def test_typed_signature_is_dark_blue_ink_on_transparent_png() -> None:
    signature = open_png(render_typed_signature("张三丰"))
    assert signature.mode == "RGBA"
    assert signature.getpixel((0, 0))[3] == 0
    assert count(signature, is_blue) > 500
    assert count(signature, is_red) == 0
    assert signature.width > signature.height  # three characters side by side


@pytest.mark.parametrize("char", ["•", "ő"])
def test_a_character_the_cjk_font_lacks_is_drawn_from_another_font_not_as_an_empty_box(char: str) -> None:
    """Found by a review: the contract's text printed 买买提•艾力 (Pango takes the bullet from
    another font), the signature image drew 买买提□艾力 with WenQuanYi alone; the seal too."""
    no_font_has = "\u0378"  # unassigned: every renderer draws its empty box
    assert render_typed_signature(f"买买提{char}艾力") != render_typed_signature(f"买买提{no_font_has}艾力")
    assert render_seal(f"创信{char}公司", size_px=300) != render_seal(f"创信{no_font_has}公司", size_px=300)
    assert count(open_png(render_typed_signature(char)), is_blue) > 100


def test_fontconfig_not_answering_in_time_still_draws_the_signature_and_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: fc-match timing out raised out of the image, and so out of issuing the
    contract; the character is drawn as the CJK font's empty box instead (as with no fallback),
    and the next image asks again (a second review: the first answer was kept for the process's
    life, and fontconfig building its cache on a new server can be that slow once)."""
    import subprocess

    from reports import images

    real = subprocess.run
    asked: list[str] = []

    def slow_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(args[0][-1])
        if len(asked) == 1:
            raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout", 0))
        return real(*args, **kwargs)

    images._fallback_font_of.cache_clear()
    monkeypatch.setattr(images.subprocess, "run", slow_once)
    try:
        assert count(open_png(render_typed_signature("Kovács Bő")), is_blue) > 500
        assert images._fallback_font("ő") is not None and len(asked) == 2
        assert images._fallback_font("ő") is not None and len(asked) == 2  # an answer is kept
    finally:
        images._fallback_font_of.cache_clear()


def test_a_png_is_accepted_and_comes_back_as_a_png_without_metadata_or_trailing_data() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret-metadata")
    out = io.BytesIO()
    Image.new("RGBA", (60, 30), (16, 32, 107, 255)).save(out, "PNG", pnginfo=info)
    polyglot = out.getvalue() + b"<script>alert(1)</script>"
    cleaned = validate_image(polyglot)
    image = open_png(cleaned)
    assert image.size == (60, 30) and image.getpixel((5, 5)) == (16, 32, 107, 255)
    assert b"secret-metadata" not in cleaned and b"<script>" not in cleaned


def test_a_jpeg_is_accepted_and_converted_to_png() -> None:
    out = io.BytesIO()
    Image.new("RGB", (80, 40), (255, 255, 255)).save(out, "JPEG", exif=Image.Exif())
    assert open_png(validate_image(out.getvalue())).size == (80, 40)


def test_text_and_gif_are_refused_with_a_chinese_message() -> None:
    gif = io.BytesIO()
    Image.new("P", (10, 10)).save(gif, "GIF")
    for data in (b"<svg onload=alert(1)>", "签名".encode(), gif.getvalue(), b""):
        with pytest.raises(ImageError, match="仅支持 PNG 或 JPEG"):
            validate_image(data)


def test_too_many_bytes_or_pixels_are_refused() -> None:
    with pytest.raises(ImageError, match="过大（最大 2 MB）"):
        validate_image(b"\x89PNG\r\n\x1a\n" + bytes(2_000_001))
    with pytest.raises(ImageError, match="尺寸过大"):
        validate_image(png_bytes((3000, 2000)))  # small file, 6 million pixels
    assert validate_image(png_bytes((2000, 2000)))  # exactly at the limit


def test_a_truncated_png_is_refused_even_after_weasyprint_relaxed_pillow() -> None:
    import weasyprint  # noqa: F401  (its import sets ImageFile.LOAD_TRUNCATED_IMAGES = True)

    data = png_bytes((200, 100), (1, 2, 3, 255))
    with pytest.raises(ImageError, match="损坏"):
        validate_image(data[: len(data) // 2])


def test_data_uri_round_trip_and_refusals() -> None:
    png = png_bytes()
    assert decode_data_uri(to_data_uri(png)) == png
    for uri in ("data:text/html;base64,PHNjcmlwdD4=", "http://example.com/a.png", "data:image/png;base64,@@@", "data:image/png,raw"):
        with pytest.raises(ImageError):
            decode_data_uri(uri)
    with pytest.raises(ImageError, match="过大"):
        decode_data_uri("data:image/png;base64," + "A" * 3_000_000)
