"""Mainland China mobile numbers: normalise what customers type, and tell the carrier of a number.

The carrier comes from `data/mobile_prefixes.csv` (MIIT block allocations, longest prefix wins), so a
newly allocated block is one line of data, not a code change.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

CARRIER_NAMES: Final[Mapping[str, str]] = {
    "cmcc": "中国移动",
    "cucc": "中国联通",
    "ctcc": "中国电信",
    "cbn": "中国广电",
}

DEFAULT_PREFIX_FILE: Final = Path(__file__).with_name("data") / "mobile_prefixes.csv"

_NATIONAL_LENGTH: Final = 11
_SEPARATORS: Final = frozenset(" -")
# What a Chinese input method types in full width (digits, ＋, －, the ideographic space), read as
# ASCII. Only these: NFKC would also read circled and superscript digits (①, ¹) as digits.
# Invisible format marks a copied number carries (found by a review): Windows' LRE/PDF around a
# contact's number, zero-width spaces from web pages, a BOM, a soft hyphen. They are dropped.
_INVISIBLE: Final = (0x00AD, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065), *range(0x2066, 0x206A), 0xFEFF)
_FULL_WIDTH: Final[dict[int, str | int | None]] = {
    0x3000: " ",
    **{code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)},
    **dict.fromkeys(_INVISIBLE),
}
_SHOWN_INPUT: Final = 30  # characters of the customer's input echoed back in a reason


class InvalidNumber(ValueError):
    """A number that is not a mainland mobile number; `reason` is Chinese text for the customer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PrefixTable:
    """Number block -> carrier code, looked up by the longest prefix of a national number."""

    def __init__(self, prefixes: Mapping[str, str]) -> None:
        for prefix, carrier in prefixes.items():
            if not (prefix.isascii() and prefix.isdigit() and prefix.startswith("1")):
                raise ValueError(f"号段必须是以 1 开头的数字：{prefix!r}")
            if carrier not in CARRIER_NAMES:
                raise ValueError(f"号段 {prefix} 的运营商代码未知：{carrier!r}（应为 {'/'.join(CARRIER_NAMES)}）")
        self._prefixes = dict(prefixes)
        self._lengths = sorted({len(p) for p in self._prefixes}, reverse=True)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str]]) -> PrefixTable:
        """Build a table from (prefix, carrier) pairs, refusing a prefix listed twice."""
        prefixes: dict[str, str] = {}
        for prefix, carrier in rows:
            if prefix in prefixes:
                raise ValueError(f"号段重复：{prefix}")
            prefixes[prefix] = carrier
        return cls(prefixes)

    def carrier_of(self, number: str) -> str | None:
        """The carrier of the longest listed prefix of `number`, or None for an unallocated block."""
        for length in self._lengths:
            carrier = self._prefixes.get(number[:length])
            if carrier is not None:
                return carrier
        return None

    def __len__(self) -> int:
        return len(self._prefixes)

    def items(self) -> list[tuple[str, str]]:
        """(prefix, carrier) pairs sorted by prefix, for listings and checks."""
        return sorted(self._prefixes.items())


def load_prefix_table(path: Path | str | None = None) -> PrefixTable:
    """Read a `prefix,carrier` CSV (lines starting with # are comments); the bundled file by default."""
    source = Path(path) if path is not None else DEFAULT_PREFIX_FILE
    with source.open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["prefix", "carrier"]:
        raise ValueError(f"{source}: 第一行应为 prefix,carrier")
    rows = []
    for row in reader:
        if len(row) != 2:
            raise ValueError(f"{source}: 每行应为 号段,运营商：{','.join(row)}")
        rows.append((row[0].strip(), row[1].strip()))
    return PrefixTable.from_rows(rows)


@functools.cache
def default_prefix_table() -> PrefixTable:
    """The bundled table, read once per process."""
    return load_prefix_table()


