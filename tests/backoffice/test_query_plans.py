"""Statements of the portal's pages use their indexes on SQLite (read with EXPLAIN QUERY PLAN;
tests/postgresql/test_query_plans_on_postgresql.py does the same on PostgreSQL)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask

from backoffice.extensions import db
from tests.backoffice.test_messaging import active_sender


def test_a_page_of_messages_walks_an_index_not_every_message_of_the_account(app: Flask) -> None:
    """Found by a review: each page sorted every message of the account (0.3 s at 200,000)."""
    from backoffice.services.messaging import recent_messages

    sender = active_sender(app)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM messages" in statement:
            seen.append((statement, params))

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        for scope in (None, sender.sub.id):
            seen.clear()
            recent_messages(db.session, sender.account.id, before_id=10**6, limit=51, sub_account_id=scope)
            ((statement, params),) = seen
            with db.engine.connect() as connection:
                plan = " / ".join(str(row[-1]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all())
            assert "TEMP B-TREE" not in plan and ("ix_messages_account_id_id" in plan or "ix_messages_sub_account_id_id" in plan), plan
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)


def test_the_look_for_parts_in_flight_reads_only_parts_without_a_response(app: Flask) -> None:
    """Found by a review: the look for parts in flight anywhere (asked for each receipt not found)
    counted the parts a refunded message left without a response, for ever; it now asks for each
    such part whether its message is still to be sent. It reads the partial index of parts
    without a response (in flight, or left by refunded messages: a few rows), each one's message
    by its key: neither every part an SMSC ever refused (the smsc_message_id index's NULLs) nor
    the messages waiting in the queue."""
    from backoffice.services.dispatcher import _ANY_UNANSWERED

    statement = str(_ANY_UNANSWERED.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as connection:
        plan = " / ".join(str(row[-1]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement).all())
    assert "message_parts USING INDEX ix_message_parts_unanswered" in plan, plan
    assert "SEARCH messages USING INTEGER PRIMARY KEY" in plan and "ix_messages_queue" not in plan, plan


def test_a_page_of_replies_through_the_api_walks_an_index_not_every_reply_of_the_account(app: Flask) -> None:
    """Found by a review: GET /api/v1/replies sorted all of the account's replies on every poll."""
    from datetime import UTC, datetime

    from backoffice.services.messaging import reply_reports

    sender = active_sender(app)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM mobile_originated" in statement:
            seen.append((statement, params))

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        since = datetime(2026, 11, 22, tzinfo=UTC)
        reply_reports(db.session, sender.account.id, since=since, after_id=0, limit=101, until=datetime(2026, 11, 23, tzinfo=UTC))
        ((statement, params),) = seen
        with db.engine.connect() as connection:
            plan = " / ".join(str(row[-1]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all())
        assert "TEMP B-TREE" not in plan and "ix_mobile_originated_account_received" in plan, plan
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
