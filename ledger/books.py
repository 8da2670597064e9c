"""The one writer of the books: a cross-process lock, beancount's own printer, atomic file
replacement (a crash mid-write leaves the previous, valid file) and a re-parse of what it wrote."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import filecmp
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import IO, Any

from beancount.core import data
from beancount.parser import parser, printer

from ledger import chart
from ledger.events import Event, entries_for

MAIN = "main.beancount"
ACCOUNTS = "accounts.beancount"
MANIFEST = ".manifest.json"
OPENING = date.fromisoformat(chart.OPENING_DATE)
_EVENT_ID = re.compile(r'^\s+event_id: "([^"]+)"', re.MULTILINE)
_OPEN = re.compile(r"^\d{4}-\d\d-\d\d open (\S+)", re.MULTILINE)
_MONTH_NAME = re.compile(r"\d{4}/\d{4}-\d\d\.beancount")


class LedgerWriteError(RuntimeError):
    """The books could not be written consistently; nothing was changed."""


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new name in `folder` durable: without it a power cut can undo it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, content: bytes | str) -> None:
    """Write `path` whole or not at all, durably (text as UTF-8): a temporary file in the same
    folder, synced, renamed into place, the folder synced. A failure (a full disk) removes the
    temporary file, so retries do not pile up half-written ones. The books' files, and the
    backoffice's outbox (the one helper of both)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_folder(path.parent)


