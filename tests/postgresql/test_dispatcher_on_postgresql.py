"""Every test of tests/backoffice/test_dispatcher.py, on PostgreSQL (see conftest), and the
interleavings only PostgreSQL allows: SQLite's one writer makes them wait instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.extensions import db
from backoffice.models import Message
from backoffice.services import dispatcher as dispatcher_module
from backoffice.services.dispatcher import Dispatcher
from dispatch.simulator import SMSCSimulator
from dispatch.smpp_link import Receipt
from tests.backoffice.test_dispatcher import *  # noqa: F403
from tests.backoffice.test_dispatcher import parts_of, statuses
from tests.backoffice.test_messaging import active_sender


def test_a_mark_committed_between_a_receipts_two_statements_still_settles_the_message(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker B's receipt finds the message not yet submitted (no row updated); worker A's mark
    commits; B reads the status again: submitted, so it settles it then, before acknowledging."""
    from tests.backoffice.test_messaging import send

    sender = active_sender(app)
    send(sender, ["13800138000"])
    simulator = smsc(receipt_delay=30)
    mark = Dispatcher._meanwhile
    monkeypatch.setattr(Dispatcher, "_hold_complete", lambda self: True)
    monkeypatch.setattr(Dispatcher, "_meanwhile", lambda self: None)
    sending = worker(simulator, "worker-a")
    sending.run_until(lambda: len(sending._complete) == 1)
    other = worker(simulator, "worker-b")
    smsc_id = simulator.received[0].message_id
    status_of = dispatcher_module._STATUS

    class MarkedInBetween:
        def scalar(self, session: Any, params: Any) -> Any:
            mark(sending)  # A's own transaction commits the mark right here
            return status_of.scalar(session, params)

    monkeypatch.setattr(dispatcher_module, "_STATUS", MarkedInBetween())
    other._on_receipt(Receipt(smsc_id, "DELIVRD", "000", f"id:{smsc_id} stat:DELIVRD err:000"))  # taken, not refused
    assert [p.receipt_stat for p in parts_of(db.session.scalar(sa.select(Message.id)))] == ["DELIVRD"]
    assert statuses() == {"delivered": 1} and other.stats.finished == 1
