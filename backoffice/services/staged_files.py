"""Files that belong to a database transaction: written under a temporary name, moved into
place when the transaction commits, deleted when it rolls back. A failed issue leaves no file."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
_KEY = "staged_files"
_UNPROMOTED = "staged_files_unpromoted"


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new name in `folder` durable: without it a power cut can undo it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def unpromoted(session: Session) -> list[Path]:
    """The files of the session's last commits that could not be moved into place (and are
    left for `recover_staged_files`); asking forgets them."""
    return session.info.pop(_UNPROMOTED, [])


@event.listens_for(Session, "after_commit")
def _promote(session: Session) -> None:
    """Move the committed transaction's files into place. Never raises: the transaction is
    committed whatever happens here, and an exception out of this hook left the session unusable,
    so the command's catch-up (posting its book events) never ran and it ended in a traceback
    (found by a review). A file left `.pending` is put in place by `recover_staged_files`."""
    if session.in_nested_transaction():  # a savepoint: the outer transaction decides
        return
    folders: set[Path] = set()
    for pending, final in session.info.pop(_KEY, []):
        try:
            os.replace(pending, final)
            folders.add(final.parent)
        except Exception:
            if final.exists() and not pending.exists():  # put in place by a recovery meanwhile
                continue
            log.exception("committed file not moved into place (left as %s for the recovery)", pending)
            session.info.setdefault(_UNPROMOTED, []).append(final)
    for folder in sorted(folders):
        try:
            fsync_folder(folder)
        except Exception:
            log.exception("folder %s not synced after moving committed files into it", folder)


@event.listens_for(Session, "after_rollback")
def _discard(session: Session) -> None:
    if session.in_nested_transaction():
        return
    discard_staged(session)
