"""The dispatcher against a hostile SMSC (raw TCP, scripted; written by a fuzzing helper): odd
submit_sm_resp ids and statuses, responses out of order or for nothing, links broken in every way,
odd binds. None fails the worker (on PostgreSQL a 65-character id or a status past 0x7FFFFFFF did,
on every restart: a crash loop resending its window), loses or doubles a charge, or resends a
part unflagged."""

from __future__ import annotations

import itertools
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.clock import set_clock
from backoffice.extensions import db
from backoffice.models import Message, MessagePart, SendLog
from backoffice.services.dispatcher import Dispatcher, DispatchSettings
from backoffice.services.messaging import message_counts
from dispatch.smpp_link import (
    DELIVER_SM_RESP,
    ESME_RMSGQFUL,
    ESME_RSYSERR,
    ESME_RX_T_APPN,
    GENERIC_NACK,
    SUBMIT_SM_RESP,
    TEMPORARY_STATUSES,
    UNBIND,
    LinkConfig,
    decode_short_message,
    encode_pdu,
)
from tests.backoffice import hostile_smsc
from tests.backoffice.hostile_smsc import Conn, HostileSmsc, receipt
from tests.backoffice.test_dispatcher import FAST, FAST_LINK, statuses
from tests.backoffice.test_messaging import active_sender, numbers, send
from tests.conftest import FIXED_NOW

hostile = hostile_smsc.hostile  # its fixture: scripted SMSCs, stopped after the test


@pytest.fixture
def running_clock() -> None:
    """The app's clock moving with real time from FIXED_NOW: the fixed test clock freezes each
    account's rate, so a test that sends more than about a hundred messages would stall."""
    started = time.monotonic()
    set_clock(lambda: FIXED_NOW + timedelta(seconds=time.monotonic() - started))


@pytest.fixture
def make_worker(app: Flask) -> Iterator[Callable[..., Dispatcher]]:
    made: list[Dispatcher] = []

    def make(smsc: HostileSmsc, window: int = 10, link: dict[str, Any] | None = None, **settings: Any) -> Dispatcher:
        config = LinkConfig(port=smsc.port, window=window, **{**FAST_LINK, **(link or {})})
        dispatcher = Dispatcher(app, config, "hostile-worker", settings=DispatchSettings(**{**vars(FAST), **settings}))
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


def pump(dispatcher: Dispatcher, done: Callable[[], bool], sender: Any, timeout: float = 10.0) -> None:
    def check() -> bool:
        assert dispatcher.open_parts <= dispatcher.window
        assert message_counts(db.session, sender.account.id).balanced
        return done()

    dispatcher.run_until(check, timeout=timeout)


def parts() -> list[MessagePart]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(MessagePart).order_by(MessagePart.message_id, MessagePart.seq)))


def log_results() -> list[str]:
    return list(db.session.scalars(sa.select(SendLog.result).order_by(SendLog.seq)))


MESSAGE_IDS = {
    "empty-with-nul": b"\0",
    "empty-body": b"",
    "64-chars": b"a" * 64 + b"\0",
    "65-chars": b"b" * 65 + b"\0",
    "65-chars-no-nul": b"c" * 65,
    "200-chars": b"d" * 200 + b"\0",
    "60k-chars": b"e" * 60000 + b"\0",
    "nul-inside": b"ab\0cd\0",
    "non-ascii": b"\xe9\xff\xfeX\0",
    "missing-nul": b"abc123",
    "spaces": b"   \0",
    "controls": b"\x01\x02\x7f\0",
    "bad-tlv-tail": b"abc\0\x00",
    "tlv-tail": b"abc\0\x04\x25\x00\x01\x01",
    "zeros": b"0000\0",
}


