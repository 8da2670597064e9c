"""Forbidden-keyword check of message content (003 §3.3, 004 §2.2(3)), one Aho-Corasick pass per text.

Keywords and text are compared after NFKC normalisation and casefolding, so full-width letters and
upper/lower case do not evade a keyword, and characters a handset shows as nothing (zero-width
spaces and joiners, soft hyphens, variation selectors) are left out of both, so 代\u200b开发票 is
代开发票. It is a plain substring match: a sender who puts spaces or
punctuation between the characters of a keyword (代 开 发 票) is not caught. That is deliberate, to
keep the check simple and its hits unambiguous; list such spellings as keywords when they appear.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

import ahocorasick

# Characters a handset shows as nothing: format characters (zero-width space and joiners, soft
# hyphen, word joiner, BOM; not printable, so a printable text skips the scan) and variation selectors.
_VARIATION_SELECTORS = dict.fromkeys([*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])


def _fold(text: str) -> str:
    if not text.isprintable():
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", text.translate(_VARIATION_SELECTORS)).casefold()


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
