"""The disk refusing a write (full, over quota, read-only, not writable, failing): the refusal a
person reads, naming the path, and whether anything had been committed before it failed, so
that "未做任何更改" is only said when it is true."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from backoffice.errors import DomainError
from ledger.books import DISK_PROBLEMS

_COMMITS = "commits"


class StorageUnavailable(DomainError):
    """The server's disk refused; nothing is wrong with the request itself."""

    status = 503
    code = "storage"


def storage_refusal(error: OSError, *, changed: bool) -> StorageUnavailable | None:
    """The refusal for a disk that refused, or None for another OSError (a bug: raised as it is).
    `changed`: the command or request had committed before the failure."""
    problem = DISK_PROBLEMS.get(error.errno or 0)
    if problem is None:
        return None
    where = f"（{error.filename}）" if error.filename else ""
    outcome = "此前的更改已保存，其余未完成，请管理员处理后核对" if changed else "未做任何更改，请管理员处理后重试"
    return StorageUnavailable(f"{problem}{where}，{outcome}")


def commits(session: Session) -> int:
    """How many transactions the session has committed: a caller compares it before and after."""
    return int(session.info.get(_COMMITS, 0))


@event.listens_for(Session, "after_commit")
def _count_commit(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info[_COMMITS] = commits(session) + 1
