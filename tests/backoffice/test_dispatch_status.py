"""The health of the message path as the people who run it see it (the operations page
/admin/dispatch and `flask --app wsgi dispatch status`): every worker writes its row while it runs
and when it stops or fails; the problems are named in Chinese: no worker, a worker silent, a link
down with its cause, an SMSC taking every session for unbound, a queue waiting too long."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from backoffice.extensions import db
from backoffice.models import DispatchWorker
from backoffice.services.dispatch_status import DispatchThresholds, dispatch_status
from backoffice.services.dispatcher import Dispatcher, DispatchSettings
from dispatch.simulator import SMSCSimulator
from dispatch.smpp_link import SUBMIT_SM_RESP, LinkConfig, encode_pdu
from tests.backoffice import hostile_smsc, test_dispatcher, test_hostile_smsc
from tests.backoffice.hostile_smsc import HostileSmsc
from tests.backoffice.test_dispatcher import FAST, FAST_LINK, all_in, drive
from tests.backoffice.test_messaging import active_sender, numbers, send
from tests.conftest import FIXED_NOW, login

smsc = test_dispatcher.smsc
worker = test_dispatcher.worker
hostile = hostile_smsc.hostile
make_worker = test_hostile_smsc.make_worker


def status(**kwargs: object):  # type: ignore[no-untyped-def]
    db.session.expire_all()
    result = dispatch_status(db.session, **kwargs)  # type: ignore[arg-type]
    db.session.rollback()
    return result


def heartbeat(dispatcher: Dispatcher) -> None:
    """The worker's next turn writes its row (it does every 10 s)."""
    dispatcher._next_heartbeat = 0.0
    dispatcher.step(timeout=0.01)


