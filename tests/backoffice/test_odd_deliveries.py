"""What an odd or hostile SMSC may deliver, over real TCP from the simulator: malformed headers,
NULs, control characters, huge ids, unknown states, acknowledgements that are not replies. None
stops the worker (a failure there made it restart, resend its window and fail again on the same
PDU, for ever: found by a fuzzing helper); what is stored is what a person can read, and a
message's first final receipt stays."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from backoffice.clock import set_clock
from backoffice.extensions import db
from backoffice.models import Message, MessagePart, MobileOriginated, ReplyFragment, Unsubscribe
from backoffice.services.dispatcher import Dispatcher
from dispatch.simulator import SMSCSimulator
from dispatch.smpp_link import (
    DATA_SM,
    ESM_DELIVERY_RECEIPT,
    ESM_UDHI,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    ShortMessagePdu,
    encode_data_sm,
    encode_short_message,
)
from tests.backoffice import test_dispatcher
from tests.backoffice.test_dispatcher import all_in, drive, statuses
from tests.backoffice.test_messaging import active_sender, numbers, send
from tests.conftest import FIXED_NOW

smsc = test_dispatcher.smsc  # the dispatcher tests' fixtures: a seeded simulator, workers closed after the test
worker = test_dispatcher.worker

SERVICE = "106575000123"


def deliver_sm(
    esm_class: int = 0, text: bytes = b"", *, tlvs: dict[int, bytes] | None = None, source: str = "13800138000", coding: int = 0
) -> bytes:
    sm = ShortMessagePdu(source_addr=source, destination_addr=SERVICE, esm_class=esm_class, short_message=text, data_coding=coding)
    sm.tlvs.update(tlvs or {})
    return encode_short_message(sm)


def submitted(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher], recipients: list[str]
) -> tuple[SMSCSimulator, Dispatcher]:
    """A message sent to each of `recipients` and submitted; their receipts are the test's to send
    (the simulator's come an hour later)."""
    sender = active_sender(app)
    send(sender, recipients)
    simulator = smsc(receipt_delay=3600)
    dispatcher = worker(simulator)
    drive(dispatcher, all_in("submitted"), sender)
    return simulator, dispatcher


def taken_without_failing(dispatcher: Dispatcher, simulator: SMSCSimulator, bodies: list[bytes], *, receipts: bool = False) -> None:
    """Deliver `bodies` in one write; the worker takes them all (acknowledged, none to come again) and goes on."""
    dispatcher.run_until(lambda: dispatcher.link.bound)
    before = simulator.stats().deliveries_acked
    simulator.send_deliveries(bodies, receipts=receipts)
    dispatcher.run_until(lambda: simulator.stats().deliveries_acked == before + len(bodies), timeout=10)
    assert dispatcher._failure is None and simulator.stats().deliveries_unacked == 0


def replies() -> list[str]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(MobileOriginated.content).order_by(MobileOriginated.id)))


