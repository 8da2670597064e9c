"""When the worker stops trying (scripted SMSCs over real TCP): a throttled part of a message
refunded meanwhile is taken back from the link, not sent; a part the link keeps dropping on is
resent a bounded number of times, then its message is refunded; a message whose validity runs out
with only some parts accepted is refunded in full; a worker whose leases ran out while it stalled
stops before it sends anything more, and the worker that took its messages over finishes them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.clock import set_clock
from backoffice.extensions import db
from backoffice.models import Message
from backoffice.models.messaging import CLAIMABLE
from backoffice.services.dispatcher import Dispatcher, DispatchSettings, LeaseLost
from dispatch.simulator import SMSCSimulator
from dispatch.smpp_link import (
    ESME_RMSGQFUL,
    ESME_RSUBMITFAIL,
    ESME_RTHROTTLED,
    SUBMIT_SM_RESP,
    LinkConfig,
    decode_short_message,
    encode_pdu,
)
from tests.backoffice import hostile_smsc, test_hostile_smsc
from tests.backoffice.hostile_smsc import Conn, HostileSmsc
from tests.backoffice.test_dispatcher import FAST, FAST_LINK, statuses
from tests.backoffice.test_hostile_smsc import log_results, parts, pump
from tests.backoffice.test_messaging import SIGNED, active_sender, numbers, send
from tests.conftest import FIXED_NOW

hostile = hostile_smsc.hostile
make_worker = test_hostile_smsc.make_worker

TWO_PARTS = SIGNED + "会员积分将于本月底清零，请及时登录小程序兑换礼品，详情请咨询门店客服或拨打热线。本短信由系统自动发送，请勿直接回复。"


def part_number(body: bytes) -> int:
    """The part number in a concatenated submit_sm's UDH (05 00 03 ref total seq)."""
    return decode_short_message(body).short_message[5]


def test_a_throttled_part_of_a_message_refunded_meanwhile_is_taken_back_not_sent(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Part 1 refused, part 2 throttled (the SMSC would take it at the next try): the message is
    refunded, and part 2 does not go out again from the link's retry queue."""
    sender = active_sender(app)
    funded = sender.balance()
    send(sender, numbers(1), content=TWO_PARTS)
    tries = Counter[int]()

    def respond(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        seq = part_number(body)
        tries[seq] += 1
        if seq == 1:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RSUBMITFAIL)
        if tries[seq] == 1:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RTHROTTLED)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"part2\0")

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    dispatcher = make_worker(smsc, link={"throttle_backoff": 1.0, "throttle_backoff_max": 1.0})  # (the refusal is recorded long before)
    pump(dispatcher, lambda: statuses() == {"refunded": 1}, sender)
    dispatcher.run_until(lambda: dispatcher.open_parts == 0, timeout=3)
    for _ in range(60):  # 1.2 s: past the link's backoff
        dispatcher.step(timeout=0.02)

    assert tries == {1: 1, 2: 1}
    assert dispatcher.link.waiting_retry == 0 and dispatcher.open_parts == 0
    assert [(p.seq, p.submit_status, p.smsc_message_id) for p in parts()] == [(1, ESME_RSUBMITFAIL, None), (2, ESME_RTHROTTLED, None)]
    assert sender.balance() == funded


def test_a_part_the_link_keeps_dropping_on_is_resent_at_most_the_limit_then_refunded(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    sender = active_sender(app)
    funded = sender.balance()
    send(sender, numbers(2))

    def drop(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        raise ConnectionResetError("the SMSC drops the link on every submit")

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(drop)))
    dispatcher = make_worker(smsc, resend_limit=3)
    pump(dispatcher, lambda: statuses() == {"refunded": 2}, sender, timeout=15)

    # The first session answered nothing (both parts on the wire, the link dropped at the first):
    # not counted. Then the link sends one part at a time, once its enquire_link is answered, so
    # each loss counts against the part that was alone on the wire: 4 more tries of each.
    assert dispatcher.link.stats.submits_sent == 2 + 2 * 4 and dispatcher.stats.resent == 2 + 2 * 3
    assert sum(line.startswith("resent: ") for line in log_results()) == 2 + 2 * 3
    errors = set(db.session.scalars(sa.select(Message.error)))
    assert errors == {"第 1/1 条提交时与运营商网关的连接已中断 4 次，始终未得到应答，不再重发，已退款"}
    assert all(p.resent and p.submit_status is None for p in parts())  # possibly sent: left as they are
    assert sender.balance() == funded and dispatcher.open_parts == 0


