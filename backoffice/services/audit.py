"""The audit log: who did what, written in the same transaction as the change it describes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from backoffice.models import AuditEntry


def record(session: Session, actor: str, action: str, object_type: str, object_id: str, **detail: Any) -> None:
    session.add(AuditEntry(actor=actor, action=action, object_type=object_type, object_id=str(object_id), detail=detail))
