"""Pure sending rules from the contracts: number ranges, unsubscribe replies, the sending window, signatures.

Sources: 000 §6(4), 002 §7(4), 004 §2.1(2)C (no 号码段群发); 002 §3 (07:00–22:30, later ones at 08:05
the next day); 002 §5(6) (the SMS signature).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

SHANGHAI: Final = ZoneInfo("Asia/Shanghai")
#: Replies that unsubscribe: TD and T (marketing texts end in 回TD退订 or, most often, 回T退订), R, 退订, 拒收.
UNSUBSCRIBE_WORDS: Final = ("TD", "T", "退订", "R", "拒收")


class MissingSignature(ValueError):
    """The text lacks the account's 【signature】; `reason` is Chinese text for the customer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def consecutive_runs(numbers: Sequence[str]) -> int:
    """Length of the longest run of consecutive numbers (13800000001, …02, …03) among the distinct ones.

    A long run is the mark of a send to a number range rather than to known members. Numbers must be
    normalised digit strings; an empty list gives 0.
    """
    values = set()
    for number in numbers:
        if not (number.isascii() and number.isdigit()):
            raise ValueError(f"not a normalised number: {number!r}")
        values.add(int(number))
    longest = 0
    for value in values:
        if value - 1 in values:
            continue  # not the start of a run
        end = value
        while end + 1 in values:
            end += 1
        longest = max(longest, end - value + 1)
    return longest


def _is_padding(ch: str) -> bool:
    # Whitespace, punctuation, symbols and control characters around a reply ("TD。", "【退订】", " r\n").
    return unicodedata.category(ch)[0] in "ZPSC"


def is_unsubscribe(text: str, words: Collection[str] = UNSUBSCRIBE_WORDS) -> bool:
    """True when an MO reply is exactly one of `words`, ignoring case, full width and padding around it.

    "退订", " td！" and "t" unsubscribe; "退订了吗", "TD 123" and "OK T" do not, so a chatty reply is not
    taken as one (nor is any text that merely contains a T).
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    start, end = 0, len(folded)
    while start < end and _is_padding(folded[start]):
        start += 1
    while end > start and _is_padding(folded[end - 1]):
        end -= 1
    reply = folded[start:end]
    return bool(reply) and reply in {unicodedata.normalize("NFKC", w).casefold().strip() for w in words}


def in_sending_window(at: datetime, window: tuple[time, time] | None) -> bool:
    """True when `at` (aware) falls in the window, both ends included, on the Beijing clock.

    A window whose start is after its end runs over midnight (22:00–06:00). None means always open.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("an aware datetime is required")
    if window is None:
        return True
    start, end = window
    local = at.astimezone(SHANGHAI).time()
    if start <= end:
        return start <= local <= end
    return local >= start or local <= end


def next_send_time(accepted_at_utc: datetime, window: tuple[time, time] | None, resume_at: time) -> datetime:
    """When a message accepted at `accepted_at_utc` may go out, in UTC.

    Inside the window: at once. Outside: at the next `resume_at` on the Beijing clock, which for
    002 (07:00–22:30, resume 08:05) means 23:00 -> 08:05 the next day and 06:00 -> 08:05 the same day;
    the contract only speaks of late messages, and holding early ones to the same 08:05 is the reading
    that treats every out-of-window message alike.
    """
    if in_sending_window(accepted_at_utc, window):
        return accepted_at_utc.astimezone(UTC)
    local = accepted_at_utc.astimezone(SHANGHAI)
    resume = datetime.combine(local.date(), resume_at, tzinfo=SHANGHAI)
    if resume <= local:
        resume = datetime.combine(local.date() + timedelta(days=1), resume_at, tzinfo=SHANGHAI)
    return resume.astimezone(UTC)


_LEADING: Final = re.compile(r"^\s*【([^【】]+)】")
_TRAILING: Final = re.compile(r"【([^【】]+)】\s*$")


def _signature_matches(text: str) -> tuple[re.Match[str] | None, re.Match[str] | None]:
    """The leading and the trailing 【…】 of `text`; one that is nothing but a signature has only the leading."""
    leading = _LEADING.search(text)
    trailing = _TRAILING.search(text)
    if trailing and leading and trailing.start() < leading.end():
        trailing = None  # the text is nothing but one signature
    return leading, trailing


def signatures_in(text: str) -> list[str]:
    """The leading and trailing 【…】 signatures of `text` (without brackets), leading first."""
    return [s for s in (m.group(1).strip() for m in _signature_matches(text) if m) if s]


def without_signatures(text: str) -> str:
    """`text` without its leading and trailing 【…】 signatures: what it says."""
    leading, trailing = _signature_matches(text)
    return text[leading.end() if leading else 0 : trailing.start() if trailing else len(text)]


def signature_of(text: str) -> str | None:
    """The signature a text carries, leading 【…】 first, then trailing; None when it has none."""
    found = signatures_in(text)
    return found[0] if found else None


def apply_signature(text: str, signature: str, add: bool) -> str:
    """`text` carrying the account's signature: as is when it already does, prefixed when `add`.

    Refuses with MissingSignature a text that lacks it while `add` is False, and always one that
    carries someone else's signature, since carriers reject a message under a signature not
    registered for the account. `signature` is stored without 【】, but brackets are tolerated.
    """
    own = signature.strip().removeprefix("【").removesuffix("】").strip()
    if not own:
        raise ValueError("the account has no signature to apply")
    others = [s for s in signatures_in(text) if s != own]
    if others:
        raise MissingSignature(f"短信签名不符：内容带有【{others[0]}】，本账户的签名是【{own}】")
    if own in signatures_in(text):
        return text
    if add:
        return f"【{own}】{text}"
    raise MissingSignature(f"短信内容缺少签名：请在开头或结尾加上【{own}】")
