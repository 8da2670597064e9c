"""The forbidden keyword list as administrators see it in the browser: the list, and what they
type into the form read as words. Adding and removing stay with intake
(`messaging.add_keywords` / `remove_keywords`), which keeps the compiled matcher in step."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.errors import ValidationFailed
from backoffice.models import ForbiddenKeyword

WORD_MAX = ForbiddenKeyword.__table__.c.word.type.length  # the column's length (100)
_SEPARATORS = re.compile(r"[\r\n,，、]+")


def list_keywords(session: Session) -> list[ForbiddenKeyword]:
    """The forbidden keywords, the latest added first."""
    return list(session.scalars(sa.select(ForbiddenKeyword).order_by(ForbiddenKeyword.id.desc())))


def split_keywords(text: str) -> list[str]:
    """The words of a form's text, one a line or separated by commas (, ，) or 、, each stripped,
    each once. Refused as a whole (so nothing is added) when there is no word or one is too long."""
    words = list(dict.fromkeys(w.strip() for w in _SEPARATORS.split(text) if w.strip()))
    if not words:
        raise ValidationFailed({"words": "请至少填写一个违禁词（每行一个，或用逗号、顿号分隔）"})
    too_long = [w for w in words if len(w) > WORD_MAX]
    if too_long:
        shown = "、".join(f"{w[:10]}…（{len(w)} 个字符）" for w in too_long[:3])
        raise ValidationFailed({"words": f"每个违禁词最多 {WORD_MAX} 个字符，以下过长：{shown}"})
    return words