def _looks_like_excel_exponent(text: str) -> bool:
    """1.38001E+10 / 8.6138E+12: how Excel shows a long number in a cell formatted as a number."""
    mantissa, e, exponent = text.upper().partition("E")
    whole, _, fraction = mantissa.partition(".")
    return bool(e) and whole.isdigit() and (not fraction or fraction.isdigit()) and exponent.lstrip("+").isdigit()


def normalise_mobile(raw: str, table: PrefixTable | None = None) -> str:
    """The 11-digit national number for `raw`, or InvalidNumber saying in Chinese what is wrong.

    Full-width digits, ＋, － and ideographic spaces typed with a Chinese input method are read as
    their ASCII forms (no other look-alike digit is); invisible marks of a copied number are dropped. Then spaces and hyphens are dropped and a +86 / 0086 / 86
    country prefix removed. Landlines, foreign numbers and blocks no carrier holds are refused.
    """
    shown = raw.strip()[:_SHOWN_INPUT]
    text = raw.translate(_FULL_WIDTH).strip()
    compact = "".join(ch for ch in text if ch not in _SEPARATORS and not ch.isspace())
    if compact.startswith("+"):
        if not compact.startswith("+86"):
            raise InvalidNumber(f"不是中国大陆手机号码（国际号码）：{shown}")
        compact = compact[3:]
    elif compact.startswith("00"):
        if not compact.startswith("0086"):
            raise InvalidNumber(f"不是中国大陆手机号码（国际号码）：{shown}")
        compact = compact[4:]
    elif compact.startswith("86") and len(compact) == _NATIONAL_LENGTH + 2:
        compact = compact[2:]
    if not compact:
        raise InvalidNumber(f"号码为空：{shown}")
    if not (compact.isascii() and compact.isdigit()):
        if _looks_like_excel_exponent(compact):  # 1.38001E+10 copied out of a sheet (found by an exploratory test)
            raise InvalidNumber(f"号码被 Excel 转成了科学计数法（{shown}），已无法还原：请把号码列设为“文本”格式后重新复制")
        raise InvalidNumber(f"号码只能包含数字、空格和连字符：{shown}")
    if compact.startswith("0"):
        raise InvalidNumber(f"不是中国大陆手机号码（固定电话或带区号的号码）：{shown}")
    if compact[0] != "1" or compact[1:2] not in ("3", "4", "5", "6", "7", "8", "9"):
        raise InvalidNumber(f"不是中国大陆手机号码（手机号码以 13–19 开头）：{shown}")
    if len(compact) != _NATIONAL_LENGTH:
        raise InvalidNumber(f"号码位数不对：手机号码应为 11 位，这里是 {len(compact)} 位：{shown}")
    if (table if table is not None else default_prefix_table()).carrier_of(compact) is None:
        raise InvalidNumber(f"不是中国大陆手机号码（号段 {compact[:3]} 未分配给运营商）：{shown}")
    return compact


def mobile_or_none(raw: str, table: PrefixTable | None = None) -> str | None:
    """`normalise_mobile`, or None where it refuses (the caller needs no reason)."""
    try:
        return normalise_mobile(raw, table)
    except InvalidNumber:
        return None


def national_address(address: str) -> str:
    """An address an SMSC reports in international form (+86…, 0086…, 86… before a 1: a mobile
    number or a 106 service code) without its country prefix; any other address as it is."""
    text = address.strip()
    for prefix in ("+86", "0086", "86"):
        if text.startswith(prefix) and text[len(prefix) : len(prefix) + 1] == "1":
            return text[len(prefix) :]
    return text


def carrier_of(number: str, table: PrefixTable | None = None) -> str:
    """The carrier code (cmcc/cucc/ctcc/cbn) of a mobile number, normalising it first."""
    table = table if table is not None else default_prefix_table()
    carrier = table.carrier_of(normalise_mobile(number, table))
    assert carrier is not None  # normalise_mobile refuses unallocated blocks
    return carrier
