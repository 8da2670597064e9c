"""A small hand-drawn-looking signature as a PNG data URI, for form tests without a browser."""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw


def _signature_png() -> bytes:
    image = Image.new("RGBA", (300, 100), (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    draw.line([(10, 70), (60, 20), (90, 80), (140, 30), (200, 75), (280, 40)], fill=(16, 32, 107, 255), width=4)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


SIGNATURE_PNG = _signature_png()
SIGNATURE_DATA_URI = "data:image/png;base64," + base64.b64encode(SIGNATURE_PNG).decode()
