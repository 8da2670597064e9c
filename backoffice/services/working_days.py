"""The administrators' table of the official working-day calendar (holidays and make-up working
days for years chinese-calendar does not cover yet): a change of it also moves the due dates of
the unpaid invoices it falls within (`invoices.recompute_due_dates`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from sqlalchemy.orm import Session

from backoffice.errors import ValidationFailed
from backoffice.models import WorkingDayOverride
from backoffice.services import audit
from backoffice.services.invoices import DueDateMove, recompute_due_dates

NOTE_LENGTH = 100


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
) -> list[DueDateMove]:
    """Enter `day` as a holiday or a make-up working day (or `remove` the entry), audited, and
    move the due dates it changes; returns the invoices moved."""
    if len(note) > NOTE_LENGTH:
        raise ValidationFailed({"note": f"备注最多 {NOTE_LENGTH} 字"})
    row = session.get(WorkingDayOverride, day)
    if remove:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(WorkingDayOverride(day=day, is_working_day=is_working, note=note))
    else:
        row.is_working_day, row.note = is_working, note
    audit.record(session, actor, "working_day_override", "calendar", day.isoformat(), working=is_working, removed=remove, note=note)
    session.flush()
    return recompute_due_dates(session, [day], actor=actor, documents_root=documents_root, today=today)