@pytest.mark.parametrize("body", list(MESSAGE_IDS.values()), ids=list(MESSAGE_IDS))
def test_submit_resp_message_ids(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher], body: bytes
) -> None:
    sender = active_sender(app)
    send(sender, numbers(1))
    before = sender.balance()
    text_id = body.split(b"\0", 1)[0].decode("latin-1")

    def script(conn: Conn) -> None:
        conn.bind()
        conn.serve(lambda conn, sequence, _, n: encode_pdu(SUBMIT_SM_RESP, sequence, body) + receipt(1000 + n, text_id))

    smsc = hostile(script)
    dispatcher = make_worker(smsc)
    pump(dispatcher, lambda: set(statuses()) <= {"submitted", "delivered"}, sender)
    dispatcher.run_until(lambda: len(smsc.seen) >= 3, timeout=3)  # deliver_sm_resp back
    for _ in range(10):
        dispatcher.step(timeout=0.02)
    print(body[:80], dict(statuses()), [(p.smsc_message_id and p.smsc_message_id[:80], p.submit_status, p.receipt_stat) for p in parts()])
    print(log_results())
    assert len(smsc.submits) == 1
    assert sender.balance() == before
    assert dispatcher._failure is None
    assert smsc.errors == []


CRASHERS = {
    "id-65-chars": lambda conn, seq, body, n: encode_pdu(SUBMIT_SM_RESP, seq, b"F" * 65 + b"\0"),
    "status-0x80000000": lambda conn, seq, body, n: encode_pdu(SUBMIT_SM_RESP, seq, b"", 0x80000000),
    "nack-0xFFFFFFFF": lambda conn, seq, body, n: encode_pdu(0x80000000, seq, b"", 0xFFFFFFFF),
}


@pytest.mark.parametrize("answer", list(CRASHERS.values()), ids=list(CRASHERS))
def test_a_crash_loop(app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher], answer: Any) -> None:
    """What run_worker does: a failed Dispatcher is closed and a fresh one takes over."""
    sender = active_sender(app)
    send(sender, numbers(3))
    smsc = hostile(lambda conn: (conn.bind(), conn.serve(answer)))
    failures = []
    for generation in range(3):
        dispatcher = make_worker(smsc)
        try:
            pump(dispatcher, lambda: set(statuses()) <= {"submitted", "refunded"}, sender, timeout=5)
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)
        dispatcher.close()
    print("failures:", [type(f).__name__ + ": " + str(f)[:120] for f in failures])
    print("submits:", len(smsc.submits), "statuses:", dict(statuses()))
    print([(p.message_id, p.seq, p.submit_status, p.resent) for p in parts()])
    print(log_results())
    assert failures == []
    assert len(smsc.submits) == 3


STATUSES = {  # (temporary ones: the part goes again later, see test_temporary_smsc_errors_...)
    "not-in-table-0x400": (SUBMIT_SM_RESP, 0x400, b""),
    "0xFFFFFFFF": (SUBMIT_SM_RESP, 0xFFFFFFFF, b""),
    "sys-err-with-id": (SUBMIT_SM_RESP, 0x08, b"123\0"),
    "nack-0": (GENERIC_NACK, 0, b""),
    "nack-3": (GENERIC_NACK, 3, b""),
    "nack-throttled": (GENERIC_NACK, 0x58, b""),
}


@pytest.mark.parametrize("answer", list(STATUSES.values()), ids=list(STATUSES))
def test_submit_resp_statuses(app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher], answer: Any) -> None:
    command_id, status, body = answer
    sender = active_sender(app)
    funded = sender.balance()
    send(sender, numbers(2))
    # Throttled, or a temporary error (a generic_nack without a status is taken for ESME_RSYSERR):
    # the SMSC did not take the part this time and takes it later.
    throttled = status == 0x58 or (status or ESME_RSYSERR) in TEMPORARY_STATUSES

    def respond(conn: Conn, sequence: int, _: bytes, n: int) -> bytes:
        if throttled and n >= 3:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"ok%d\0" % n)
        return encode_pdu(command_id, sequence, body, status)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    dispatcher = make_worker(smsc)
    pump(dispatcher, lambda: set(statuses()) <= {"refunded", "submitted"}, sender)
    print(dict(statuses()), sender.balance(), funded, log_results())
    assert dispatcher._failure is None
    if throttled:
        assert len(smsc.submits) >= 4 and statuses() == {"submitted": 2}
    else:
        assert len(smsc.submits) == 2 and sender.balance() == funded


