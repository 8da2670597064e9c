"""Statements of the hot paths use their indexes on PostgreSQL, whatever the table's size: its
planner, unlike SQLite's, may prefer walking the primary key backwards to the index meant for
the lookup, which costs the length of the table on every call."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask

from backoffice.extensions import db
from backoffice.models import MessagePart
from backoffice.services.dispatcher import _RECEIPTED
from tests.backoffice.test_messaging import active_sender, numbers, send


def test_a_receipt_finds_its_part_through_the_smsc_id_index(app: Flask) -> None:
    sender = active_sender(app)
    message_ids = [m["id"] for m in send(sender, numbers(1000)).messages]
    parts = MessagePart.__table__
    db.session.execute(
        sa.insert(parts),
        [{"message_id": mid, "seq": 1, "total": 1, "resent": False, "smsc_message_id": f"{i:08x}"} for i, mid in enumerate(message_ids)],
    )
    db.session.execute(sa.text("ANALYZE message_parts"))
    statement = str(_RECEIPTED.statement.compile(db.engine))
    params = {"key": "00000001", "stat": "DELIVRD", "err": "000", "at": None}
    plan = "\n".join(row[0] for row in db.session.connection().exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {statement}", params))
    assert "ix_message_parts_smsc_message_id_id" in plan, plan
    assert "Rows Removed by Filter" not in plan, plan
    db.session.rollback()


def test_a_page_of_an_accounts_messages_reads_that_page_only(app: Flask) -> None:
    """The portal's pages, newest first (found by a review sorting every message of the account):
    an account that sent long ago, with everyone else's newer messages above its own, is read
    through its index, not by walking the newer ones backwards."""
    from backoffice.models import Message

    sender, other = active_sender(app), active_sender(app, customer__name="乙公司")
    sender.account.rate_limit_per_second = other.account.rate_limit_per_second = 10_000
    db.session.commit()
    send(sender, numbers(500))
    for start in range(0, 5000, 1000):
        send(other, numbers(1000, start=13900100000 + start * 7))
    db.session.execute(sa.text("ANALYZE messages"))
    for scope in (None, sender.sub.id):
        query = sa.select(Message.id).where(Message.account_id == sender.account.id)
        if scope is not None:
            query = query.where(Message.sub_account_id == scope)
        query = query.where(Message.id < 10**9).order_by(Message.id.desc()).limit(51)
        statement = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
        plan = "\n".join(row[0] for row in db.session.connection().exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {statement}"))
        assert "Rows Removed by Filter" not in plan and "pk_messages" not in plan, plan
    db.session.rollback()


def test_the_look_for_parts_in_flight_reads_only_parts_without_a_response(app: Flask) -> None:
    """The look for parts in flight anywhere (see the SQLite suite's test of the same name), on a
    table of parts mostly answered or refused, a few left without a response by refunded
    messages, and a queue of messages not begun: through the partial index, each part's message
    by its key."""
    from backoffice.models import Message
    from backoffice.services.dispatcher import _ANY_UNANSWERED

    sender = active_sender(app)
    sender.account.rate_limit_per_second = 10_000
    db.session.commit()
    message_ids = [m["id"] for m in send(sender, numbers(1000)).messages]
    send(sender, numbers(1000, start=13900100000))  # waiting in the queue, no part yet
    parts = MessagePart.__table__
    rows = []
    for i, mid in enumerate(message_ids):
        refunded = i % 100 == 0  # lost in flight too often: its part left without a response
        status = None if refunded else (0 if i % 3 else 0x45)
        rows.append({"message_id": mid, "seq": 1, "total": 1, "resent": refunded, "submit_status": status,
                     "smsc_message_id": f"{i:08x}" if status == 0 else None})  # fmt: skip
    db.session.execute(sa.insert(parts), rows)
    db.session.execute(sa.update(Message).where(Message.id.in_(message_ids[::100])).values(status="refunded"))
    db.session.execute(sa.text("ANALYZE message_parts"))
    db.session.execute(sa.text("ANALYZE messages"))
    statement = str(_ANY_UNANSWERED.compile(db.engine, compile_kwargs={"literal_binds": True}))
    plan = "\n".join(row[0] for row in db.session.connection().exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {statement}"))
    assert "ix_message_parts_unanswered" in plan and "pk_messages" in plan, plan
    assert "Seq Scan" not in plan and "ix_messages_queue" not in plan, plan
    assert db.session.execute(_ANY_UNANSWERED).first() is None  # what is left belongs to refunded messages
    db.session.rollback()
