"""How the message path is doing, for the people who run it: the queue (what waits, what a worker
holds, what waits for its receipt), each dispatcher worker as it last said it was
(`dispatch_workers`, written by `Dispatcher._heartbeat`), and the problems that need someone,
named in Chinese: no worker running, a worker silent, a link down or refused for long, an SMSC
taking every session for unbound, refusing every part, dropping the link before accepting any, or
throttling without end, messages waiting too long.

The operations page (/admin/dispatch) and `flask --app wsgi dispatch status` (exit status 1 when
there is a problem, for a monitoring system to call) read the same `dispatch_status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import utcnow
from backoffice.errors import Conflict, NotFound
from backoffice.models import DispatchWorker, Message
from backoffice.models.messaging import CLAIMABLE
from backoffice.services.audit import record

# The thresholds, each configurable (`DispatchThresholds.from_config`).
SILENT_SECONDS = 60  # a running worker writes its row every 10 s (dispatcher.HEARTBEAT)
LINK_DOWN_SECONDS = 120  # the link reconnects with a backoff of up to a minute
QUEUE_MINUTES = 10  # the oldest message due and not yet submitted
REBINDS = 3  # sessions in a row the SMSC took for unbound (ESME_RINVBNDSTS)
THROTTLED_PAUSES = 20  # throttled pauses in a row (the pause doubles up to its maximum)
REFUSED = 20  # messages the SMSC refused in a row (each refunded), of at least REFUSED_TEXTS different texts
REFUSED_TEXTS = 3  # (an SMSC's content filter refusing one request's text is routine, not a broken channel)
REFUSED_ALL = 50  # messages refused in a row, whatever their texts: a channel failing a whole campaign, or a filter refusing it
DROPS = 3  # links dropped in a row without a part accepted in between
TEMPORARY = 50  # parts answered with a temporary status (ESME_RSYSERR, …) in a row: sent again later, refunded past validity


@dataclass(frozen=True)
class DispatchThresholds:
    silent: timedelta = timedelta(seconds=SILENT_SECONDS)
    link_down: timedelta = timedelta(seconds=LINK_DOWN_SECONDS)
    queue_age: timedelta = timedelta(minutes=QUEUE_MINUTES)
    rebinds: int = REBINDS
    throttled_pauses: int = THROTTLED_PAUSES
    refused: int = REFUSED
    refused_texts: int = REFUSED_TEXTS
    refused_all: int = REFUSED_ALL
    drops: int = DROPS
    temporary: int = TEMPORARY

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DispatchThresholds:
        return cls(
            silent=timedelta(seconds=int(config.get("DISPATCH_ALERT_SILENT_SECONDS", SILENT_SECONDS))),
            link_down=timedelta(seconds=int(config.get("DISPATCH_ALERT_LINK_DOWN_SECONDS", LINK_DOWN_SECONDS))),
            queue_age=timedelta(minutes=int(config.get("DISPATCH_ALERT_QUEUE_MINUTES", QUEUE_MINUTES))),
        )


@dataclass(frozen=True)
class WorkerStatus:
    row: DispatchWorker
    alive: bool  # running and heard from within the threshold
    silent_seconds: int  # since its last row
    down_seconds: int | None  # not bound for that long (None while bound)

    @property
    def state_name(self) -> str:
        if self.row.state == "running":
            return "运行中" if self.alive else "无消息"
        return {"stopped": "已停止", "failed": "出错停止"}.get(self.row.state, self.row.state)

    def as_dict(self) -> dict[str, Any]:
        row = self.row
        return {
            "name": row.name,
            "host": row.host,
            "pid": row.pid,
            "smsc": row.smsc,
            "state": row.state,
            "alive": self.alive,
            "started_at": row.started_at.isoformat(),
            "seen_at": row.seen_at.isoformat(),
            "silent_seconds": self.silent_seconds,
            "bound": row.bound,
            "down_seconds": self.down_seconds,
            "problem": row.problem,
            "problem_at": row.problem_at.isoformat() if row.problem_at else None,
            "rebinds_in_a_row": row.rebinds,
            "throttled_pauses_in_a_row": row.throttled_pauses,
            "held": row.held,
            "counters": dict(row.counters or {}),
        }


@dataclass(frozen=True)
class DispatchStatus:
    now: datetime
    due: int  # waiting for a worker: due now, not held by a live lease
    held: int  # leased by a worker, not yet submitted
    later: int  # scheduled for later (send_at, the sending window, a retry or the account's rate)
    awaiting_receipt: int  # submitted, no final receipt yet
    oldest_due_at: datetime | None  # the oldest message due and not yet submitted (held or not)
    workers: list[WorkerStatus]
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def oldest_due_minutes(self) -> int | None:
        return None if self.oldest_due_at is None else int((self.now - self.oldest_due_at).total_seconds() // 60)

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "healthy": self.healthy,
            "problems": list(self.problems),
            "queue": {
                "due": self.due,
                "held": self.held,
                "later": self.later,
                "awaiting_receipt": self.awaiting_receipt,
                "oldest_due_at": self.oldest_due_at.isoformat() if self.oldest_due_at else None,
                "oldest_due_minutes": self.oldest_due_minutes,
            },
            "workers": [worker.as_dict() for worker in self.workers],
        }


def _seconds(span: timedelta) -> int:
    return max(0, int(span.total_seconds()))


def dispatch_status(
    session: Session, *, now: datetime | None = None, thresholds: DispatchThresholds | None = None, lease_seconds: int = 300
) -> DispatchStatus:
    """The queue, the workers and what needs someone, as of `now` (read only)."""
    now = now or utcnow()
    limits = thresholds or DispatchThresholds()
    lease_from = now - timedelta(seconds=lease_seconds)
    m = Message.__table__.c
    waiting = sa.and_(m.status.in_(CLAIMABLE))
    is_due = sa.or_(m.next_attempt_at.is_(None), m.next_attempt_at <= now)
    is_held = sa.and_(m.claimed_by.is_not(None), m.claimed_at > lease_from)
    row = session.execute(
        sa.select(
            sa.func.count().filter(is_due, sa.not_(is_held)),
            sa.func.count().filter(is_held),
            sa.func.count().filter(sa.not_(is_due), sa.not_(is_held)),
            sa.func.min(sa.case((sa.or_(is_due, is_held), sa.func.coalesce(m.next_attempt_at, m.send_at)))),
        ).where(waiting)
    ).one()
    due, held, later, oldest = int(row[0]), int(row[1]), int(row[2]), row[3]
    if isinstance(oldest, str):  # SQLite hands an aggregate of a typed column back as text
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    awaiting = session.scalar(sa.select(sa.func.count()).select_from(Message).where(Message.status == "submitted")) or 0

    workers = []
    for worker in session.scalars(sa.select(DispatchWorker).order_by(DispatchWorker.name)):
        silent = now - worker.seen_at
        alive = worker.state == "running" and silent <= limits.silent
        down = None if worker.bound or worker.down_since is None else _seconds(now - worker.down_since)
        workers.append(WorkerStatus(worker, alive, _seconds(silent), down))
    status = DispatchStatus(now, due, held, later, int(awaiting), oldest, workers)
    status.problems.extend(_problems(status, limits))
    return status


def status_from_config(session: Session, config: Mapping[str, Any]) -> DispatchStatus:
    """`dispatch_status` with the installation's thresholds and lease (the page and the command)."""
    return dispatch_status(
        session, thresholds=DispatchThresholds.from_config(config), lease_seconds=int(config.get("DISPATCH_LEASE_SECONDS", 300))
    )