def _production_worker(app: Flask, port: int, name: str = "w", **link: Any) -> Dispatcher:
    """A worker with the link's production defaults (backoffs, retry limit, timeouts)."""
    return Dispatcher(app, LinkConfig(port=port, window=10, **link), name, settings=DispatchSettings(idle_poll=0.02))


def test_one_destination_answered_msgqful_does_not_throttle_every_other_message(
    app: Flask, hostile: Callable[..., HostileSmsc], running_clock: None
) -> None:
    """Found by a review: ESME_RMSGQFUL is about one destination's queue at the SMSC (a handset
    off for days), and it was taken for the SMSC's throttling: each retry of that one part
    paused the whole link, the pause doubling to throttle_backoff_max (5 s), 50 tries, then the
    dispatcher requeued it after 5 s and it started over, until its 48 h validity ran out.
    Measured: 81 other messages in 20 s, against 1,000 in about a second without it."""
    sender = active_sender(app)
    sender.account.rate_limit_per_second = 10_000
    db.session.commit()
    send(sender, "13900000001")  # its queue at the SMSC is full
    send(sender, numbers(300))

    def respond(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        if decode_short_message(body).destination_addr == "8613900000001":
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RMSGQFUL)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"id%d\0" % n)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    dispatcher = _production_worker(app, smsc.port)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and statuses().get("submitted", 0) < 300:
            dispatcher.step()
        found, pauses = statuses(), dispatcher.link.throttled_in_a_row
    finally:
        dispatcher.close()
    assert found == {"submitted": 300, "queued": 1}, f"{dict(found)} in 10 s (link paused {pauses} times in a row)"
    assert pauses == 0 and dispatcher.stats.parts_deferred >= 1 and dispatcher.stats.resent == 0
    full = [p for p in parts() if p.submit_status == ESME_RMSGQFUL]
    assert len(full) == 1 and not full[0].resent  # waiting for its next try, unflagged


def test_messages_are_not_refunded_because_every_session_is_cut_right_after_the_bind(
    app: Flask, hostile: Callable[..., HostileSmsc], running_clock: None
) -> None:
    """Found by a review: an SMSC that unbinds right after each bind (maintenance, a session
    limit) was bound again every 0.5 s, each short session took the window's parts, never
    answered, and each part "lost in flight" once per session was refunded after resend_limit
    (3) as lost too often, though the fault was the link's: 40 of 200 refunded in 10 s, 19
    binds. A loss counts only in a session that answered something, and the binds slow down."""
    sender = active_sender(app)
    send(sender, numbers(200))
    charged = sender.balance()

    def script(conn: Conn) -> None:
        conn.bind()
        time.sleep(0.05)
        conn.send(encode_pdu(UNBIND, 9))
        time.sleep(0.2)

    smsc = hostile(script)
    dispatcher = _production_worker(app, smsc.port)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            dispatcher.step()
    finally:
        dispatcher.close()
    found = statuses()
    assert found == {"queued": 200} and smsc.connections <= 6, f"{dict(found)}, {smsc.connections} binds in 10 s"
    assert sender.balance() == charged and dispatcher.link.stats.submits_sent == 10  # the first window; none more before a sign of life


TEMPORARY = {
    "sys-err": (SUBMIT_SM_RESP, ESME_RSYSERR),
    "nack-without-status": (GENERIC_NACK, 0),  # taken for ESME_RSYSERR
    "msgqful": (SUBMIT_SM_RESP, ESME_RMSGQFUL),
    "x-t-appn": (SUBMIT_SM_RESP, ESME_RX_T_APPN),
}


