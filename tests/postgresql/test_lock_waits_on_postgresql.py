"""A delivery that waits for a lock another transaction holds waits at most LOCK_WAIT_SECONDS,
then is handed back to the SMSC (PostgreSQL only: SQLite has one writer and no row locks).

Before, the wait had no end: a transaction left open (a stopped process, a psql session someone
forgot) holding a long message's row stopped the worker's link, sending included, for as long."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.extensions import db
from backoffice.models import Message
from backoffice.services import dispatcher as dispatcher_module
from backoffice.services.dispatcher import Dispatcher
from dispatch.simulator import SMSCSimulator
from dispatch.smpp_link import MobileOriginated as Reply
from tests.backoffice import test_dispatcher
from tests.backoffice.test_dispatcher import statuses
from tests.backoffice.test_odd_deliveries import delivered, long_and_short_submitted, replies, submitted

smsc = test_dispatcher.smsc
worker = test_dispatcher.worker


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher_module, "LOCK_WAIT_SECONDS", 0.5)


def test_receipts_for_a_long_message_held_by_a_transaction_that_does_not_end_are_handed_back(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    simulator, dispatcher = long_and_short_submitted(app, smsc, worker)
    batch = [delivered(s.message_id) for s in simulator.received]
    long_id = db.session.scalar(sa.select(Message.id).where(Message.recipient == "13800138000"))
    db.session.commit()
    other = db.engine.connect()
    holding = other.begin()
    other.execute(sa.update(Message).where(Message.id == long_id).values(updated_at=Message.updated_at))
    try:
        started = time.monotonic()
        taken = dispatcher._on_deliveries(batch)
        waited = time.monotonic() - started
        # Delivered again while the row is still held: handed back at once (a review found the
        # link stalled 5 s per receipt, 50 s per read, again at every redelivery).
        started = time.monotonic()
        assert dispatcher._on_deliveries([r for r, took in zip(batch, taken, strict=True) if not took]) == [False, False]
        again = time.monotonic() - started
    finally:
        holding.rollback()
        other.close()
    assert dispatcher._failure is None, dispatcher._failure
    short = [s.destination.endswith("13900139000") for s in simulator.received]
    assert taken == short  # the one-part message's receipt is taken; the long one's two handed back
    assert 0.4 <= waited < 1.5 and again < 0.3  # one wait of 0.5 s in the batch, none for the redelivery
    assert dispatcher.stats.lock_waits_given_up == 4
    assert statuses() == {"delivered": 1, "submitted": 1}
    # The SMSC delivers them again once the row is free: the message settles, nothing lost.
    again = [receipt for receipt, took in zip(batch, taken, strict=True) if not took]
    assert dispatcher._on_deliveries(again) == [True, True]
    assert statuses() == {"delivered": 2}


def test_a_long_replys_part_whose_lock_a_transaction_that_does_not_end_holds_is_handed_back(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher]
) -> None:
    simulator, dispatcher = submitted(app, smsc, worker, ["13800138000"])
    destination = simulator.received[0].source

    def part(seq: int, text: str) -> Reply:
        return Reply("8613800138000", destination, text, 8, (7, 2, seq))

    other = db.engine.connect()
    holding = other.begin()
    name = f"reply:8613800138000:{destination}:7:2"
    other.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name})
    try:
        assert dispatcher._on_deliveries([part(1, "好的，")]) == [False]
    finally:
        holding.rollback()
        other.close()
    assert dispatcher._failure is None, dispatcher._failure
    assert dispatcher._on_deliveries([part(1, "好的，")]) == [True]
    assert dispatcher._on_deliveries([part(2, "周六见。")]) == [True]
    assert replies() == ["好的，周六见。"]
