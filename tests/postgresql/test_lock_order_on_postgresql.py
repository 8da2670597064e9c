"""Intake and the dispatcher take their locks in one order on PostgreSQL (an account's row, then
its usage rows, then the send log's head), so neither waits for the other in a circle: found
by a review, a turn that refunded one account, appended its send-log line and then refunded
another deadlocked with an intake request of the second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from backoffice.clock import utcnow
from backoffice.extensions import db
from backoffice.models import Message, MessagePart, SubAccount
from backoffice.services.message_queue import refund_messages_failed
from backoffice.services.messaging import accept_messages, message_counts
from backoffice.services.send_log import append_send_log, verify_chain
from tests.backoffice.test_messaging import SIGNED, active_sender, numbers, send


def _session() -> Session:
    """A session of its own that gives up after 10 s waiting for a lock (a deadlock is reported sooner)."""
    session = Session(db.engine)
    session.execute(sa.text("SET lock_timeout = '10s'"))
    session.commit()
    return session


def _race_with_intake(app: Flask, sub_account_id: int, turn: Session, end_of_turn: Callable[[], object]) -> list[BaseException]:
    """An intake request of the sub-account in a session of its own; once it holds its account
    and goes on to the send log, `end_of_turn` in `turn`, then its commit. The errors of either."""
    request = _session()
    errors: list[BaseException] = []

    def intake() -> None:
        with app.app_context():
            try:
                sub = request.get(SubAccount, sub_account_id)
                accept_messages(request, sub_account=sub, recipients=numbers(1, start=13700100000), content=SIGNED)
                request.commit()
            except BaseException as error:  # noqa: BLE001 - reported to the caller
                request.rollback()
                errors.append(error)

    thread = threading.Thread(target=intake)
    thread.start()
    time.sleep(0.5)
    try:
        end_of_turn()
        turn.commit()
    except BaseException as error:  # noqa: BLE001 - reported to the caller
        turn.rollback()
        errors.append(error)
    thread.join(20)
    turn.close()
    request.close()
    return errors


def test_a_turn_refunding_two_accounts_does_not_deadlock_with_intake(app: Flask) -> None:
    first, second = active_sender(app), active_sender(app, customer__name="乙公司")
    (mine,) = (m["id"] for m in send(first, numbers(1)).messages)
    (other,) = (m["id"] for m in send(second, numbers(1, start=13900100000)).messages)
    db.session.execute(sa.update(Message).where(Message.id.in_([mine, other])).values(claimed_by="w1"))
    db.session.commit()
    turn = _session()
    lines: list = []
    assert refund_messages_failed(turn, {"运营商网关拒绝": [other]}, worker="w1", lines=lines) == 1  # the turn's first refund

    def end_of_turn() -> None:
        assert refund_messages_failed(turn, {"超过有效期": [mine]}, worker="w1", lines=lines) == 1  # waits for the request
        append_send_log(turn, lines, at=utcnow())  # the turn's lines, last

    errors = _race_with_intake(app, first.sub.id, turn, end_of_turn)
    assert errors == []
    for sender in (first, second):
        assert message_counts(db.session, sender.account.id).balanced
    statuses = dict(db.session.execute(sa.select(Message.id, Message.status).where(Message.id.in_([mine, other]))).all())
    assert statuses == {mine: "refunded", other: "refunded"}
    assert verify_chain(db.session) == []


def test_a_turn_that_takes_a_td_reply_and_refunds_another_account_does_not_deadlock_with_intake(app: Flask) -> None:
    """Found by the second review: the TD reply's cancel gave its money back and logged at once
    (the send log's head), before the turn's refund of another account, whose intake request
    held that account and waited for the head. The dispatcher's own `_log` is driven here."""
    from backoffice.services.dispatcher import Dispatcher
    from dispatch.smpp_link import LinkConfig

    first, second = active_sender(app, "sms_business_service"), active_sender(app, customer__name="乙公司")
    number = numbers(1, start=13600100000)[0]
    (waiting,) = (m["id"] for m in send(first, [number]).messages)  # queued, no worker holds it: the TD cancels it
    (refused,) = (m["id"] for m in send(second, numbers(1, start=13900100000)).messages)
    db.session.execute(sa.update(Message).where(Message.id == refused).values(claimed_by="w1"))
    db.session.commit()
    turn = _session()
    dispatcher = Dispatcher(lambda: turn, LinkConfig(port=1), "w1")
    now = utcnow()
    dispatcher._store_reply(number, first.account.service_code or "", "TD", now)  # the turn's work: a TD for the first account
    dispatcher._refusals = {"运营商网关拒绝": [refused]}  # and a refusal of the second's, settled by _log
    errors = _race_with_intake(app, second.sub.id, turn, lambda: dispatcher._log([], now))
    assert errors == []
    statuses = dict(db.session.execute(sa.select(Message.id, Message.status).where(Message.id.in_([waiting, refused]))).all())
    assert statuses == {waiting: "refunded", refused: "refunded"}
    for sender in (first, second):
        assert message_counts(db.session, sender.account.id).balanced
    assert verify_chain(db.session) == []


def test_a_batch_holding_a_long_message_and_taking_a_td_does_not_deadlock_with_a_claiming_turn(app: Flask) -> None:
    """Found by a review: a delivery batch keeps a long message's row to its end; a TD later in
    the batch waited (cancel_waiting) for a message another worker's turn was claiming, and that
    turn went on to refund the long message: a lock cycle. The TD now skips the claimed message."""
    from backoffice.services.dispatcher import Dispatcher
    from backoffice.services.message_queue import claim_due, mark_failed
    from dispatch.smpp_link import LinkConfig, Receipt, normalise_message_id
    from dispatch.smpp_link import MobileOriginated as MobileOriginatedPdu

    first = active_sender(app, "sms_business_service")
    td_number = numbers(1, start=13600100000)[0]
    (long_id,) = (m["id"] for m in send(first, numbers(1, start=13900100000)).messages)
    now = utcnow()
    db.session.execute(sa.update(Message).where(Message.id == long_id).values(claimed_by="b", claimed_at=now))
    smsc_id = normalise_message_id("abc123")
    db.session.add(
        MessagePart(message_id=long_id, seq=1, total=2, resent=False, submit_status=0, smsc_message_id=smsc_id, submitted_at=now)
    )
    db.session.add(MessagePart(message_id=long_id, seq=2, total=2, resent=False))
    db.session.commit()
    (waiting,) = (m["id"] for m in send(first, [td_number]).messages)  # queued, unclaimed: the TD cancels it

    turn_b = _session()
    assert [m.id for m in claim_due(turn_b, worker="b", limit=10, now=utcnow())] == [waiting]  # B's turn claims it

    batch_a = _session()
    dispatcher = Dispatcher(lambda: batch_a, LinkConfig(port=1), "a")
    errors: list[BaseException] = []

    def deliveries() -> None:
        with app.app_context():
            try:
                dispatcher._on_deliveries(
                    [
                        Receipt("abc123", "DELIVRD", "000", "id:abc123 stat:DELIVRD err:000"),  # locks the long message
                        MobileOriginatedPdu(td_number, first.account.service_code or "", "TD"),  # waits for B's claim
                    ]
                )
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

    thread = threading.Thread(target=deliveries)
    thread.start()
    time.sleep(0.5)
    try:
        mark_failed(turn_b, {"运营商网关拒绝": [long_id]}, worker="b")  # B's _log: waits for A
        turn_b.commit()
    except BaseException as error:  # noqa: BLE001
        turn_b.rollback()
        errors.append(error)
    thread.join(20)
    turn_b.close()
    batch_a.close()
    assert errors == [] and dispatcher._failure is None
    db.session.expire_all()
    assert db.session.get(Message, waiting).status == "queued"  # left to the worker that claimed it (its own look refunds it)