@pytest.mark.parametrize("answer", list(TEMPORARY.values()), ids=list(TEMPORARY))
def test_temporary_smsc_errors_are_retried_ever_more_slowly_not_refunded(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher], answer: tuple[int, int]
) -> None:
    """Found by a review: ESME_RSYSERR (0x08, the SMSC's own failure: a database blink, a
    failover) and ESME_RX_T_APPN (0x64) were final: the message was refunded and never sent,
    though the next try would have gone through (a generic_nack without a status is taken for
    ESME_RSYSERR). Such a part now goes again later, unflagged, its waits growing (0.2, 0.4,
    0.8 s here: throttle_requeue, doubled each time), while the other messages go on."""
    command_id, status = answer
    sender = active_sender(app)
    send(sender, numbers(3))
    charged = sender.balance()
    tries: list[float] = []

    def respond(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        if decode_short_message(body).destination_addr == "8613800100000":  # (the first of numbers(3))
            tries.append(time.monotonic())
            if len(tries) <= 3:
                return encode_pdu(command_id, sequence, b"", status)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"id%d\0" % n)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    dispatcher = make_worker(smsc, window=1)
    pump(dispatcher, lambda: statuses() == {"submitted": 3}, sender)
    waits = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert len(tries) == 4 and waits[0] >= 0.2 and waits[1] >= 0.4 and waits[2] >= 0.8, waits
    assert len(smsc.submits) == 6 and sender.balance() == charged
    assert dispatcher.stats.parts_deferred == 3 and dispatcher.stats.resent == 0 and dispatcher.link.throttled_in_a_row == 0
    assert not any(p.resent for p in parts()) and not any(r.startswith("resent") for r in log_results())


def test_a_part_answered_with_a_temporary_error_goes_again_after_a_restart_not_refunded(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """A worker that stops while a part waits after a temporary error gives its message back; the
    next one that claims it sends the part again (unflagged: the SMSC said it did not take it)."""
    sender = active_sender(app)
    send(sender, numbers(1))
    charged = sender.balance()

    def respond(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        if n == 0:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RSYSERR)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"id%d\0" % n)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    first = make_worker(smsc, throttle_requeue=60.0)
    pump(first, lambda: first.stats.parts_deferred == 1, sender)
    first.close()
    assert statuses() == {"queued": 1} and [p.submit_status for p in parts()] == [ESME_RSYSERR]
    second = make_worker(smsc)
    pump(second, lambda: statuses() == {"submitted": 1}, sender)
    assert len(smsc.submits) == 2 and sender.balance() == charged and not any(p.resent for p in parts())


def test_the_temporary_statuses_are_configurable(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """DISPATCH_TEMPORARY_STATUSES: a status left out is final again (the message refunded); one
    added (here ESME_RSUBMITFAIL, 0x45) is retried. A list that cannot be read is refused in
    Chinese, naming the entry."""
    from backoffice.config import ConfigError

    settings = DispatchSettings.from_config(
        {"DISPATCH_TEMPORARY_STATUSES": "0x14, esme_rx_t_appn,69", "DISPATCH_TEMPORARY_RETRY_MAX_SECONDS": "30"}
    )
    assert settings.temporary_statuses == {ESME_RMSGQFUL, ESME_RX_T_APPN, 0x45} and settings.temporary_retry_max == 30.0
    assert DispatchSettings.from_config({}).temporary_statuses == TEMPORARY_STATUSES
    for bad, says in (("0x08,0xZZ", "“0xZZ” 不是 SMPP 错误码"), ("0", "是 ESME_ROK"), (",", "没有列出任何 SMPP 错误码")):
        with pytest.raises(ConfigError, match=f"^DISPATCH_TEMPORARY_STATUSES={bad!r}：.*{says}"):
            DispatchSettings.from_config({"DISPATCH_TEMPORARY_STATUSES": bad})

    sender = active_sender(app)
    funded = sender.balance()
    send(sender, numbers(2))
    charged = sender.balance()

    def respond(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        status = {"8613800100000": ESME_RSYSERR, "8613800100007": 0x45}[decode_short_message(body).destination_addr]
        if n < 2:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"", status)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"id%d\0" % n)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    dispatcher = make_worker(smsc, temporary_statuses=frozenset({ESME_RMSGQFUL, 0x45}))
    pump(dispatcher, lambda: statuses() == {"refunded": 1, "submitted": 1}, sender)
    recipients = {recipient: status for recipient, status in db.session.execute(sa.select(Message.recipient, Message.status))}
    assert recipients == {"13800100000": "refunded", "13800100007": "submitted"}
    assert sender.balance() == charged + (funded - charged) / 2


