"""Chinese working days: the official holiday schedule (chinese-calendar) where the library
knows the year, an admin-maintained override table on top, and plain weekends beyond.

The State Council publishes each year's schedule (holidays and make-up working days, 调休上班)
late in the previous year, so chinese-calendar always lags: 1.11 covers 2004–2026 and raises
`NotImplementedError` for 2027. Payment terms must not stop working on 1 January, hence the
fallback; the override table lets an admin enter a new year's schedule before the library has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from functools import lru_cache

import chinese_calendar


@lru_cache(maxsize=64)
def covered_by_library(year: int) -> bool:
    """Whether chinese-calendar knows the official schedule of `year`."""
    try:
        chinese_calendar.is_workday(date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


#: The statutory holidays on fixed dates (全国年节及纪念日放假办法, as revised in 2024): 元旦,
#: 劳动节 and 国庆节. For a year chinese-calendar does not cover yet these at least are never
#: working days (found by a review: an invoice issued on 25 December fell due on 1 January); the
#: lunar ones and the make-up days come from the admin's override table.
FIXED_HOLIDAYS = frozenset({(1, 1), (5, 1), (5, 2), (10, 1), (10, 2), (10, 3)})


def is_working_day(day: date, overrides: Mapping[date, bool] | None = None) -> bool:
    """Whether `day` is a working day in mainland China.

    `overrides` (date → True for a make-up working day, False for a holiday) wins; then the
    official schedule when chinese-calendar covers the year; else Monday to Friday, less the
    statutory holidays on fixed dates.
    """
    if overrides is not None and day in overrides:
        return bool(overrides[day])
    if covered_by_library(day.year):
        return bool(chinese_calendar.is_workday(day))
    return day.weekday() < 5 and (day.month, day.day) not in FIXED_HOLIDAYS


def add_working_days(start: date, n: int, overrides: Mapping[date, bool] | None = None) -> date:
    """The date `n` working days after `start` (`start` itself not counted; a negative `n`
    counts back). `n == 0` returns `start` unchanged, working day or not."""
    step = timedelta(days=1 if n >= 0 else -1)
    remaining = abs(n)
    day = start
    while remaining:
        day += step
        if is_working_day(day, overrides):
            remaining -= 1
    return day