def test_parts_a_refunded_message_left_without_a_response_do_not_count_as_in_flight_for_ever(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher], smsc: Callable[..., SMSCSimulator]
) -> None:
    """Found by a review: the part a message refunded as lost in flight too often leaves without a
    response (possibly sent: kept so) counted as a part in flight for every worker, for ever, so
    every bind bounced (ESME_RX_T_APPN) each receipt in the other base and each unknown one for
    the whole receipt_grace, with nothing in flight. Only parts of messages still to be sent count."""
    sender = active_sender(app)
    send(sender, numbers(1, start=13900000000))

    def drop(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        raise ConnectionResetError("the SMSC drops the link on every submit")

    bad = hostile(lambda conn: (conn.bind(), conn.serve(drop)))
    first = make_worker(bad)
    pump(first, lambda: statuses() == {"refunded": 1}, sender, timeout=15)
    first.close()
    assert [p.submit_status for p in parts()] == [None]

    send(sender, numbers(20))
    simulator = smsc(receipt_delay=0.0, receipt_id_format="decimal", seed=7)
    sending = Dispatcher(app, LinkConfig(port=simulator.port, window=10, bind_mode="transmitter", **FAST_LINK), "tx", settings=FAST)
    try:
        pump(sending, lambda: statuses()["submitted"] == 20, sender)
    finally:
        sending.close()
    settings = DispatchSettings(**{**vars(FAST), "receipt_grace": 2.0})
    receiving = Dispatcher(app, LinkConfig(port=simulator.port, window=10, bind_mode="receiver", **FAST_LINK), "rx", settings=settings)
    try:
        started = time.monotonic()
        pump(receiving, lambda: statuses()["delivered"] == 20, sender)
        took = time.monotonic() - started
    finally:
        receiving.close()
    assert took < 1.5 and simulator.stats().receipts_sent == 20  # each read at once, none bounced


def test_a_message_whose_validity_ran_out_with_some_parts_accepted_is_refunded_in_full(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    sender = active_sender(app)
    funded = sender.balance()
    send(sender, numbers(1), content=TWO_PARTS)

    def respond(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        if part_number(body) == 1:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"part1\0")
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RTHROTTLED)  # for ever

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(respond)))
    dispatcher = make_worker(smsc, link={"throttle_retry_limit": 0})
    pump(dispatcher, lambda: dispatcher.stats.parts_throttled_out >= 2, sender)
    set_clock(lambda: FIXED_NOW + timedelta(hours=49))
    pump(dispatcher, lambda: statuses() == {"refunded": 1}, sender)

    message = db.session.scalars(sa.select(Message)).one()
    assert message.error == "超过有效期仍未能提交全部 2 条（运营商已接收 1 条），已退款"
    assert sender.balance() == funded


def test_a_part_whose_destinations_queue_stays_full_is_tried_until_its_validity_then_refunded(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """A part answered ESME_RMSGQFUL (a temporary status) for ever waits ever longer between its
    tries, but never past its message's validity: the message is refunded when it passes, not
    sent late nor held a wait longer (here the first wait alone, 100 s, would outlast it)."""
    sender = active_sender(app)
    funded = sender.balance()
    send(sender, numbers(1))
    valid_until = db.session.scalars(sa.select(Message.valid_until)).one()
    started = time.monotonic()
    # The validity ends 3 s on (0.5 s flaked on a busy machine: the bind took longer, and the
    # message expired before its first try); the first wait alone, 100 s, is far longer.
    set_clock(lambda: valid_until - timedelta(seconds=3) + timedelta(seconds=time.monotonic() - started))
    smsc = hostile(
        lambda conn: (conn.bind(), conn.serve(lambda conn, sequence, body, n: encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RMSGQFUL)))
    )
    dispatcher = make_worker(smsc, throttle_requeue=100.0, temporary_retry_max=3600.0)
    pump(dispatcher, lambda: statuses() == {"refunded": 1}, sender, timeout=30)
    assert time.monotonic() - started < 30.0 and len(smsc.submits) == 1
    assert db.session.scalars(sa.select(Message.error)).one() == "超过有效期仍未能提交给运营商，已退款"
    assert sender.balance() == funded and not any(p.resent for p in parts())