def test_an_smsc_that_takes_the_session_for_unbound_is_bound_again_and_nothing_is_refunded(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """ESME_RINVBNDSTS on submit (an SMSC that restarted behind a live TCP session, say) refunded
    every message it answered so, a whole queue's worth; now the link binds again and the parts,
    which the SMSC did not take, go again unflagged."""
    sender = active_sender(app)
    send(sender, numbers(6))
    charged = sender.balance()

    def respond(conn: Conn, sequence: int, _: bytes, n: int) -> bytes:
        if conn.index == 1:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"", 0x04)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"id%d\0" % n)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    dispatcher = make_worker(smsc)
    pump(dispatcher, lambda: statuses() == {"submitted": 6}, sender)
    assert smsc.connections == 2 and sender.balance() == charged
    assert Counter(index for index, _, _ in smsc.submits) == {1: 6, 2: 6}
    assert dispatcher.stats.resent == 0 and not any(p.resent for p in parts())
    assert all(p.submit_status == 0 and p.smsc_message_id for p in parts())


def test_an_early_receipt_is_not_taken_for_another_message_whose_id_is_its_other_reading(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """An SMSC with dense decimal ids: the receipt of "291" comes before its submit_sm_resp. Its
    hex reading, "123", is another message's id: it settled that one before, UNDELIV for a
    message nobody had a receipt for; now the receipt waits (redelivered) for its own part."""
    sender = active_sender(app)
    send(sender, numbers(2))

    def respond(conn: Conn, sequence: int, _: bytes, n: int) -> bytes:
        if n == 0:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"123\0")
        conn.send(receipt(7000, "291", "UNDELIV"))  # before its response
        conn.read()  # the worker's answer: deliver it again later
        time.sleep(0.05)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"291\0") + receipt(7001, "291", "UNDELIV")

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    dispatcher = make_worker(smsc, window=1)
    pump(dispatcher, lambda: set(statuses()) == {"submitted", "undeliverable"}, sender)
    for _ in range(10):
        dispatcher.step(timeout=0.02)
    db.session.expire_all()
    assert {p.smsc_message_id: p.receipt_stat for p in parts()} == {"123": None, "291": "UNDELIV"}
    answers = [(status, sequence) for _, command_id, status, sequence, _ in smsc.seen if command_id == DELIVER_SM_RESP]
    assert answers == [(ESME_RX_T_APPN, 7000), (0, 7001)]


