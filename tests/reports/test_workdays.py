"""Working-day arithmetic over the real 2026 schedule, the weekend fallback and admin overrides."""

from __future__ import annotations

from datetime import date

import pytest

from reports.workdays import add_working_days, covered_by_library, is_working_day

# An admin table for a year the library does not know yet (an example, not the official 2027
# schedule): Spring Festival rest from Sat 6 to Sun 14 February, make-up working Sat 20 February.
SPRING_2027 = {date(2027, 2, d): False for d in range(6, 15)} | {date(2027, 2, 20): True}


def test_library_covers_2026_but_not_2027() -> None:
    assert covered_by_library(2026)
    assert not covered_by_library(2027)
    assert not covered_by_library(2003)


def test_2026_national_day_golden_week_is_skipped() -> None:
    # 1–7 Oct are holidays; Sat 10 Oct is a make-up working day; Sun 11 Oct is rest.
    assert add_working_days(date(2026, 9, 30), 5) == date(2026, 10, 13)
    assert add_working_days(date(2026, 9, 30), 1) == date(2026, 10, 8)


def test_2026_holidays_and_make_up_days() -> None:
    assert not is_working_day(date(2026, 10, 1))  # Thursday, National Day
    assert not is_working_day(date(2026, 2, 17))  # Tuesday, Spring Festival
    assert is_working_day(date(2026, 2, 28))  # Saturday, make-up day
    assert is_working_day(date(2026, 9, 20))  # Sunday, make-up day
    assert not is_working_day(date(2026, 11, 21))  # an ordinary Saturday


def test_a_make_up_saturday_counts() -> None:
    assert add_working_days(date(2026, 10, 9), 1) == date(2026, 10, 10)


def test_start_is_not_counted_and_zero_returns_start() -> None:
    assert add_working_days(date(2026, 11, 23), 1) == date(2026, 11, 24)
    assert add_working_days(date(2026, 10, 3), 0) == date(2026, 10, 3)


def test_negative_counts_back_over_the_holiday() -> None:
    assert add_working_days(date(2026, 10, 8), -1) == date(2026, 9, 30)


def test_2027_falls_back_to_weekends_and_the_fixed_date_holidays() -> None:
    assert not is_working_day(date(2027, 1, 1))  # a Friday, 元旦: a holiday by law whatever the schedule (a review)
    assert is_working_day(date(2027, 5, 3))  # a Monday: 劳动节 beyond its two statutory days is the schedule's to give
    assert not is_working_day(date(2027, 10, 1)) and not is_working_day(date(2027, 10, 2))
    assert not is_working_day(date(2027, 1, 2))  # Saturday
    assert add_working_days(date(2027, 2, 5), 1) == date(2027, 2, 8)  # Fri -> Mon (春节 needs the overrides)


def test_crossing_into_an_uncovered_year_uses_the_overrides() -> None:
    assert add_working_days(date(2026, 12, 31), 1) == date(2027, 1, 4)
    assert add_working_days(date(2026, 12, 31), 1, {date(2027, 1, 1): True}) == date(2027, 1, 1)  # an override wins


def test_2027_spring_festival_overrides_are_respected() -> None:
    assert not is_working_day(date(2027, 2, 8), SPRING_2027)  # a Monday, made a holiday
    assert is_working_day(date(2027, 2, 20), SPRING_2027)  # a Saturday, made a working day
    assert add_working_days(date(2027, 2, 5), 1, SPRING_2027) == date(2027, 2, 15)
    assert add_working_days(date(2027, 2, 15), 5, SPRING_2027) == date(2027, 2, 20)


@pytest.mark.parametrize(("day", "working"), [(date(2026, 10, 10), False), (date(2026, 11, 23), False), (date(2026, 11, 21), True)])
def test_overrides_win_over_the_library(day: date, working: bool) -> None:
    assert is_working_day(day, {day: working}) is working
