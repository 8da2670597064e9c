"""Split a message into SMS parts: GSM 7-bit when every character allows it, UCS-2 otherwise.

Limits (3GPP TS 23.038 / 23.040): one message holds 160 septets or 70 UCS-2 units; parts of a
concatenated message hold 153 / 67 because the 6-byte UDH takes the rest. A GSM escape pair and a
UTF-16 surrogate pair always stay in one part. Parts are counted (and charged) as produced here,
and a text needing more than the allowed parts is refused, never cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

ESM_CLASS_UDHI: Final = 0x40  # esm_class bit telling the SMSC that short_message starts with a UDH
DATA_CODING_GSM7: Final = 0x00
DATA_CODING_UCS2: Final = 0x08

GSM7_SINGLE: Final = 160
GSM7_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67
MAX_PARTS_IN_UDH: Final = 255  # total and sequence number are one byte each

_ESCAPE: Final = 0x1B

# 3GPP TS 23.038 §6.2.1, the default alphabet; position = septet value (0x1B is the escape).
_GSM7_DEFAULT: Final = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# §6.2.1.1, the extension table: character -> septet sent after the escape.
_GSM7_EXTENSION: Final[dict[str, int]] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_GSM7_ENCODE: Final[dict[str, bytes]] = {
    **{ch: bytes([code]) for code, ch in enumerate(_GSM7_DEFAULT) if code != _ESCAPE},
    **{ch: bytes([_ESCAPE, code]) for ch, code in _GSM7_EXTENSION.items()},
}
_GSM7_EXTENSION_DECODE: Final[dict[int, str]] = {code: ch for ch, code in _GSM7_EXTENSION.items()}

assert len(_GSM7_DEFAULT) == 128


class TooLong(ValueError):
    """The text needs more parts than allowed; `reason` is Chinese text for the customer."""

    def __init__(self, reason: str, parts: int, max_parts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts = parts
        self.max_parts = max_parts


@dataclass(frozen=True)
class Segmentation:
    """How a text goes over SMPP: encoding, data_coding and the part payloads without UDH.

    `length` is the size in the encoding's units (septets for gsm7, UTF-16 units for ucs2),
    the figure a sender compares with 70/160.
    """

    encoding: Literal["gsm7", "ucs2"]
    data_coding: int
    payloads: tuple[bytes, ...]
    length: int

    @property
    def parts(self) -> int:
        """Number of SMS the text takes, the unit the customer is charged for."""
        return len(self.payloads)

    @property
    def esm_class(self) -> int:
        """esm_class for submit_sm: UDHI set only when the parts carry a concatenation UDH."""
        return ESM_CLASS_UDHI if self.parts > 1 else 0x00

    def short_messages(self, reference: int) -> list[bytes]:
        """The short_message bodies to submit: with UDH for a long text, the bare payload otherwise."""
        if self.parts == 1:
            return list(self.payloads)
        return with_udh(self.payloads, reference)


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM default alphabet or its extension table."""
    return all(ch in _GSM7_ENCODE for ch in text)


def encode_segments(text: str, max_parts: int) -> Segmentation:
    """Encode and split `text`, raising TooLong when it needs more than `max_parts` parts.

    An empty text is one empty part; refusing empty content is the intake's decision, not this one's.
    """
    if not 1 <= max_parts <= MAX_PARTS_IN_UDH:
        raise ValueError(f"max_parts must be within 1..{MAX_PARTS_IN_UDH}, got {max_parts}")
    if is_gsm7(text):
        septets = [_GSM7_ENCODE[ch] for ch in text]
        length = sum(len(s) for s in septets)
        payloads = _split(septets, length, GSM7_SINGLE, GSM7_PART)
        return _checked(Segmentation("gsm7", DATA_CODING_GSM7, payloads, length), max_parts)
    # Each UTF-16 code unit is two bytes; a character outside the BMP is a surrogate pair (4 bytes).
    units = [ch.encode("utf-16-be") for ch in text]
    length = sum(len(u) for u in units) // 2
    payloads = _split(units, length * 2, UCS2_SINGLE * 2, UCS2_PART * 2)
    return _checked(Segmentation("ucs2", DATA_CODING_UCS2, payloads, length), max_parts)


def _split(units: Sequence[bytes], total: int, single: int, part: int) -> tuple[bytes, ...]:
    """Pack per-character byte strings into parts of at most `part` bytes, never splitting one."""
    if total <= single:
        return (b"".join(units),)
    parts: list[bytes] = []
    current = bytearray()
    for unit in units:
        if len(current) + len(unit) > part:
            parts.append(bytes(current))
            current = bytearray()
        current += unit
    parts.append(bytes(current))
    return tuple(parts)


def _checked(segmentation: Segmentation, max_parts: int) -> Segmentation:
    if segmentation.parts > max_parts:
        unit = "个字符" if segmentation.encoding == "ucs2" else "个 GSM 字符"
        raise TooLong(
            f"短信内容过长：共 {segmentation.length} {unit}，需要拆成 {segmentation.parts} 条，"
            f"超过每次最多 {max_parts} 条的限制，请缩短内容",
            segmentation.parts,
            max_parts,
        )
    return segmentation


def with_udh(parts: Sequence[bytes], reference: int) -> list[bytes]:
    """Prefix each part with the 8-bit-reference concatenation UDH `05 00 03 ref total seq`.

    Submit the result with esm_class ESM_CLASS_UDHI. Use a different `reference` (0-255) for each
    long message to the same number, or the handset may merge parts of two messages.
    """
    if not 0 <= reference <= 0xFF:
        raise ValueError(f"reference must be within 0..255, got {reference}")
    if not 1 <= len(parts) <= MAX_PARTS_IN_UDH:
        raise ValueError(f"a concatenated message has 1..{MAX_PARTS_IN_UDH} parts, got {len(parts)}")
    total = len(parts)
    return [bytes([0x05, 0x00, 0x03, reference, total, seq]) + part for seq, part in enumerate(parts, start=1)]


def encode_gsm7(text: str) -> bytes:
    """Unpacked GSM 7-bit septets of a text `is_gsm7` accepts (KeyError otherwise), as submit_sm carries them."""
    return b"".join(_GSM7_ENCODE[ch] for ch in text)


def decode_gsm7(data: bytes) -> str:
    """Text of unpacked GSM 7-bit septets (one byte each, escapes as 0x1B xx), as encode_segments makes.

    An escape before a code the extension table lacks reads as the default character, as 23.038 asks
    of handsets; a byte above 0x7F or a trailing escape is an error.
    """
    out: list[str] = []
    escaped = False
    for position, byte in enumerate(data):
        if byte > 0x7F:
            raise ValueError(f"byte {byte:#04x} at {position} is not a GSM 7-bit septet")
        if escaped:
            # ESC ESC announces a further table no handset has; 23.038 says to show a space.
            out.append(" " if byte == _ESCAPE else _GSM7_EXTENSION_DECODE.get(byte, _GSM7_DEFAULT[byte]))
            escaped = False
        elif byte == _ESCAPE:
            escaped = True
        else:
            out.append(_GSM7_DEFAULT[byte])
    if escaped:
        raise ValueError("data ends with a GSM escape septet")
    return "".join(out)