def test_malformed_and_hostile_replies_are_acknowledged_and_never_stop_the_worker(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    simulator = smsc()
    dispatcher = worker(simulator)
    good = [deliver_sm(text=f"reply {i}".encode(), source=str(13800000000 + i)) for i in range(200)]
    hostile = [
        deliver_sm(ESM_UDHI, b"\x03\x00\x03\x01hi"),  # a concatenation element cut short (was an IndexError out of step)
        deliver_sm(ESM_UDHI, b"\x04\x08\x04\x00\x01hi"),  # the same, 16-bit reference
        deliver_sm(text=b"a\x00b.cn"),  # GSM 7-bit "a@b.cn": "@" is 0x00 (PostgreSQL refused the NUL)
        deliver_sm(text=b"x\x00y", coding=0xF0),  # a NUL in a coding read as bytes
        deliver_sm(text=b"\x00\x00", coding=8),  # U+0000 in UCS-2
        deliver_sm(text="‮gnp.exe 退\x07订".encode("utf-16-be"), coding=8),  # a direction override and a BEL
        deliver_sm(0x08, b"ack"),  # an SME delivery acknowledgement: not a reply
        deliver_sm(0x10, b"manual ack"),
    ]
    taken_without_failing(dispatcher, simulator, [*good[:100], *hostile, *good[100:]])
    stored = replies()
    assert len(stored) == 200 + 6 and stored.count("reply 7") == 1  # the good ones of the same read are kept
    assert "a@b.cn" in stored and "x\ufffdy" in stored and "\ufffd" in stored and stored.count("hi") == 2
    assert "gnp.exe 退\ufffd订" in stored  # shown as it is: no override, the control marked
    assert not any(c in text for text in stored for c in "\x00\x07\u202e") and "ack" not in stored and "manual ack" not in stored


def test_a_reply_in_utf8_or_the_gsm_alphabet_reads_as_the_handset_wrote_it(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """data_coding 0 is the GSM 7-bit alphabet submit_sm sends in; bytes that are not septets are
    read as UTF-8 where they are (some gateways send 退订 so): it was Latin-1, and the TD was missed."""
    sender = active_sender(app)
    send(sender, ["13800138000"])
    simulator = smsc(receipt_delay=0.05)
    dispatcher = worker(simulator)
    drive(dispatcher, all_in("delivered"), sender)
    destination = simulator.received[0].source
    simulator.send_mo("13900139000", destination, "$5 @ noon_ok?")  # GSM: $ is 0x02, @ 0x00, _ 0x11
    dispatcher.run_until(lambda: dispatcher.stats.mobile_originated == 1)
    simulator.send_deliveries([deliver_sm(text="退订".encode(), source="13800138000").replace(SERVICE.encode(), destination.encode())])
    dispatcher.run_until(lambda: dispatcher.stats.mobile_originated == 2)
    assert replies() == ["$5 @ noon_ok?", "退订"]
    assert db.session.scalar(sa.select(Unsubscribe.number).where(Unsubscribe.account_id == sender.account.id)) == "13800138000"


def test_receipts_and_replies_an_smsc_sends_as_data_sm_are_read_and_acknowledged(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Some SMSCs deliver receipts (and replies) as data_sm: the link answered it with a
    generic_nack, so those messages stayed submitted for ever and the SMSC kept trying."""
    sender = active_sender(app)
    send(sender, ["13800138000", "13900139000"])
    simulator = smsc(receipt_delay=0.05, receipts_as="data_sm", fail_rate=0.5, seed=3)
    dispatcher = worker(simulator)
    drive(dispatcher, all_in("delivered", "undeliverable"), sender)
    destination = simulator.received[0].source
    reply = ShortMessagePdu(
        source_addr="13800138000", destination_addr=destination, short_message="退订".encode("utf-16-be"), data_coding=8
    )
    simulator.send_deliveries([encode_data_sm(reply)], command=DATA_SM)
    dispatcher.run_until(lambda: dispatcher.stats.mobile_originated == 1)
    dispatcher.run_until(lambda: simulator.stats().deliveries_acked == 3)
    stats = simulator.stats()
    assert stats.receipts_sent == 2 and stats.deliveries_unacked == 0 and stats.generic_nacks == 0
    assert dispatcher.stats.receipts == 2 and dispatcher.stats.receipts_unknown == 0
    assert statuses() == {"delivered": 1, "undeliverable": 1}  # (the seed fails one: the state came through)
    assert replies() == ["退订"]
    assert db.session.scalar(sa.select(Unsubscribe.number).where(Unsubscribe.account_id == sender.account.id)) == "13800138000"


def long_reply_part(reference: int, total: int, seq: int, text: str, destination: str) -> bytes:
    udh = bytes((5, 0, 3, reference, total, seq))
    return deliver_sm(ESM_UDHI, udh + text.encode("utf-16-be"), coding=8).replace(SERVICE.encode(), destination.encode())


def test_a_long_reply_is_stored_whole_once_though_the_worker_restarted_between_its_parts(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """The parts of a long reply waited in the worker's memory: a restart lost those that had come."""
    simulator, first = submitted(app, smsc, worker, ["13800138000"])
    destination = simulator.received[0].source
    taken_without_failing(first, simulator, [long_reply_part(9, 3, 3, "谢谢。", destination)])
    taken_without_failing(first, simulator, [long_reply_part(9, 3, 2, "明天下午到店，", destination)])
    first.close()
    assert replies() == [] and db.session.scalar(sa.select(sa.func.count()).select_from(ReplyFragment)) == 2

    second = worker(simulator, "restarted")
    parts = [long_reply_part(9, 3, 1, "收到，", destination), long_reply_part(9, 3, 2, "明天下午到店，", destination)]
    taken_without_failing(second, simulator, parts)  # the first part, and the second delivered again
    assert replies() == ["收到，明天下午到店，谢谢。"]
    taken_without_failing(second, simulator, [long_reply_part(9, 3, 3, "谢谢。", destination)])  # once more, after it was stored
    set_clock(lambda: FIXED_NOW + timedelta(minutes=2))
    second._next_fragment_sweep = 0.0
    second.run_until(lambda: db.session.scalar(sa.select(sa.func.count()).select_from(ReplyFragment)) == 0)
    assert replies() == ["收到，明天下午到店，谢谢。"]  # the parts delivered again made no second reply


def test_a_long_reply_whose_other_parts_never_come_is_stored_as_far_as_it_came(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    simulator, dispatcher = submitted(app, smsc, worker, ["13800138000"])
    destination = simulator.received[0].source
    taken_without_failing(dispatcher, simulator, [long_reply_part(7, 3, 1, "退订", destination)])
    dispatcher._next_fragment_sweep = 0.0
    for _ in range(3):
        dispatcher.step(timeout=0.02)
    assert replies() == []  # not a minute yet
    set_clock(lambda: FIXED_NOW + timedelta(seconds=61))
    dispatcher._next_fragment_sweep = 0.0
    dispatcher.run_until(lambda: replies() == ["退订"])
    assert db.session.scalar(sa.select(Unsubscribe.number)) == "13800138000"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ReplyFragment)) == 0


def test_odd_receipts_are_acknowledged_and_settle_nothing_they_do_not_say(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    simulator, dispatcher = submitted(app, smsc, worker, ["13800138000", "13900139000", "13700137000"])
    ids = {s.destination[2:]: s.message_id for s in simulator.received}
    first, second, third = ids["13800138000"], ids["13900139000"], ids["13700137000"]
    odd = [
        deliver_sm(ESM_DELIVERY_RECEIPT, b"stat:DELIVRD err:000", tlvs={TAG_RECEIPTED_MESSAGE_ID: b"7" * 4301 + b"\0"}),  # int() refused it
        deliver_sm(ESM_DELIVERY_RECEIPT, f"id:{first[:2]}\x00{first[2:]} stat:DELIVRD err:000".encode()),  # a NUL splits the id
        deliver_sm(ESM_DELIVERY_RECEIPT, f"id:{first} stat:DELIV\x00RD err:0\x000".encode()),  # and the stat: not a known one
        deliver_sm(ESM_DELIVERY_RECEIPT, f"id:{second} err:000".encode()),  # no stat at all: nothing final
        deliver_sm(ESM_DELIVERY_RECEIPT, f"id:{second} stat: err:000".encode()),
        deliver_sm(  # an empty receipted_message_id and a state SMPP 3.4 lacks: the text says it
            ESM_DELIVERY_RECEIPT,
            f"id:{third} stat:DELIVRD err:000".encode(),
            tlvs={TAG_RECEIPTED_MESSAGE_ID: b"\0", TAG_MESSAGE_STATE: b"\x00"},
        ),
    ]
    taken_without_failing(dispatcher, simulator, odd, receipts=True)
    db.session.expire_all()
    by_number = {m.recipient: m for m in db.session.scalars(sa.select(Message))}
    assert by_number["13900139000"].status == "submitted"  # a receipt that does not say settles nothing
    assert by_number["13700137000"].status == "delivered"
    assert by_number["13800138000"].status == "undeliverable"  # "DELIV RD" is no DELIVRD: a gateway's own code, as before
    assert dispatcher.stats.receipts_unknown == 2  # the huge id and the one a NUL cut


def test_a_messages_first_final_receipt_stays(app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]) -> None:
    """Found by a fuzzing helper: a later receipt, stale or contradicting, replaced the status."""
    simulator, dispatcher = submitted(app, smsc, worker, ["13800138000"])
    smsc_id = simulator.received[0].message_id

    def receipt(stat: str, esm_class: int = ESM_DELIVERY_RECEIPT) -> bytes:
        return deliver_sm(esm_class, f"id:{smsc_id} stat:{stat} err:000".encode())

    taken_without_failing(dispatcher, simulator, [receipt("ENROUTE", 0x20)], receipts=True)  # an intermediate notification
    assert statuses() == {"submitted": 1} and replies() == []
    taken_without_failing(dispatcher, simulator, [receipt("DELIVRD"), receipt("DELIVRD")], receipts=True)
    finished = dispatcher.stats.finished
    done_at = db.session.scalar(sa.select(Message.done_at))
    taken_without_failing(dispatcher, simulator, [receipt("UNDELIV"), receipt("ENROUTE", 0x20)], receipts=True)
    part: Any = db.session.scalar(sa.select(MessagePart))
    assert statuses() == {"delivered": 1} and part.receipt_stat == "DELIVRD"
    assert dispatcher.stats.finished == finished == 1 and db.session.scalar(sa.select(Message.done_at)) == done_at


def receipt_sm(smsc_id: str, stat: str, esm_class: int = ESM_DELIVERY_RECEIPT, extra: str = "") -> bytes:
    return deliver_sm(esm_class, f"id:{smsc_id} sub:001 dlvrd:001 stat:{stat} err:000{extra}".encode())


def test_intermediate_notifications_and_receipts_sent_as_acknowledgements_are_read_as_receipts(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: an intermediate notification (0x20) saying UNDELIV (a failed attempt the
    SMSC retries) became the result; receipts some SMSCs send as 0x08 were dropped, so their
    messages stayed submitted for ever; "stat: DELIVRD" and "Stat=DELIVRD" were not read."""
    simulator, dispatcher = submitted(app, smsc, worker, ["13800138000", "13900139000", "13700137000", "13600136000"])
    ids = {s.destination[2:]: s.message_id for s in simulator.received}
    bodies = [
        receipt_sm(ids["13800138000"], "UNDELIV", 0x20),
        receipt_sm(ids["13800138000"], "DELIVRD"),
        receipt_sm(ids["13900139000"], "DELIVRD", 0x08),
        deliver_sm(ESM_DELIVERY_RECEIPT, f"id:{ids['13700137000']} stat: DELIVRD err:000".encode()),
        deliver_sm(ESM_DELIVERY_RECEIPT, f"id:{ids['13600136000']} Stat=UNDELIV err:001".encode()),
    ]
    taken_without_failing(dispatcher, simulator, bodies, receipts=True)
    db.session.expire_all()
    assert {m.recipient: m.status for m in db.session.scalars(sa.select(Message))} == {
        "13800138000": "delivered", "13900139000": "delivered", "13700137000": "delivered", "13600136000": "undeliverable",
    }  # fmt: skip
    assert dispatcher.stats.receipts == 5 and dispatcher.stats.receipts_unknown == 0 and replies() == []


def test_a_carrier_named_after_the_message_settled_moves_its_charge_once(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: once a message was settled, the carrier was never recorded on it, so
    every further receipt naming it moved the same charge again."""
    from backoffice.models import UsageDay

    simulator, dispatcher = submitted(app, smsc, worker, ["13800138000", "13900139000", "13700137000"])
    smsc_id = next(s.message_id for s in simulator.received if s.destination == "8613800138000")
    taken_without_failing(dispatcher, simulator, [receipt_sm(smsc_id, "DELIVRD")], receipts=True)
    for _ in range(3):  # the carrier comes with the duplicates only
        taken_without_failing(dispatcher, simulator, [receipt_sm(smsc_id, "DELIVRD", extra=" network:46001")], receipts=True)
    db.session.expire_all()
    usage = {u.carrier: u.messages for u in db.session.scalars(sa.select(UsageDay).where(UsageDay.kind == "usage"))}
    assert usage == {"CMCC": 2, "CUCC": 1}
    moved = db.session.scalar(sa.select(Message).where(Message.recipient == "13800138000"))
    assert moved is not None and (moved.status, moved.reported_carrier) == ("delivered", "cucc")


def test_a_receipts_time_is_stored_as_every_other_time(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: the receipt's time went to the database without its column's type (no
    UTC conversion: 8 hours off on a PostgreSQL server in Asia/Shanghai)."""
    simulator, dispatcher = submitted(app, smsc, worker, ["13800138000"])
    if db.engine.dialect.name == "postgresql":
        dispatcher._session.execute(sa.text("SET TIME ZONE 'Asia/Shanghai'"))  # the worker's session, as on such a server
    taken_without_failing(dispatcher, simulator, [receipt_sm(simulator.received[0].message_id, "DELIVRD")], receipts=True)
    db.session.expire_all()
    part: Any = db.session.scalar(sa.select(MessagePart))
    assert part.receipt_at == part.submitted_at  # the test clock stands still
    if db.engine.dialect.name == "sqlite":
        raw = db.session.execute(sa.text("SELECT receipt_at, submitted_at FROM message_parts")).one()
        assert raw[0] == raw[1]


def at_once(first: tuple[Dispatcher, list[Any]], second: tuple[Dispatcher, list[Any]], *, interleaved: bool = False) -> None:
    """Two binds' reads taken at the same time: the first's transaction stays open half a second
    while the second takes its deliveries (`interleaved`: each takes its first delivery, then both
    go on together, so each holds what its first took while it takes its second). What either
    refused (to be delivered again) is then delivered again, as the SMSC does. Neither fails."""
    import threading
    import time

    holding, _ = first
    real_commit = holding._commit

    def slow_commit() -> None:
        time.sleep(0.5)  # not committed yet while the other bind takes its deliveries
        real_commit()

    holding._commit = slow_commit  # type: ignore[method-assign]
    together = threading.Barrier(2)
    for dispatcher, _ in (first, second) if interleaved else ():
        for name in ("_receipt", "_reply"):
            real = getattr(dispatcher, name)

            def then_wait(*args: Any, real: Any = real, seen: list[int] = [0]) -> Any:  # noqa: B006 (a counter per dispatcher)
                try:
                    return real(*args)
                finally:
                    seen[0] += 1
                    if seen[0] == 1:
                        with contextlib.suppress(threading.BrokenBarrierError):
                            together.wait(timeout=2)  # (SQLite: the other waits for the write lock; it breaks)

            setattr(dispatcher, name, then_wait)
    taken: dict[int, list[bool]] = {}
    threads = [
        threading.Thread(target=lambda n=n, d=d, b=b: taken.__setitem__(n, d._on_deliveries(b))) for n, (d, b) in enumerate((first, second))
    ]
    threads[0].start()
    time.sleep(0.0 if interleaved else 0.2)
    threads[1].start()
    for thread in threads:
        thread.join(30)
    holding._commit = real_commit  # type: ignore[method-assign]
    for dispatcher, _ in (first, second):
        for name in ("_receipt", "_reply"):
            dispatcher.__dict__.pop(name, None)
    for n, (dispatcher, batch) in enumerate((first, second)):
        assert dispatcher._failure is None, dispatcher._failure
        again = [delivery for delivery, took in zip(batch, taken[n], strict=True) if not took]
        assert not again or dispatcher._on_deliveries(again) == [True] * len(again)


LONG = "【学府教育】" + "明天上午九点开课，请准时到达教室。" * 6  # two parts


def submitted_on_two_binds(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher], sends: list[tuple[list[str], str]]
) -> tuple[Dispatcher, Dispatcher, list[list[str]]]:
    """Each (recipients, content) sent and submitted by one worker, a second worker bound to the
    same SMSC; the SMSC ids of each recipient's parts (their receipts are the test's to send)."""
    sender = active_sender(app)
    for recipients, content in sends:
        send(sender, recipients, content)
    simulator = smsc(receipt_delay=3600)
    first = worker(simulator, "worker-a")
    drive(first, all_in("submitted"), sender)
    second = worker(simulator, "worker-b")
    second.start()
    ids: dict[str, list[str]] = {}
    for submit in simulator.received:
        ids.setdefault(submit.destination, []).append(submit.message_id)
    return first, second, list(ids.values())


def long_and_short_submitted(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> tuple[SMSCSimulator, Dispatcher]:
    """A two-part message to 13800138000 and a one-part one to 13900139000, submitted; their
    receipts are the test's to send (the simulator's come an hour later)."""
    sender = active_sender(app)
    send(sender, ["13800138000"], LONG)
    send(sender, ["13900139000"], "【学府教育】明天开课。")
    simulator = smsc(receipt_delay=3600)
    dispatcher = worker(simulator)
    drive(dispatcher, all_in("submitted"), sender)
    return simulator, dispatcher


def delivered(smsc_id: str, extra: str = "") -> Any:
    from dispatch.smpp_link import Receipt

    return Receipt(smsc_id, "DELIVRD", "000", f"id:{smsc_id} stat:DELIVRD err:000{extra}")


def test_two_parts_final_receipts_taken_at_once_on_two_binds_settle_the_message(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review (PostgreSQL): each transaction missed the other's part, and the message
    stayed submitted for ever. The second now waits for the first's commit and reads its part."""
    first, second, (ids,) = submitted_on_two_binds(app, smsc, worker, [(["13800138000"], LONG)])
    assert len(ids) == 2
    at_once((first, [delivered(ids[0])]), (second, [delivered(ids[1])]))
    assert statuses() == {"delivered": 1}


def test_two_long_messages_receipts_taken_in_opposite_orders_on_two_binds_do_not_deadlock(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review (PostgreSQL): each bind waited for the message row the other held."""
    first, second, ((m1, m2), (n1, n2)) = submitted_on_two_binds(app, smsc, worker, [(["13800138000", "13900139000"], LONG)])
    at_once((first, [delivered(m1), delivered(n1)]), (second, [delivered(n2), delivered(m2)]), interleaved=True)
    assert statuses() == {"delivered": 2}


def test_duplicate_receipts_taken_in_opposite_orders_on_two_binds_do_not_deadlock(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review (PostgreSQL): an SMSC delivering the same receipts again on another bind,
    in another order, had each bind wait for the part row the other held. A batch now takes its
    receipts in the order of their ids, so every bind locks parts in one order."""
    first, second, ((a,), (b,)) = submitted_on_two_binds(app, smsc, worker, [(["13800138000", "13900139000"], "【学府教育】明天开课。")])
    at_once((first, [delivered(a), delivered(b)]), (second, [delivered(b), delivered(a)]), interleaved=True)
    assert statuses() == {"delivered": 2}


def test_two_parts_of_a_long_reply_taken_at_once_on_two_binds_make_one_reply(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Each part's transaction must see the other's, or neither stores the reply (PostgreSQL:
    the second finds the reply's lock taken and is delivered again)."""
    from dispatch.smpp_link import MobileOriginated as Reply

    simulator, first = submitted(app, smsc, worker, ["13800138000"])
    destination = simulator.received[0].source
    second = worker(simulator, "worker-b")
    second.start()

    def part(seq: int, text: str) -> Reply:
        return Reply("8613800138000", destination, text, 8, (5, 2, seq))

    at_once((first, [part(1, "好的，")]), (second, [part(2, "周六见。")]))
    assert replies() == ["好的，周六见。"]


def test_two_long_replies_parts_taken_in_opposite_orders_on_two_binds_do_not_deadlock(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review (PostgreSQL): each bind waited for the lock of the reply the other held."""
    from dispatch.smpp_link import MobileOriginated as Reply

    simulator, first = submitted(app, smsc, worker, ["13800138000", "13900139000"])
    destination = simulator.received[0].source
    second = worker(simulator, "worker-b")
    second.start()

    def x(seq: int, text: str) -> Reply:
        return Reply("8613800138000", destination, text, 8, (11, 2, seq))

    def y(seq: int, text: str) -> Reply:
        return Reply("8613900139000", destination, text, 8, (12, 2, seq))

    at_once((first, [x(1, "甲一"), y(2, "乙二")]), (second, [y(1, "乙一"), x(2, "甲二")]), interleaved=True)
    assert sorted(replies()) == ["乙一乙二", "甲一甲二"]


def test_a_new_long_reply_under_a_reference_just_used_is_its_own_reply(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: a handset reusing its 8-bit reference within the minute lost its second
    reply (a TD included), taken for the first one's parts delivered again."""
    simulator, dispatcher = submitted(app, smsc, worker, ["13800138000"])
    destination = simulator.received[0].source
    first = [long_reply_part(5, 2, 1, "第一条，", destination), long_reply_part(5, 2, 2, "完。", destination)]
    taken_without_failing(dispatcher, simulator, first)
    taken_without_failing(dispatcher, simulator, [long_reply_part(5, 2, 2, "完。", destination)])  # delivered again
    taken_without_failing(dispatcher, simulator, [long_reply_part(5, 2, 1, "退", destination)])
    taken_without_failing(dispatcher, simulator, [long_reply_part(5, 2, 2, "订", destination)])
    assert replies() == ["第一条，完。", "退订"]
    assert db.session.scalar(sa.select(Unsubscribe.number)) == "13800138000"


def test_receipts_for_a_long_message_whose_row_another_transaction_holds_wait_for_it_and_settle_it(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: handing such receipts back to the SMSC left the message submitted for
    ever if the SMSC did not deliver them again. Now the worker commits what its batch did and
    waits for the row, holding nothing else."""
    import threading
    import time

    sender = active_sender(app)
    send(sender, ["13800138000"], LONG)
    simulator = smsc(receipt_delay=3600)
    dispatcher = worker(simulator)
    drive(dispatcher, all_in("submitted"), sender)
    ids = [s.message_id for s in simulator.received]
    other = db.engine.connect()
    holding = other.begin()
    other.execute(sa.update(Message).values(updated_at=Message.updated_at))  # another transaction holds the row
    releaser = threading.Timer(0.5, holding.commit)
    releaser.start()
    try:
        started = time.monotonic()
        taken = dispatcher._on_deliveries([delivered(i) for i in ids])
        assert taken == [True, True] and time.monotonic() - started >= 0.4
    finally:
        releaser.join()
        other.close()
    assert statuses() == {"delivered": 1}


def test_a_batch_that_settled_a_long_message_does_not_hold_its_row_while_it_waits_for_another(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review (PostgreSQL): a batch kept a long message's row locked to its end, so a
    later receipt that waited for a row another transaction held (another worker marking
    messages, here N) closed a circle when that transaction came to the long message's row (M)."""
    import threading
    import time

    from dispatch.smpp_link import normalise_message_id

    simulator, dispatcher = long_and_short_submitted(app, smsc, worker)
    by_number: dict[str, list[str]] = {}
    for submit in simulator.received:
        by_number.setdefault(submit.destination, []).append(submit.message_id)
    (m1, m2), (n,) = by_number.values()
    assert max(map(normalise_message_id, (m1, m2))) < normalise_message_id(n)  # the batch takes M before N
    ids = dict(db.session.execute(sa.select(Message.recipient, Message.id)).all())
    db.session.commit()
    other = db.engine.connect()
    holding = other.begin()
    other.execute(sa.update(Message).where(Message.id == ids["13900139000"]).values(updated_at=Message.updated_at))  # N
    taken: list[list[bool]] = []
    batch = threading.Thread(target=lambda: taken.append(dispatcher._on_deliveries([delivered(n), delivered(m2), delivered(m1)])))
    batch.start()
    try:
        time.sleep(0.5)  # the batch has settled M and waits for N
        other.execute(sa.update(Message).where(Message.id == ids["13800138000"]).values(updated_at=Message.updated_at))  # then M
        holding.commit()
    finally:
        batch.join(30)
        other.close()
    assert dispatcher._failure is None, dispatcher._failure
    assert taken == [[True, True, True]]
    assert statuses() == {"delivered": 2}


def test_a_batch_of_receipts_for_long_and_short_messages_is_one_transaction(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review of the fix above: letting a long message's row go before every next
    delivery made a batch of N receipts N commits on PostgreSQL. It commits only when another
    transaction has a row it needs."""
    sender = active_sender(app)
    send(sender, numbers(20), LONG)
    send(sender, numbers(20, start=13900100000), "【学府教育】明天开课。")
    simulator = smsc(receipt_delay=3600)
    dispatcher = worker(simulator)
    drive(dispatcher, all_in("submitted"), sender)
    receipts = [delivered(s.message_id) for s in simulator.received]
    assert len(receipts) == 60
    before = dispatcher.stats.commits
    assert dispatcher._on_deliveries(receipts) == [True] * 60
    assert dispatcher.stats.commits - before == 1
    assert statuses() == {"delivered": 40}


def _second_part_refused_while_held(dispatcher: Dispatcher, recipient: str) -> str:
    """The long message to `recipient` back in `dispatcher`'s hands as when its first part was
    accepted (recorded, committed) and the SMSC's refusal of its second part has just come in,
    to be recorded by the worker's next transaction. Returns the SMSC id of part 1. (A review's
    reproduction, shared by the two tests below.)"""
    from collections import deque

    from backoffice.clock import utcnow
    from backoffice.services.dispatcher import _Work
    from dispatch.smpp_link import ESME_RSUBMITFAIL, OutgoingPart, SubmitResult

    message = db.session.execute(sa.select(Message).where(Message.recipient == recipient, Message.segments == 2)).scalar_one()
    first = db.session.execute(sa.select(MessagePart).where(MessagePart.message_id == message.id, MessagePart.seq == 1)).scalar_one()
    db.session.execute(
        sa.update(Message).where(Message.id == message.id)
        .values(status="queued", claimed_by=dispatcher.worker, claimed_at=utcnow(), submitted_at=None)
    )  # fmt: skip
    db.session.execute(
        sa.update(MessagePart).where(MessagePart.message_id == message.id, MessagePart.seq == 2)
        .values(submit_status=None, smsc_message_id=None, submitted_at=None)
    )  # fmt: skip
    db.session.commit()
    work = _Work(message.id, message.account_id, message.recipient, message.content, 2, message.valid_until, deque())
    work.accepted[1] = first.smsc_message_id or ""
    work.live, work.started = 1, True
    dispatcher._works[message.id] = work
    dispatcher._open += 1
    dispatcher._resps.append(SubmitResult(OutgoingPart((message.id, 2), "106", "86" + recipient, b"x"), ESME_RSUBMITFAIL, "", 1))
    return first.smsc_message_id or ""


def test_a_batch_refunding_a_long_message_and_a_batch_holding_it_do_not_deadlock(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review (PostgreSQL): a batch recorded a refusal first and refunded its message
    at its end, so it waited for that message's row while holding the part rows of its receipts;
    another bind's batch held the message's row (a receipt of its first part) and waited for one
    of those parts (the same receipt delivered again). The refusals are now committed first."""
    first, second, ids = submitted_on_two_binds(app, smsc, worker, [(["13800138000"], LONG), (["13900139000"], "【学府教育】明天开课。")])
    (s,) = next(i for i in ids if len(i) == 1)
    c1 = _second_part_refused_while_held(first, "13800138000")
    at_once((first, [delivered(s)]), (second, [delivered(c1), delivered(s)]), interleaved=True)
    assert statuses() == {"refunded": 1, "delivered": 1}


def test_two_batches_each_refunding_the_long_message_the_other_holds_do_not_deadlock(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    first, second, _ = submitted_on_two_binds(app, smsc, worker, [(["13800138000", "13900139000"], LONG)])
    a1 = _second_part_refused_while_held(first, "13800138000")
    b1 = _second_part_refused_while_held(second, "13900139000")
    at_once((first, [delivered(b1)]), (second, [delivered(a1)]), interleaved=True)
    assert statuses() == {"refunded": 2}


def test_the_same_td_replies_taken_in_opposite_orders_on_two_binds_do_not_deadlock(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review (PostgreSQL): each bind waited for the unsubscribe the other had made.
    Replies are now taken by sender."""
    from dispatch.smpp_link import MobileOriginated as Reply

    simulator, first = submitted(app, smsc, worker, ["13800138000", "13900139000"])
    destination = simulator.received[0].source
    second = worker(simulator, "worker-b")
    second.start()

    def td(number: str) -> Reply:
        return Reply("86" + number, destination, "TD", 0, None)

    at_once((first, [td("13800138000"), td("13900139000")]), (second, [td("13900139000"), td("13800138000")]), interleaved=True)
    assert set(db.session.scalars(sa.select(Unsubscribe.number))) == {"13800138000", "13900139000"}


def test_receipts_naming_the_carriers_of_two_ported_numbers_in_opposite_orders_on_two_binds_do_not_deadlock(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review (PostgreSQL): each bind waited for the ported number the other had written."""
    from backoffice.models import PortedNumber

    numbers = ["13800138000", "13900139000"]
    sends = [(numbers, "【学府教育】明天上午九点开课。"), (numbers, "【学府教育】后天上午九点开课。")]
    first, second, ((a1, a2), (b1, b2)) = submitted_on_two_binds(app, smsc, worker, sends)
    ported = " carrier:ctcc"
    at_once(
        (first, [delivered(a1, ported), delivered(b1, ported)]), (second, [delivered(b2, ported), delivered(a2, ported)]), interleaved=True
    )
    assert statuses() == {"delivered": 4}
    assert dict(db.session.execute(sa.select(PortedNumber.number, PortedNumber.carrier)).all()) == {
        "13800138000": "ctcc",
        "13900139000": "ctcc",
    }


def test_a_receipt_id_with_a_digit_that_is_not_ascii_is_unknown_not_a_crash(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: with SMSC_RECEIPT_ID_FORMAT=decimal, "12²" passed str.isdigit() and
    int() refused it, failing the worker on every redelivery."""
    simulator = smsc()
    dispatcher = worker(simulator, receipt_id_format="decimal")
    dispatcher.run_until(lambda: dispatcher.link.bound)
    simulator.send_receipt("12\xb2", "DELIVRD")
    dispatcher.run_until(lambda: dispatcher.stats.receipts_unknown == 1 or dispatcher._failure is not None, timeout=5)
    assert dispatcher._failure is None


def test_a_long_message_whose_parts_the_smsc_answered_with_one_id_settles(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    """Found by a review: some gateways answer every part of a long message with one message id,
    and send a receipt per part or one for the whole; only the last part took them, and the
    message stayed submitted for ever. Now each receipt goes to every part under the id (of the
    latest message that has it: ids are reused), its first final one kept."""
    sender = active_sender(app)
    send(sender, ["13800138000"], LONG)
    send(sender, ["13900139000"], LONG)
    simulator = smsc(receipt_delay=3600)
    dispatcher = worker(simulator)
    drive(dispatcher, all_in("submitted"), sender)
    ids = dict(db.session.execute(sa.select(Message.recipient, Message.id)).all())
    db.session.execute(sa.update(MessagePart).where(MessagePart.message_id == ids["13800138000"]).values(smsc_message_id="abc123"))
    db.session.execute(sa.update(MessagePart).where(MessagePart.message_id == ids["13900139000"]).values(smsc_message_id="def456"))
    db.session.commit()
    assert dispatcher._on_deliveries([delivered("ABC123")]) == [True]  # one receipt for the whole message
    assert dispatcher._on_deliveries([delivered("def456"), delivered("def456")]) == [True, True]  # one per part
    db.session.expire_all()
    assert statuses() == {"delivered": 2}
    assert set(db.session.scalars(sa.select(MessagePart.receipt_stat))) == {"DELIVRD"}