def test_a_running_bound_worker_is_healthy_and_one_that_stopped_is_a_problem(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    sender = active_sender(app)
    send(sender, numbers(3))
    simulator = smsc(receipt_delay=3600)
    dispatcher = worker(simulator, "worker-a")
    drive(dispatcher, all_in("submitted"), sender)
    heartbeat(dispatcher)
    now = status()
    assert now.healthy, now.problems
    assert (now.due, now.held, now.later, now.awaiting_receipt) == (0, 0, 0, 3)
    (seen,) = now.workers
    assert seen.alive and seen.row.bound and seen.row.state == "running" and seen.down_seconds is None
    assert seen.row.counters["submitted"] == 3 and seen.row.smsc.startswith("127.0.0.1:")
    dispatcher.close()
    after = status()
    assert after.workers[0].row.state == "stopped" and not after.workers[0].row.bound
    assert after.problems == ["没有正在运行的发送进程：回执无人接收"]


def test_a_worker_that_stopped_writing_is_named_as_silent(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    dispatcher = worker(smsc(), "worker-a")
    dispatcher.run_until(lambda: dispatcher.link.bound)
    heartbeat(dispatcher)
    later = status(now=FIXED_NOW + timedelta(minutes=2))
    assert not later.workers[0].alive
    assert any("worker-a" in p and "已 120 秒没有消息，可能已停止" in p for p in later.problems), later.problems
    assert "没有正在运行的发送进程" in later.problems[0]


def test_a_link_that_stays_down_is_named_with_its_cause(app: Flask) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once it is closed
    link = LinkConfig(port=port, window=10, **FAST_LINK)
    dispatcher = Dispatcher(app, link, "worker-down", settings=DispatchSettings(**vars(FAST)))
    try:
        for _ in range(3):
            dispatcher.step(timeout=0.01)
        heartbeat(dispatcher)
        now = status(thresholds=DispatchThresholds(link_down=timedelta(0)))
        (seen,) = now.workers
        assert seen.alive and not seen.row.bound and seen.row.down_since == FIXED_NOW
        assert seen.row.problem and f"connect to 127.0.0.1:{port} failed" in seen.row.problem
        (problem,) = now.problems
        assert problem.startswith("发送进程 worker-down") and f"与短信中心（127.0.0.1:{port}" in problem and "断开已 0 秒" in problem
        assert "failed" in problem  # the cause
        assert status().healthy  # not yet for long
    finally:
        dispatcher.close()


def test_an_smsc_that_takes_every_session_for_unbound_is_a_problem_once_it_lasts(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """It was in the log only, while the messages waited, their money reserved, until their validity."""
    sender = active_sender(app)
    send(sender, numbers(2))
    smsc = hostile(lambda conn: (conn.bind(), conn.serve(lambda conn, sequence, body, n: encode_pdu(SUBMIT_SM_RESP, sequence, b"", 0x04))))
    dispatcher = make_worker(smsc, link={"reconnect_backoff": 0.02, "reconnect_backoff_max": 0.05})
    deadline = time.monotonic() + 10
    while dispatcher.link.rebinds_in_a_row < 3 and time.monotonic() < deadline:
        dispatcher.step(timeout=0.02)
    heartbeat(dispatcher)
    now = status()
    assert now.workers[0].row.rebinds >= 3
    assert "ESME_RINVBNDSTS" in (now.workers[0].row.problem or "")
    assert any("把发送进程 hostile-worker" in p and "会话当作未绑定（ESME_RINVBNDSTS），短信暂停提交" in p for p in now.problems), (
        now.problems
    )


def test_a_worker_that_failed_shows_why_and_a_restart_keeps_the_cause_until_a_newer_problem(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    simulator = smsc()
    first = worker(simulator, "worker-a")
    first.run_until(lambda: first.link.bound)

    def broken(mono: float) -> None:
        raise RuntimeError("磁盘已满")

    first._flush = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        first.step(timeout=0.01)
    first.close()
    failed = status()
    assert failed.workers[0].row.state == "failed"
    assert failed.workers[0].row.problem == "worker failed: RuntimeError: 磁盘已满"
    assert any(p.startswith("发送进程 worker-a") and "出错后停止：worker failed: RuntimeError: 磁盘已满" in p for p in failed.problems)
    second = worker(simulator, "worker-a")  # run_worker starts a fresh one under the same name
    second.run_until(lambda: second.link.bound)
    heartbeat(second)
    restarted = status()
    assert restarted.healthy, restarted.problems
    assert restarted.workers[0].row.state == "running" and restarted.workers[0].row.problem == "worker failed: RuntimeError: 磁盘已满"


def test_the_queue_waiting_too_long_is_a_problem_and_scheduled_messages_are_not(app: Flask) -> None:
    sender = active_sender(app)
    send(sender, numbers(2))
    send(sender, numbers(1, start=13900139000), send_at="2026-11-24T10:00:00+08:00")
    now = status()
    assert (now.due, now.held, now.later) == (2, 0, 1)
    assert now.oldest_due_at == FIXED_NOW and now.oldest_due_minutes == 0
    assert now.problems == ["没有正在运行的发送进程：2 条短信待发，回执也无人接收"]
    later = status(now=FIXED_NOW + timedelta(minutes=11))
    assert "最早的待发短信已等待 11 分钟（2 条待发，0 条发送中）" in later.problems


def test_dispatch_status_on_the_command_line_exits_1_on_a_problem(
    app: Flask, runner: FlaskCliRunner, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    result = runner.invoke(args=["dispatch", "status"])
    assert result.exit_code == 1 and "问题：没有正在运行的发送进程" in result.output
    dispatcher = worker(smsc(), "worker-a")
    dispatcher.run_until(lambda: dispatcher.link.bound)
    heartbeat(dispatcher)
    result = runner.invoke(args=["dispatch", "status", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["healthy"] and shown["problems"] == [] and shown["queue"]["due"] == 0
    assert shown["workers"][0]["name"] == "worker-a" and shown["workers"][0]["bound"] is True
    text = runner.invoke(args=["dispatch", "status"])
    assert (
        text.exit_code == 0
        and "发送进程 worker-a" in text.output
        and "运行中，已绑定" in text.output
        and text.output.rstrip().endswith("正常")
    )


def test_the_operations_page_shows_the_workers_and_problems_to_administrators_only(
    app: Flask, client: FlaskClient, staff: dict[str, str], smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    login(client, "sales", staff["sales"])
    assert client.get("/admin/dispatch").status_code == 403
    client.post("/logout")
    login(client, "admin", staff["admin"])
    page = client.get("/admin/dispatch").get_data(as_text=True)
    assert "没有正在运行的发送进程" in page and "还没有发送进程运行过" in page
    dispatcher = worker(smsc(), "worker-a")
    dispatcher.run_until(lambda: dispatcher.link.bound)
    heartbeat(dispatcher)
    page = client.get("/admin/dispatch").get_data(as_text=True)
    assert "正常：发送进程在运行" in page and "worker-a" in page and "已绑定" in page and "运行中" in page


def test_the_operations_page_tells_refunds_of_a_stopped_account_apart_from_the_smscs_refusals(
    app: Flask, client: FlaskClient, staff: dict[str, str], smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """A worker's 退款 counted a suspended account's messages, refunded without being sent, with
    those the SMSC refused: someone reading a surge of refunds looked for a failing channel."""
    from backoffice.services.sending_settings import set_sending_status

    stopped, refused = active_sender(app), active_sender(app, "lingxuntong_service")
    send(stopped, numbers(2))
    send(refused, "13900139000", "【学府教育】明天上午九点开课")
    set_sending_status(db.session, stopped.code, suspend=True, reason="客户欠款，暂停发送", actor="staff:admin")
    db.session.commit()
    dispatcher = worker(smsc(reject_rate=1.0), "worker-a")
    drive(dispatcher, all_in("refunded"))
    assert (dispatcher.stats.refunded, dispatcher.stats.refunded_unsent) == (3, 2)
    heartbeat(dispatcher)
    login(client, "admin", staff["admin"])
    page = client.get("/admin/dispatch").get_data(as_text=True)
    assert "<td>0 / 3（其中账户停发、未发送 2） / 0</td>" in page


def test_the_workers_rows_are_theirs_alone(app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]) -> None:
    """Two workers, two rows; a worker restarted under its name updates its own."""
    simulator = smsc()
    for name in ("worker-a", "worker-b", "worker-a"):
        dispatcher = worker(simulator, name)
        dispatcher.run_until(lambda d=dispatcher: d.link.bound)  # type: ignore[misc]
        heartbeat(dispatcher)
        dispatcher.close()
    assert db.session.scalars(sa.select(DispatchWorker.name).order_by(DispatchWorker.name)).all() == ["worker-a", "worker-b"]


def test_a_worker_gone_for_good_can_be_forgotten_but_not_one_that_runs(
    app: Flask,
    runner: FlaskCliRunner,
    client: FlaskClient,
    staff: dict[str, str],
    smsc: Callable[..., SMSCSimulator],
    worker: Callable[..., Dispatcher],
) -> None:
    """A retired host's worker stayed 'silent' for ever: it can be removed, with an audit entry."""
    from backoffice.models import AuditEntry

    simulator = smsc()
    retired, running = worker(simulator, "dispatch@old-host"), worker(simulator, "dispatch@new-host")
    for dispatcher in (retired, running):
        dispatcher.run_until(lambda d=dispatcher: d.link.bound)  # type: ignore[misc]
        heartbeat(dispatcher)
    refused = runner.invoke(args=["dispatch", "forget-worker", "dispatch@new-host"])
    assert refused.exit_code == 1 and "正在运行" in refused.output and "不能移除" in refused.output
    assert runner.invoke(args=["dispatch", "forget-worker", "nobody"]).exit_code == 1
    later = FIXED_NOW + timedelta(minutes=5)
    from backoffice.clock import set_clock

    set_clock(lambda: later)  # the retired one silent since; the running one writes again
    heartbeat(running)
    assert any("dispatch@old-host" in p for p in status().problems)
    login(client, "admin", staff["admin"])
    page = client.get("/admin/dispatch").get_data(as_text=True)
    assert page.count(">移除</button>") == 1
    client.post("/admin/dispatch/workers/dispatch@old-host/forget")
    now = status()
    assert [w.row.name for w in now.workers] == ["dispatch@new-host"] and now.healthy, now.problems
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "dispatch.forget_worker"))
    assert entry is not None and entry.object_id == "dispatch@old-host" and entry.actor.startswith("staff:")


def test_an_smsc_refusing_every_part_is_a_problem(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: bound and alive, every message refunded, and the page said 正常."""
    sender = active_sender(app)
    for i in range(4):  # four requests, four texts
        send(sender, numbers(5, start=13800100000 + i * 100), f"【蓉城会员】第 {i} 批通知")
    dispatcher = make_worker(hostile(lambda conn: (conn.bind(), conn.serve(REFUSE))))
    drive(dispatcher, all_in("refunded"), sender)
    heartbeat(dispatcher)
    now = status()
    assert now.workers[0].row.counters["refused_in_a_row"] == 20 and now.workers[0].row.counters["refused_texts"] == 4
    assert any("短信中心连续拒绝了发送进程 hostile-worker" in p and "提交的 20 条短信（4 种以上不同内容" in p for p in now.problems), (
        now.problems
    )


def test_one_request_an_smsc_refuses_for_its_content_is_not_a_channel_problem(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: a content filter refusing one request's six-part text to four numbers
    was "20 条短信 … 请检查通道配置" (it counted parts) until the next accepted part."""
    sender = active_sender(app)
    send(sender, numbers(25), "【学府教育】" + "贷款优惠，详情请咨询。" * 36)
    dispatcher = make_worker(hostile(lambda conn: (conn.bind(), conn.serve(REFUSE))))
    drive(dispatcher, all_in("refunded"), sender)
    heartbeat(dispatcher)
    now = status()
    assert now.workers[0].row.counters["refused_in_a_row"] == 25 and now.healthy, now.problems


def test_a_channel_refusing_a_whole_one_text_campaign_is_a_problem(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review of the rule above: 60 of 60 messages of one campaign refunded for a
    system error, and the page said 正常."""
    sender = active_sender(app)
    send(sender, numbers(60), "【蓉城会员】本周六会员日全场八折")
    dispatcher = make_worker(hostile(lambda conn: (conn.bind(), conn.serve(REFUSE))))
    drive(dispatcher, all_in("refunded"), sender)
    heartbeat(dispatcher)
    now = status()
    assert now.workers[0].row.counters["refused_in_a_row"] == 60
    assert any("提交的 60 条短信" in p and "可能是通道故障，也可能是短信中心拦截了这批内容" in p for p in now.problems), now.problems


def test_an_smsc_answering_every_part_with_a_temporary_error_is_a_problem(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: an SMSC answering ESME_RSYSERR to every submit has its parts sent
    again and again until their validity (nothing refunded meanwhile), and the page said 正常."""
    from dispatch.smpp_link import ESME_RSYSERR

    sender = active_sender(app)
    send(sender, numbers(50), "【蓉城会员】本周六会员日全场八折")

    def fails(conn: object, sequence: int, body: bytes, n: int) -> bytes:
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RSYSERR)

    dispatcher = make_worker(hostile(lambda conn: (conn.bind(), conn.serve(fails))))
    drive(dispatcher, lambda: dispatcher.stats.parts_deferred >= 50, sender)
    heartbeat(dispatcher)
    now = status()
    assert now.workers[0].row.counters["temporary_in_a_row"] >= 50
    assert any("以临时错误（最近一次：0x00000008" in p and "稍后重发" in p for p in now.problems), now.problems


def REFUSE(conn: object, sequence: int, body: bytes, n: int) -> bytes:  # noqa: N802 (a constant answer)
    return encode_pdu(SUBMIT_SM_RESP, sequence, b"", 0x45)


def test_an_smsc_that_drops_the_link_before_accepting_anything_is_a_problem(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: an SMSC that binds and never answers a submit was 正常 between drops."""
    sender = active_sender(app)
    send(sender, numbers(2))
    silent = hostile(lambda conn: (conn.bind(), conn.serve(lambda conn, sequence, body, n: None)))
    dispatcher = make_worker(silent, link={"enquire_link_interval": 0.1, "response_timeout": 0.2})
    deadline = time.monotonic() + 15
    while dispatcher._drops_in_a_row < 3 and time.monotonic() < deadline:
        dispatcher.step(timeout=0.02)
    heartbeat(dispatcher)
    now = status()
    assert any("链路连续断开" in p and "其间没有一条短信提交成功" in p for p in now.problems), now.problems


def test_a_worker_whose_end_failed_outside_its_transactions_is_recorded_failed(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: a failure of the final flush left the row 'stopped', as a clean stop."""
    dispatcher = worker(smsc(), "worker-a")
    dispatcher.run_until(lambda: dispatcher.link.bound)

    def broken() -> None:
        raise RuntimeError("disk I/O error")

    dispatcher._final_flush = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        dispatcher.close()
    row = status().workers[0].row
    assert row.state == "failed" and row.problem == "worker failed: RuntimeError: disk I/O error"


def test_a_row_that_cannot_be_written_does_not_stop_the_worker(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    dispatcher = worker(smsc(), "worker-a")
    dispatcher.run_until(lambda: dispatcher.link.bound)
    real = dispatcher._heartbeat
    calls = [0]

    def flaky(*args: object) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        real(*args)  # type: ignore[arg-type]

    dispatcher._heartbeat = flaky  # type: ignore[method-assign]
    heartbeat(dispatcher)  # logged, not fatal
    assert dispatcher._failure is None
    heartbeat(dispatcher)
    assert status().workers[0].row.state == "running"