def test_a_worker_whose_leases_ran_out_stops_before_sending_more_and_the_new_holder_finishes(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    sender = active_sender(app)
    send(sender, numbers(40))

    smsc = hostile(
        lambda conn: (conn.bind(), conn.serve(lambda conn, sequence, body, n: encode_pdu(SUBMIT_SM_RESP, sequence, b"m%d\0" % n)))
    )
    stalled = make_worker(smsc, batch=40)
    stalled.run_until(lambda: stalled.link.stats.submits_sent > 0, timeout=5)
    # It stalled past its lease; another worker took its messages over.
    db.session.execute(sa.update(Message).where(Message.status.in_(CLAIMABLE)).values(claimed_by="other-worker"))
    db.session.commit()
    sent = stalled.link.stats.submits_sent
    stalled._next_renewal = 0.0  # its renewal is due
    with pytest.raises(LeaseLost):
        stalled.step(timeout=0.02)
    with pytest.raises(LeaseLost):
        stalled.step(timeout=0.02)
    assert stalled.link.stats.submits_sent == sent < 40
    stalled.close()

    other = make_worker(smsc)
    other.worker = "other-worker"  # (restarted under its name: it takes its leases back at once)
    pump(other, lambda: statuses() == {"submitted": 40}, sender)
    per_destination = Counter(sm.destination_addr for _, _, sm in smsc.submits)
    assert len(per_destination) == 40
    flagged = {"86" + db.session.get(Message, p.message_id).recipient for p in parts() if p.resent}
    assert {d for d, n in per_destination.items() if n > 1} <= flagged


def test_a_worker_that_stalls_inside_the_links_wait_sends_nothing_more_once_its_renewal_is_due(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: the renewal ran only at the top of a turn, and a stall inside the
    link's wait (where a worker spends its time) was followed by more parts before it."""
    sender = active_sender(app)
    send(sender, numbers(40))
    smsc = hostile(
        lambda conn: (conn.bind(), conn.serve(lambda conn, sequence, body, n: encode_pdu(SUBMIT_SM_RESP, sequence, b"m%d\0" % n)))
    )
    stalled = make_worker(smsc, batch=40, link={"max_tps": 400})  # (parts wait in the worker for the rate: some are ready)
    stalled.run_until(lambda: stalled.link.stats.submits_sent >= 3, timeout=5)
    at_takeover: list[int] = []
    real_meanwhile = stalled._meanwhile

    def stall() -> None:  # the link calls it right before it waits for the SMSC
        if not at_takeover and stalled._ready:
            db.session.execute(sa.update(Message).where(Message.status.in_(CLAIMABLE)).values(claimed_by="other-worker"))
            db.session.commit()
            stalled._next_renewal = 0.0  # (as if the wait had outlasted a third of the lease)
            at_takeover.append(stalled.link.stats.submits_sent)
        real_meanwhile()

    stalled._meanwhile = stall  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        for _ in range(200):
            stalled.step(timeout=0.05)
    assert at_takeover and stalled.link.stats.submits_sent == at_takeover[0] < 40


def test_an_smsc_that_takes_every_session_for_unbound_is_bound_again_ever_more_slowly(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: each bind reset the wait, so a worker bound again every half second for
    as long as the SMSC answered ESME_RINVBNDSTS (nothing is refunded: the parts wait in the queue)."""
    sender = active_sender(app)
    send(sender, numbers(2))
    charged = sender.balance()
    smsc = hostile(lambda conn: (conn.bind(), conn.serve(lambda conn, sequence, body, n: encode_pdu(SUBMIT_SM_RESP, sequence, b"", 0x04))))
    dispatcher = make_worker(smsc, link={"reconnect_backoff": 0.1, "reconnect_backoff_max": 30.0})
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        dispatcher.step(timeout=0.02)
    # Binds at about 0, 0.1, 0.3, 0.7, 1.5 s (each wait twice the last); it was one every 0.1 s.
    assert 3 <= smsc.connections <= 6
    assert statuses() == {"queued": 2} and sender.balance() == charged


def test_a_failed_transaction_leaves_nothing_for_a_later_one_to_apply(
    app: Flask, hostile: Callable[..., HostileSmsc], make_worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: a rolled-back transaction's refunds (money moves at a transaction's end)
    stayed pending, and a second read of the same turn could give the money back of a message
    whose refund mark was rolled back. Its pending work goes with it, and the worker takes no
    more deliveries (they are delivered again to its successor)."""
    from dispatch.smpp_link import Receipt

    sender = active_sender(app)
    send(sender, numbers(1))
    charged = sender.balance()
    (message_id,) = db.session.scalars(sa.select(Message.id))
    smsc = hostile(lambda conn: (conn.bind(), conn.serve(lambda conn, sequence, body, n: None)))
    dispatcher = make_worker(smsc)
    with pytest.raises(RuntimeError), dispatcher._failure_stops():
        dispatcher._refusals = {"运营商网关拒绝": [message_id]}  # as a turn leaves them to its end
        dispatcher._ported = {"13800138000": (message_id, "ctcc")}
        raise RuntimeError("the database went away")
    assert dispatcher._refusals == {} and dispatcher._ported == {} and dispatcher._cancelled == []
    with pytest.raises(RuntimeError):
        dispatcher._on_deliveries([Receipt("abc", "DELIVRD", "000", "id:abc stat:DELIVRD err:000")])
    assert sender.balance() == charged and statuses() == {"queued": 1}
