"""The administrators' table of the official working-day calendar (holidays and make-up working
days for years chinese-calendar does not cover yet): a change of it also moves the due dates of
the unpaid invoices it falls within (`invoices.recompute_due_dates`)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from backoffice.errors import ValidationFailed
from backoffice.models import WorkingDayOverride
from backoffice.services import audit
from backoffice.services.invoices import DueDateMove, recompute_due_dates
from backoffice.services.receipts import unprintable

NOTE_LENGTH = 100


#: The longest run of days one command enters (a holiday period is at most nine days).
LONGEST_RUN = 31


def set_working_day(
    session: Session,
    day: date,
    *,
    is_working: bool,
    note: str,
    remove: bool,
    actor: str,
    documents_root: Path,
    today: date | None = None,
    last_day: date | None = None,
) -> list[DueDateMove]:
    """Enter `day` (through `last_day`, when given: a whole holiday period as one change) as a
    holiday or a make-up working day (or `remove` the entries), audited, and move the due dates
    it changes; returns the invoices moved. One change for the period: each invoice it moves is
    rendered and sent to the customer once, not once a day of the holidays."""
    if len(note) > NOTE_LENGTH:
        raise ValidationFailed({"note": f"备注最多 {NOTE_LENGTH} 字"})
    if (odd := unprintable(note)) is not None:  # found by a fuzzing round: echoed, and kept in the audit log
        raise ValidationFailed({"note": f"备注含有控制字符或不可见字符（U+{ord(odd):04X}），请删除后重新提交"})
    last = last_day or day
    if last < day:
        raise ValidationFailed({"last_day": f"结束日期 {last.isoformat()} 早于开始日期 {day.isoformat()}"})
    if (last - day).days >= LONGEST_RUN:
        raise ValidationFailed(
            {"last_day": f"一次最多录入 {LONGEST_RUN} 天（{day.isoformat()} 至 {last.isoformat()} 共 {(last - day).days + 1} 天）"}
        )
    days = [day + timedelta(days=n) for n in range((last - day).days + 1)]
    for one in days:
        row = session.get(WorkingDayOverride, one)
        if remove:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(WorkingDayOverride(day=one, is_working_day=is_working, note=note))
        else:
            row.is_working_day, row.note = is_working, note
        audit.record(session, actor, "working_day_override", "calendar", one.isoformat(), working=is_working, removed=remove, note=note)
    session.flush()
    return recompute_due_dates(session, days, actor=actor, documents_root=documents_root, today=today)