def _problems(status: DispatchStatus, limits: DispatchThresholds) -> list[str]:
    problems = []
    if not any(worker.alive for worker in status.workers):
        waiting = f"：{status.due + status.held} 条短信待发，回执也无人接收" if status.due + status.held else "：回执无人接收"
        problems.append("没有正在运行的发送进程" + waiting)
    for worker in status.workers:
        row, name = worker.row, f"发送进程 {worker.row.name}（{worker.row.host}，进程号 {worker.row.pid}）"
        cause = f"：{row.problem}" if row.problem else ""
        if row.state == "running" and not worker.alive:
            problems.append(f"{name}已 {worker.silent_seconds} 秒没有消息，可能已停止")
        elif row.state == "failed":
            problems.append(f"{name}出错后停止{cause}")
        if not worker.alive:
            continue
        if worker.down_seconds is not None and worker.down_seconds >= _seconds(limits.link_down):
            problems.append(f"{name}与短信中心（{row.smsc}）断开已 {worker.down_seconds} 秒{cause}")
        if row.rebinds >= limits.rebinds:
            problems.append(f"短信中心连续 {row.rebinds} 次把{name}的会话当作未绑定（ESME_RINVBNDSTS），短信暂停提交")
        if row.throttled_pauses >= limits.throttled_pauses:
            problems.append(f"短信中心持续限流{name}（连续 {row.throttled_pauses} 次暂停）")
        counters = row.counters or {}
        texts, refused = int(counters.get("refused_texts", 0)), int(counters.get("refused_in_a_row", 0))
        last = counters.get("last_refusal") or "未知"
        if refused >= limits.refused and texts >= limits.refused_texts:
            problems.append(
                f"短信中心连续拒绝了{name}提交的 {refused} 条短信（{texts} 种以上不同内容；最近一次：{last}），这些短信已退款：请检查通道配置"
            )
        elif refused >= limits.refused_all:
            problems.append(
                f"短信中心连续拒绝了{name}提交的 {refused} 条短信（最近一次：{last}），这些短信已退款："
                "可能是通道故障，也可能是短信中心拦截了这批内容，请核查"
            )
        temporary = int(counters.get("temporary_in_a_row", 0))
        if temporary >= limits.temporary:
            problems.append(
                f"短信中心连续 {temporary} 次以临时错误（最近一次：{counters.get('last_temporary') or '未知'}）拒收{name}提交的短信，"
                "没有一条提交成功：这些短信稍后重发，超过有效期仍未提交的将退款，请检查通道"
            )
        if int(counters.get("drops_in_a_row", 0)) >= limits.drops:
            problems.append(f"{name}与短信中心的链路连续断开 {counters['drops_in_a_row']} 次，其间没有一条短信提交成功{cause}")
    minutes = status.oldest_due_minutes
    if minutes is not None and status.oldest_due_at is not None and status.now - status.oldest_due_at >= limits.queue_age:
        problems.append(f"最早的待发短信已等待 {minutes} 分钟（{status.due} 条待发，{status.held} 条发送中）")
    return problems


def forget_worker(
    session: Session, name: str, *, actor: str, now: datetime | None = None, thresholds: DispatchThresholds | None = None
) -> None:
    """Remove the row of a worker that is gone for good (a host retired, a worker renamed), so it
    stops being reported as silent; refused while it is alive. A worker that runs again writes
    its row again. The caller commits."""
    now = now or utcnow()
    limits = thresholds or DispatchThresholds()
    worker = session.get(DispatchWorker, name)
    if worker is None:
        raise NotFound(f"没有这个发送进程：{name[:64]}")
    if worker.state == "running" and now - worker.seen_at <= limits.silent:
        raise Conflict(f"发送进程 {name} 正在运行（{_seconds(now - worker.seen_at)} 秒前报告过），不能移除")
    record(session, actor, "dispatch.forget_worker", "dispatch_worker", name, state=worker.state, seen_at=worker.seen_at.isoformat())
    session.delete(worker)


__all__ = ["DispatchStatus", "DispatchThresholds", "WorkerStatus", "dispatch_status", "forget_worker", "status_from_config"]