def test_responses_out_of_order_duplicated_and_for_unknown_sequences(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    sender = active_sender(app)
    funded = sender.balance()
    send(sender, numbers(10))
    charged = sender.balance()

    def script(conn: Conn) -> None:
        conn.bind()
        pending: list[int] = []
        count = 0

        def collect(conn: Conn, sequence: int, _: bytes, n: int) -> bytes | None:
            nonlocal count
            pending.append(sequence)
            if len(pending) < 10:
                return None
            out = encode_pdu(SUBMIT_SM_RESP, 999999, b"x\0")  # never sent
            out += encode_pdu(SUBMIT_SM_RESP, max(pending) + 1, b"", 0x45)  # not sent yet
            out += encode_pdu(SUBMIT_SM_RESP, 0, b"zero\0")
            out += encode_pdu(GENERIC_NACK, 777777, b"", 3)
            for seq in reversed(pending):
                count += 1
                out += encode_pdu(SUBMIT_SM_RESP, seq, b"id%d\0" % count)
                out += encode_pdu(SUBMIT_SM_RESP, seq, b"", 0x45)  # a duplicate refusing it
                out += encode_pdu(GENERIC_NACK, seq, b"", 3)  # and a nack
            pending.clear()
            return out

        conn.serve(collect)

    smsc = hostile(script)
    dispatcher = make_worker(smsc)
    pump(dispatcher, lambda: statuses() == {"submitted": 10}, sender)
    for _ in range(20):
        dispatcher.step(timeout=0.02)
    print(dict(statuses()), dispatcher.stats, dispatcher.link.stats)
    assert len(smsc.submits) == 10 and sender.balance() == charged < funded
    assert statuses() == {"submitted": 10}
    assert sorted(p.smsc_message_id for p in parts()) == sorted(f"id{n}" for n in range(1, 11))


def _unbind(conn: Conn, sequence: int) -> bytes:
    return encode_pdu(UNBIND, 5000)


def _half(conn: Conn, sequence: int) -> bytes:
    conn.send(encode_pdu(SUBMIT_SM_RESP, sequence, b"half\0")[:10])
    time.sleep(0.05)
    raise OSError("closed mid-PDU")


def _silent(conn: Conn, sequence: int) -> None:
    return None


LINK_BREAKERS: dict[str, Callable[[Conn, int], bytes | None]] = {
    "unbind": _unbind,
    "close-mid-pdu": _half,
    "http": lambda conn, seq: b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    "length-0": lambda conn, seq: struct.pack(">IIII", 0, SUBMIT_SM_RESP, 0, seq),
    "length-15": lambda conn, seq: struct.pack(">IIII", 15, SUBMIT_SM_RESP, 0, seq) + b"x" * 20,
    "length-huge": lambda conn, seq: struct.pack(">IIII", 70000, SUBMIT_SM_RESP, 0, seq) + b"x" * 70000,
    "length-short-of-body": lambda conn, seq: (
        struct.pack(">IIII", 16, SUBMIT_SM_RESP, 0, seq) + b"abc\0" + encode_pdu(SUBMIT_SM_RESP, seq, b"abc\0")
    ),
    "length-past-body": lambda conn, seq: struct.pack(">IIII", 16 + 4 + 16, SUBMIT_SM_RESP, 0, seq) + b"abc\0",
    "silent": _silent,
}


@pytest.mark.parametrize("breaker", list(LINK_BREAKERS.values()), ids=list(LINK_BREAKERS))
def test_link_breakers(app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher], breaker: Any) -> None:
    sender = active_sender(app)
    send(sender, numbers(5))
    charged = sender.balance()

    def respond(conn: Conn, sequence: int, body: bytes, n: int) -> bytes | None:
        if conn.index <= 2:
            return breaker(conn, sequence)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"id%d\0" % n)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond, idle=5)))
    dispatcher = make_worker(smsc, window=3, link={"response_timeout": 0.5})
    pump(dispatcher, lambda: statuses() == {"submitted": 5}, sender, timeout=15)
    per_destination = Counter(sm.destination_addr for _, _, sm in smsc.submits)
    flagged = [r for r in log_results() if r.startswith("resent")]
    print(
        breaker,
        "connections",
        smsc.connections,
        "submits",
        len(smsc.submits),
        dict(per_destination),
        "flagged lines",
        len(flagged),
        [(p.seq, p.resent, p.smsc_message_id) for p in parts()],
        dispatcher.link.stats,
    )
    assert sender.balance() == charged
    assert dispatcher.link.stats.submits_sent - 5 == len(flagged) == dispatcher.stats.resent  # (the SMSC may close before reading all)
    assert all(p.resent for p in parts() if per_destination["86" + db.session.get(Message, p.message_id).recipient] > 1)


@pytest.mark.parametrize("first", ["refused", "never-answers", "garbage", "nack-0"])
def test_odd_binds_then_a_good_one(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher], first: str
) -> None:
    sender = active_sender(app)
    send(sender, numbers(4))

    def script(conn: Conn) -> None:
        if conn.index <= 2:
            _, _, seq, _ = conn.read()
            if first == "refused":
                conn.send(encode_pdu(0x80000009, seq, b"", 0x0D))
            elif first == "garbage":
                conn.send(b"SSH-2.0-OpenSSH_9.6\r\n" + b"\0" * 64)
            elif first == "nack-0":  # "bound"; then every submit: not bound
                conn.send(encode_pdu(0x80000000, seq))
                conn.serve(lambda c, s, b, n: encode_pdu(SUBMIT_SM_RESP, s, b"", 0x04), idle=3)
                return
            time.sleep(1.5)
            return
        conn.bind()
        conn.serve(lambda c, s, b, n: encode_pdu(SUBMIT_SM_RESP, s, b"id%d\0" % n))

    smsc = hostile(script)
    dispatcher = make_worker(smsc, window=2, link={"connect_timeout": 0.5})
    pump(dispatcher, lambda: set(statuses()) <= {"submitted", "refunded"}, sender, timeout=15)
    print(first, dict(statuses()), "connections", smsc.connections, "submits", len(smsc.submits), log_results())
    assert statuses() == {"submitted": 4}
