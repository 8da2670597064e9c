"""Time: stored in UTC, shown in Asia/Shanghai; one injectable clock so tests can travel in time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (from the injectable clock)."""
    return _now()


def set_clock(now: Callable[[], datetime] | None) -> None:
    """Replace the clock (tests); `None` restores the real one."""
    global _now
    _now = now or (lambda: datetime.now(UTC))


def local_now() -> datetime:
    return utcnow().astimezone(SHANGHAI)


def local_today() -> date:
    """Today's date in Beijing time: the business date of every event."""
    return local_now().date()


def to_local(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(SHANGHAI)


def chinese_date(day: date) -> str:
    """A date as Chinese documents write it: 2028年2月29日 (the contracts, the notices)."""
    return f"{day.year}年{day.month}月{day.day}日"