def _digest(path: Path) -> str:
    """The SHA-256 of the file as it is on disk, or "missing"."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def _damaged(path: Path, what: str) -> LedgerWriteError:
    return LedgerWriteError(
        f"账簿清单 {path} 已损坏（{what}），无法确认账簿文件是否由记账程序写入。"
        "已停止记账：请用 ledger rebuild --replace 从记账事件重建账簿"
    )


def _month_file(day: date) -> str:
    return f"{day:%Y}/{day:%Y-%m}.beancount"


def differing_files(live: Path, rebuilt: Path) -> list[str]:
    """The files of the books at `live` that differ from `rebuilt` (the same events written
    afresh), and the manifest when it does not vouch for the live books (damaged, or a file
    changed outside the writer): a rebuild that compared the `.beancount` files alone called
    books with a damaged manifest identical, and `--replace` left them refusing every posting."""
    names = {
        p.relative_to(d).as_posix()
        for d in (live, rebuilt)
        if d.exists()
        for p in d.rglob("*.beancount")
        if not any(part.startswith(".") for part in p.relative_to(d).parts)  # the checker's work files
    }
    differing = [
        n
        for n in sorted(names)
        if not ((live / n).exists() and (rebuilt / n).exists() and filecmp.cmp(live / n, rebuilt / n, shallow=False))
    ]
    try:
        vouched = not Books(live).tampered()
    except LedgerWriteError:
        vouched = False
    return differing if vouched else [*differing, MANIFEST]


#: A disk refusing a write, in words for the operator (the books', and the backoffice's files: `backoffice.storage`).
DISK_PROBLEMS = {
    errno.ENOSPC: "磁盘空间不足",
    errno.EDQUOT: "磁盘配额已用完",
    errno.EROFS: "目录不可写（文件系统为只读）",
    errno.EACCES: "目录不可写（没有写入权限）",
    errno.EPERM: "目录不可写（没有写入权限）",
    errno.EIO: "磁盘读写出错",
}


def write_failure(error: OSError) -> str:
    """Why a file of the books could not be written, in words for the operator."""
    return DISK_PROBLEMS.get(error.errno or 0, error.strerror or str(error))


def _open_lock(path: Path, shared: bool, notes: list[str]) -> IO[Any] | None:
    """The lock file open for `flock`; for a reader on a disk that takes no writes, open for
    reading (a shared flock needs no more), or None and a note when it does not exist."""
    try:
        return open(path, "a+")
    except OSError as error:
        if not shared:
            raise
        why = write_failure(error)
    try:
        return open(path, "rb")
    except OSError:
        notes.append(f"锁文件 {path} 无法创建（{why}），本次检查未加锁")
        return None


LEGACY_LOCK = ".lock"  # the lock file inside the books folder, before .ledger.lock beside it


class Books:
    """The books under one folder: `main.beancount` includes the chart and one file per month."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.main = self.root / MAIN

    @property
    def lock_file(self) -> Path:
        """`.ledger.lock` beside the folder `ledger`, not in it: `ledger rebuild --replace`
        renames the folder under the lock, and a writer waiting on a lock file inside the old
        folder would hold a lock no later writer takes (found by a review)."""
        return self.root.with_name(f".{self.root.name}.lock")

    @contextlib.contextmanager
    def locked(self, shared: bool = False) -> Iterator[list[str]]:
        """Serialise writers across processes (flock on a lock file beside the books); `shared`
        for a reader that must see no write half done, alongside other readers. Blocks while
        this process holds it already: flock counts each open of the file on its own.

        A reader also reads a disk that takes no writes (full, read-only; found by a review: the
        check died there with a traceback): it locks a lock file it cannot open for writing
        through a read-only open, and goes on without one that does not exist (no writer could
        create it either). It gets a note, in Chinese, for each lock it went without."""
        self.root.mkdir(parents=True, exist_ok=True)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        notes: list[str] = []
        with contextlib.ExitStack() as held:
            # Also the lock file earlier versions took inside the folder, second: while an upgrade
            # replaces the processes one by one, an old one still writing takes only that one, and
            # the two wrote the books at once (found by a review). Kept for a release or two.
            for path in (self.lock_file, self.root / LEGACY_LOCK):
                lock = _open_lock(path, shared, notes)
                if lock is not None:
                    held.enter_context(lock)
                    fcntl.flock(lock, mode)
                    held.callback(fcntl.flock, lock, fcntl.LOCK_UN)
            # A temp file present while we hold the lock alone belongs to a writer that died.
            for stale in () if shared else self.root.rglob(".*.tmp"):
                stale.unlink(missing_ok=True)
            yield notes

    def _read(self, name: str) -> str:
        path = self.root / name
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def _ensure_main(self) -> None:
        if self.main.exists():
            return
        # Raw plugin mode with only the balance plugin: assertions are checked, and the pad
        # and document plugins the books never need do not cost a second of every load.
        header = (
            'option "title" "短信业务账簿"\n'
            f'option "operating_currency" "{chart.CURRENCY}"\n'
            'option "inferred_tolerance_default" "CNY:0.00005"\n'
            'option "plugin_processing_mode" "raw"\n'
            'plugin "beancount.ops.balance"\n\n'
            f'include "{ACCOUNTS}"\n'
        )
        opens = "".join(f"{chart.OPENING_DATE} open {a} {chart.CURRENCY}\n" for a in chart.STATIC_ACCOUNTS)
        # New books only in a folder that holds none: with main.beancount gone (deleted, left out
        # of a restore) the others were overwritten, every account opened since lost (found by a
        # review). An accounts file as this very code writes it is a first start cut short.
        accounts = self.root / ACCOUNTS
        left = [MANIFEST] if (self.root / MANIFEST).exists() else []
        if accounts.exists() and accounts.read_text(encoding="utf-8", errors="replace") != opens:
            left.append(ACCOUNTS)
        left += sorted(self._month_files_on_disk())
        if left:
            shown = "、".join(left[:4]) + (" 等" if len(left) > 4 else "")
            raise LedgerWriteError(
                f"账簿主文件 {self.main} 不存在，但账簿目录中还有 {shown}：不能另起一套账簿覆盖它们。"
                "请找回该文件，或用 ledger rebuild --replace 从记账事件重建账簿"
            )
        write_atomically(accounts, opens)
        write_atomically(self.main, header)
        self._save_manifest(
            {name: [hashlib.sha256(text.encode("utf-8")).hexdigest()] for name, text in ((ACCOUNTS, opens), (MAIN, header))}
        )

    # The manifest holds the SHA-256 of every file as the writer left it, so a file edited by
    # hand is noticed before anything is appended to it. While a write is under way a file's
    # entry lists both the old and the new hash: a crash in between leaves either, both valid.
    def manifest(self) -> dict[str, list[str]]:
        """File name -> the SHA-256 hashes the writer accepts for it. A damaged manifest raises
        LedgerWriteError: it vouches for no file then, and `ledger sync` cannot mend it (found by
        a review: a JSONDecodeError reached the web's warning and the check as a traceback)."""
        path = self.root / MANIFEST
        if not path.exists():
            return {}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise _damaged(path, f"第 {error.lineno} 行第 {error.colno} 列起不是有效的 JSON") from None
        except UnicodeDecodeError:
            raise _damaged(path, "不是 UTF-8 文本") from None
        if not isinstance(manifest, dict) or not all(
            isinstance(hashes, list) and all(isinstance(h, str) for h in hashes) for hashes in manifest.values()
        ):
            raise _damaged(path, "内容不是文件名到哈希值的对照")
        return manifest

    def _save_manifest(self, manifest: dict[str, list[str]]) -> None:
        write_atomically(self.root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))

    def tampered(self) -> list[str]:
        """Files changed outside this writer since it last wrote them, and month files it never
        wrote: the writer lists a month in the manifest before it writes the file, so a month
        file the manifest lacks (a partial restore, a copy from other books) is no write of its
        own cut short. Trusted, its ids skipped real events and its entries joined the books
        (found by a review)."""
        manifest = self.manifest()
        problems = []
        for name, hashes in sorted(manifest.items()):
            if _digest(self.root / name) not in hashes:
                problems.append(f"账簿文件 {name} 在记账程序之外被修改或删除")
        for name in sorted(self._month_files_on_disk() - manifest.keys()):
            problems.append(f"账簿文件 {name} 不在账簿清单中，不是记账程序写的（可能来自不完整的恢复或另一套账簿）")
        return problems

    def _month_files_on_disk(self) -> set[str]:
        found = (p.relative_to(self.root).as_posix() for p in self.root.glob("*/*.beancount"))
        return {name for name in found if _MONTH_NAME.fullmatch(name)}

    def included_months(self) -> list[str]:
        return re.findall(r'^include "(\d{4}/[^"]+)"', self._read(MAIN), re.MULTILINE)

    def _months_left_out(self) -> set[str]:
        """Month files this writer wrote that `main.beancount` does not include: a write that
        died between a new month's file and main's include. The ids in them count as posted (a
        retry skips them), so they must be included, or their events are lost from the books."""
        included = set(self.included_months())
        return {name for name in self.manifest() if _MONTH_NAME.fullmatch(name) and name not in included and (self.root / name).exists()}

    def posted_event_ids(self) -> set[str]:
        """Every event id already in the books (scans the month files)."""
        ids: set[str] = set()
        for name in self.included_months():
            ids.update(_EVENT_ID.findall(self._read(name)))
        return ids

    def post(self, events: Iterable[Event]) -> list[str]:
        """Append the transactions of the events not yet in the books; returns the ids posted.

        Events already present (a replay, or a crash after writing but before the database
        noted it) are skipped. Raises PostingRuleError or LedgerWriteError and writes nothing
        if any event cannot be posted."""
        with self.locked():
            return self.post_locked(events)

    def post_locked(self, events: Iterable[Event]) -> list[str]:
        """`post` for a caller that already holds `locked()` (to read its queue under it)."""
        events = list(events)
        if not events:
            return []
        self._ensure_main()
        if problems := self.tampered():
            raise LedgerWriteError("；".join(problems) + "。已停止记账：请核对账簿文件，或用 ledger rebuild 从记账事件重建")
        rendered = [(e, entries_for(e)) for e in events]  # refuse the whole batch before writing
        months: dict[str, list[data.Directive]] = {}
        opened = set(_OPEN.findall(self._read(ACCOUNTS)))
        new_opens: list[data.Open] = []
        posted: list[str] = []
        present: dict[str, set[str]] = {}
        for event, entries in rendered:
            name = _month_file(event.occurred_on)
            if name not in present:
                present[name] = set(_EVENT_ID.findall(self._read(name)))
            if event.event_id in present[name]:
                continue
            present[name].add(event.event_id)
            for entry in entries:
                accounts = [p.account for p in entry.postings] if isinstance(entry, data.Transaction) else [entry.account]
                for account in accounts:
                    if account not in opened:
                        opened.add(account)
                        meta = data.new_metadata("<ledger>", 0)
                        # Opened at the chart's opening date: an event dated earlier than the
                        # one that first used the account (a back-dated receipt) still posts.
                        new_opens.append(data.Open(meta, OPENING, account, [chart.CURRENCY], None))
            months.setdefault(name, []).extend(entries)
            posted.append(event.event_id)
        if posted or self._months_left_out():
            self._write(months, new_opens)
        return posted

    def _write(self, months: dict[str, list[data.Directive]], opens: list[data.Open]) -> None:
        chunks = {name: "".join("\n" + printer.format_entry(t) for t in txns) for name, txns in months.items()}
        open_text = "".join(printer.format_entry(o) for o in opens)
        # Re-parse what we are about to write: the printer must produce what the parser reads.
        for text in [open_text, *chunks.values()]:
            entries, errors, _ = parser.parse_string(text)
            if errors:
                raise LedgerWriteError(f"rendered entries do not parse: {errors[0].message}")
        new_text: dict[str, str] = {}
        if open_text:
            new_text[ACCOUNTS] = self._read(ACCOUNTS) + open_text
        for name, chunk in chunks.items():
            new_text[name] = self._read(name) + chunk
        included = set(self.included_months())
        if wanted := (set(chunks) | self._months_left_out()) - included:
            header = self._read(MAIN).split('include "', 1)[0]
            all_months = sorted(included | wanted)
            new_text[MAIN] = header + f'include "{ACCOUNTS}"\n' + "".join(f'include "{m}"\n' for m in all_months)
        # Order matters for a crash: accounts first, then months, then the includes in main.
        # A crash in between leaves opened-but-unused accounts (valid) or a month file main does
        # not include yet: valid too, but its ids already count as posted, so the next write
        # (the retry, even with nothing new) includes it; see `_months_left_out`.
        manifest = self.manifest()
        digests = {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in new_text.items()}
        for name, digest in digests.items():
            # The file as it is on disk (checked by `tampered` just now, under the lock), not the
            # manifest's last hash: after a write that failed (disk full) that is the hash of a
            # file never written, and a second failure would leave the real one unlisted (found
            # by a review). A month file not written yet is accepted missing.
            manifest[name] = [_digest(self.root / name), digest]
        self._save_manifest(manifest)
        for name in sorted(new_text, key=lambda n: (n != ACCOUNTS, n == MAIN, n)):
            write_atomically(self.root / name, new_text[name])
        for name, digest in digests.items():
            manifest[name] = [digest]
        self._save_manifest(manifest)
