"""Money helpers: every amount is a `Decimal` in CNY; this module is the one place that parses,
rounds and spells them (in figures and in Chinese capitals)."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import cn2an

FEN = Decimal("0.01")
PRICE_PLACES = 4
MONEY_PLACES = 2


_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
#: Commas only as thousands separators: "1,750.00". Found by a review: every comma was dropped,
#: so "1750,00" (a decimal comma) was read as 175000.
#: The first group has no leading zero: "0,035" is a decimal comma (0.035), not 35 (a review).
_GROUPED_DECIMAL = re.compile(r"-?[1-9][0-9]{0,2}(?:,[0-9]{3})+(?:\.[0-9]+)?")
#: A Chinese input method's full-width digits and signs, read as the ASCII ones (other scripts'
#: digits stay refused: Decimal would read them, a person would not mean them).
FULL_WIDTH_NUMBER = str.maketrans({**{0xFF10 + i: str(i) for i in range(10)}, 0xFF0E: ".", 0xFF0C: ",", 0xFF0D: "-", 0xFF0B: "+"})


class MoneyFormatError(ValueError):
    """A value that is not a decimal amount in the expected form."""


def parse_decimal(value: object, *, places: int) -> Decimal:
    """Parse a decimal string or number exactly; refuse floats' binary noise, NaN and too many places."""
    if isinstance(value, bool) or value is None:
        raise MoneyFormatError("不是数字")
    if isinstance(value, float):
        value = repr(value)
    text = format(value, "f") if isinstance(value, Decimal) and value.is_finite() else str(value).strip().translate(FULL_WIDTH_NUMBER)
    if "," in text:
        if not _GROUPED_DECIMAL.fullmatch(text):
            raise MoneyFormatError("千位分隔符（逗号）位置不对；小数请用小数点，如 0.035")
        text = text.replace(",", "")
    # Plain ASCII digits only (full-width ones read as such above): no exponent, no underscores, no other-script digits.
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise MoneyFormatError("不是数字")
    try:
        d = Decimal(text)
    except (InvalidOperation, ValueError):
        raise MoneyFormatError("不是数字") from None
    if len(d.as_tuple().digits) > 24:  # past 1e15 元, or decimals no amount has: quantize would fail past 28 digits
        raise MoneyFormatError("数值过大或位数过多")
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > places and d != d.quantize(Decimal(1).scaleb(-places)):
        raise MoneyFormatError(f"最多 {places} 位小数")
    return d


def quantize_money(amount: Decimal) -> Decimal:
    """Round to the fen, for documents and banks only."""
    return amount.quantize(FEN, rounding=ROUND_HALF_UP)


def format_money(amount: Decimal) -> str:
    """`1750` -> `"1750.00"`."""
    return f"{quantize_money(amount):.2f}"


def format_price(price: Decimal) -> str:
    """A price per message with its significant decimals kept, at least two: 0.035 -> "0.035"."""
    text = format(price.normalize(), "f")
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def capitals(amount: Decimal) -> str:
    """The amount in Chinese capital numerals, as written on contracts and invoices: 壹仟柒佰伍拾元整.

    会计基础工作规范 §52(2): an amount that ends in 元 or 角 takes 整 after it (壹拾元壹角整); cn2an
    writes it after 元 only (found by a review). One that ends in 分 takes none.

    A zero where a 万 or 元 digit is may be written 零 or left out (正确填写票据和结算凭证的基本规定:
    壹拾万柒仟元 or 壹拾万零柒仟元), as cn2an does; but with the whole 万 group zero after 亿,
    壹亿壹仟元 reads like 壹亿壹仟万, so 100,001,000 is written 壹亿零壹仟元 (found by a review)."""
    text = str(cn2an.an2cn(format_money(amount), "rmb"))
    yuan = int(quantize_money(amount))
    if yuan >= 10**8 and yuan // 10**4 % 10**4 == 0 and yuan % 10**4 >= 1000:
        text = text.replace("亿", "亿零", 1)
    return text + "整" if text.endswith("角") else text
