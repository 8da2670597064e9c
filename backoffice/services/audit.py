"""The audit log: who did what, written in the same transaction as the change it describes."""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy.orm import Session

from backoffice.errors import ValidationFailed
from backoffice.models import AuditEntry


def record(session: Session, actor: str, action: str, object_type: str, object_id: str, **detail: Any) -> None:
    session.add(AuditEntry(actor=actor, action=action, object_type=object_type, object_id=str(object_id), detail=detail))


#: The longest reason the columns that keep one take (a receipt's rejection or reversal).
REASON_LENGTH = 500


#: Direction overrides and isolates: they can make a text read otherwise than it is written
#: (refused in SMS content and reasons alike).
DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Characters that draw nothing but are not whitespace or format characters (fillers, blank patterns).
_BLANKS = frozenset("\u115f\u1160\u2800\u3164\uffa0")


def _visible(c: str) -> bool:
    """Whether `c` puts something on the page: not whitespace, a control, a format (zero-width)
    or a combining mark on its own, nor a blank filler."""
    return not (c.isspace() or c in _BLANKS or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"))


def reason_text(reason: str | None, *, limit: int = REASON_LENGTH) -> str:
    """A reason a person gives for an action the audit log keeps (a rejection, a reversal, a
    suspension): required, at most `limit` characters (the shortest column that will keep it),
    no control characters."""
    text = (reason or "").strip()
    # Found by an exploratory test: a reason of only U+200B was taken, and the customer read
    # "原因：" with nothing after it. Nothing visible is no reason.
    if not any(_visible(c) for c in text):
        raise ValidationFailed({"reason": "请填写原因"})
    if len(text) > limit:
        raise ValidationFailed({"reason": f"原因过长：最多 {limit} 字，现为 {len(text)} 字"})
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise ValidationFailed({"reason": "原因含有控制字符"})
    # Found by fuzzing: a rejection reason the customer reads could be written backwards (U+202E).
    if bad := [c for c in dict.fromkeys(text) if c in DIRECTION_CONTROLS]:
        raise ValidationFailed({"reason": f"原因含有改变文字方向的字符（{'、'.join(f'U+{ord(c):04X}' for c in bad)}），请删除后重新填写"})
    return text
