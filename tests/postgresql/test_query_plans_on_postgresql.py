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
