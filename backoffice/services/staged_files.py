"""Files that belong to a database transaction: written under a temporary name, moved into
place when the transaction commits, deleted when it rolls back. A failed issue leaves no file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

_KEY = "staged_files"


def stage_file(session: Session, path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = path.with_name(f".{path.name}.pending")
    try:
        with open(pending, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:  # a full disk: no half-written file left behind (found by a review)
        with contextlib.suppress(OSError):
            pending.unlink()
        raise
    session.info.setdefault(_KEY, []).append((pending, path))


def discard_staged(session: Session) -> None:
    for pending, _ in session.info.pop(_KEY, []):
        with contextlib.suppress(FileNotFoundError):
            pending.unlink()


@event.listens_for(Session, "after_commit")
def _promote(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint: the outer transaction decides
        return
    for pending, final in session.info.pop(_KEY, []):
        os.replace(pending, final)


@event.listens_for(Session, "after_rollback")
def _discard(session: Session) -> None:
    if session.in_nested_transaction():
        return
    discard_staged(session)
