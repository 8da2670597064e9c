"""Files that belong to a database transaction: written under a temporary name, moved into
place when the transaction commits, deleted when it rolls back. A failed issue leaves no file;
a committed one its process could not move into place is recovered later."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from ledger.books import fsync_folder

log = logging.getLogger(__name__)
_KEY = "staged_files"
_UNPROMOTED = "staged_files_unpromoted"
#: A `.pending` file no committed row names, older than this, belongs to no transaction in
#: progress (an issue holds its transaction for seconds): a process died before its rollback.
STALE_PENDING_SECONDS = 3600


def pending_name(path: Path) -> Path:
    """Where a file is staged until its transaction commits."""
    return path.with_name(f".{path.name}.pending")


def stage_file(session: Session, path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = pending_name(path)
    try:
        with open(pending, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
    except BaseException as exc:  # a full disk: no half-written file left behind (found by a review)
        with contextlib.suppress(OSError):
            pending.unlink()
        if isinstance(exc, OSError) and exc.filename is None:  # (an fsync's names no file): the refusal names it
            exc.filename = str(pending)
        raise
    session.info.setdefault(_KEY, []).append((pending, path))


def discard_staged(session: Session) -> None:
    for pending, _ in session.info.pop(_KEY, []):
        with contextlib.suppress(FileNotFoundError):
            pending.unlink()


def unpromoted(session: Session) -> list[tuple[Path, bool]]:
    """The files of the session's last commits that could not be moved into place, each with
    whether its `.pending` copy is there for `recover_staged_files` (else it is lost: removed
    meanwhile as stale, found by a review); asking forgets them."""
    return session.info.pop(_UNPROMOTED, [])


def _in_place(pending: Path, final: Path) -> bool:
    try:
        return final.is_file() and not pending.exists()
    except OSError:
        return False


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
            if _in_place(pending, final):  # by a recovery in another process, meanwhile
                continue
            kept = pending.exists()
            if kept:
                log.exception("committed file not moved into place (left as %s for the recovery)", pending)
            else:
                log.exception("committed file %s lost: neither it nor %s is there", final, pending)
            session.info.setdefault(_UNPROMOTED, []).append((final, kept))
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


# --- recovery -----------------------------------------------------------------------------------


@dataclass
class Recovery:
    """What `recover_staged_files` did, by path relative to the documents folder."""

    promoted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _recorded_sha256(session: Session, relative: str) -> str | None:
    """The SHA-256 the database recorded for the document at `relative`, None if no row names it."""
    from backoffice.models import Contract, Invoice, Receipt

    columns = [
        (Contract.pdf_file, Contract.pdf_sha256),
        (Contract.docx_file, Contract.docx_sha256),
        (Invoice.pdf_file, Invoice.pdf_sha256),
        (Receipt.voucher_file, Receipt.voucher_sha256),
    ]
    for path_column, hash_column in columns:
        recorded = session.scalar(sa.select(hash_column).where(path_column == relative).limit(1))
        if recorded is not None:
            return recorded
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recover(session: Session, documents_root: Path, pending: Path, recovery: Recovery, stale_after: float) -> None:
    final = pending.with_name(pending.name[1 : -len(".pending")])
    relative = final.relative_to(documents_root).as_posix()
    recorded = _recorded_sha256(session, relative)
    if recorded is None:  # a transaction in progress, or one whose process died before its rollback
        if time.time() - pending.stat().st_mtime > stale_after:  # the files' own clock, not the business clock
            pending.unlink(missing_ok=True)
            recovery.removed.append(relative)
            log.warning("removed %s: staged by a transaction that never committed", pending)
        return
    if final.is_file() and _sha256(final) == recorded:  # in place already: this copy is left over
        pending.unlink(missing_ok=True)
        recovery.removed.append(relative)
    elif _sha256(pending) == recorded:
        os.replace(pending, final)
        fsync_folder(final.parent)
        recovery.promoted.append(relative)
        log.warning("committed document %s put in place from its .pending file", relative)
    else:
        recovery.problems.append(f"{relative}：.pending 文件与数据库记录的 SHA-256 不符，未移动")
        log.error("%s does not match the SHA-256 recorded for %s: left as it is for an administrator", pending, relative)


def recover_staged_files(session: Session, documents_root: Path, *, stale_after: float = STALE_PENDING_SECONDS) -> Recovery:
    """Put in place every committed document left `.pending` (its process died between the
    commit and the rename, or the rename failed) whose content is the one the database recorded;
    remove old `.pending` files no committed row names. Only reads the database."""
    recovery = Recovery()
    for pending in sorted(documents_root.rglob(".*.pending")) if documents_root.is_dir() else []:
        try:
            _recover(session, documents_root, pending, recovery, stale_after)
        except FileNotFoundError:  # gone meanwhile: moved into place, or discarded by its own process
            continue
        except OSError as exc:
            recovery.problems.append(f"{pending.relative_to(documents_root).as_posix()}：{exc}")
            log.error("could not recover %s: %s", pending, exc)
    return recovery


def recover_file(session: Session, documents_root: Path, relative: str) -> bool:
    """The one committed document at `relative`, put in place from its `.pending` file if it is
    missing and recoverable (a notification's attachment, a download); True if it is in place."""
    final = documents_root / relative
    if final.is_file():
        return True
    pending = pending_name(final)
    if not pending.is_file():
        return False
    recovery = Recovery()
    try:
        _recover(session, documents_root, pending, recovery, STALE_PENDING_SECONDS)
    except FileNotFoundError:  # moved into place by another process meanwhile
        pass
    except OSError as exc:
        log.error("could not recover %s: %s", pending, exc)
    return final.is_file()
