"""The audit log: who did what, written in the same transaction as the change it describes."""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy.orm import Session

from backoffice.errors import ValidationFailed
from backoffice.models import AuditEntry


def record(session: Session, actor: str, action: str, object_type: str, object_id: str, **detail: Any) -> None:
    session.add(AuditEntry(actor=actor, action=action, object_type=object_type, object_id=str(object_id), detail=detail))


def reason_text(reason: str | None) -> str:
    """A reason a person gives for an action the audit log keeps (a rejection, a reversal, a
    suspension): required, at most 500 characters, no control characters."""
    text = (reason or "").strip()
    if not text:
        raise ValidationFailed({"reason": "请填写原因"})
    if len(text) > 500 or any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise ValidationFailed({"reason": "原因过长（最多 500 字）或含有控制字符"})
    return text
