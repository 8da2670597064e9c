"""The shortcuts intake takes for speed give the same results as the long way round: the send
log's chain, the rows stored, and API keys that stop working when revoked."""

from __future__ import annotations

import fcntl
import struct
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from backoffice.clock import SHANGHAI, set_clock
from backoffice.extensions import db
from backoffice.models import ApiKey, EnterpriseAccount, Message, SendLog, SendRequest
from backoffice.models.base import Money
from backoffice.services import api_keys, bulk, messaging
from backoffice.services.bulk import Prepared, insert_rows
from backoffice.services.send_log import GENESIS, LogEntry, canonical, canonical_run, chain_hash, verify_chain
from tests.backoffice.test_api import api_key, auth, post
from tests.backoffice.test_messaging import SIGNED, Sender, active_sender, numbers, send
from tests.conftest import FIXED_NOW


def test_the_send_log_hashes_the_same_bytes_whichever_way_they_are_built() -> None:
    at = datetime(2026, 11, 23, 2, 0, 0, 123456, tzinfo=UTC)
    entries = [
        LogEntry("E000001", "106575000123", "13800138000", SIGNED, "accepted", 1),
        LogEntry("E000001", None, "13800138000", '【引号】"quoted" \\ back\nslash\t\x00\x1f', "duplicate", None),
        LogEntry("E000001", "", "19912345678", "【表情】😀 𠮷 \u2028 \ud7ff", "refused: 内容含违禁词（赌博），拒绝发送", 2**40),
        LogEntry("E000002", "1065", "", "", "", 0),
    ]
    fast = canonical_run(7, at, entries)
    assert fast == [canonical(7 + i, at, e) for i, e in enumerate(entries)]


def test_a_batch_leaves_a_chain_that_verifies_row_by_row(app: Flask) -> None:
    sender = active_sender(app)
    send(sender, numbers(30))
    send(sender, ["13800138000", "13900139000"])
    rows = db.session.scalars(sa.select(SendLog).order_by(SendLog.seq)).all()
    prev = GENESIS
    for row in rows:
        entry = LogEntry(row.account_code, row.service_code, row.recipient, row.content, row.result, row.message_id)
        assert row.prev_hash == prev and row.hash == chain_hash(prev, row.seq, row.logged_at, entry)
        prev = row.hash
    assert [r.seq for r in rows] == list(range(1, 33)) and verify_chain(db.session) == []
    message_ids = db.session.scalars(sa.select(Message.id).order_by(Message.id)).all()
    assert [r.message_id for r in rows] == message_ids  # each line names its own message


def _stored(request_id: int) -> list[tuple]:
    columns = [c.name for c in Message.__table__.c if c.name not in ("id", "request_id")]
    table = Message.__table__
    query = sa.select(*(sa.literal_column(name) for name in columns)).select_from(table).where(table.c.request_id == request_id)
    return [tuple(r) for r in db.session.execute(query.order_by(table.c.id))]  # as stored: no type conversions


@pytest.mark.parametrize("copy_from", [1, 10_000], ids=["copy", "executemany"])
def test_bulk_insert_stores_exactly_what_sqlalchemy_stores(app: Flask, monkeypatch: pytest.MonkeyPatch, copy_from: int) -> None:
    """On PostgreSQL both ways (COPY from `COPY_MIN_ROWS` rows, else an executemany); on SQLite the one."""
    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", copy_from)
    sender = active_sender(app)
    requests = SendRequest.__table__
    request_ids = [
        db.session.execute(
            sa.insert(requests).returning(requests.c.id),
            {"account_id": sender.account.id, "sub_account_id": sender.sub.id, "fingerprint": "f", "source": "api",
             "created_at": FIXED_NOW, "accepted_count": 0, "charged": Decimal(0), "http_status": 202},
        ).scalar_one()
        for _ in range(2)
    ]  # fmt: skip
    beijing = FIXED_NOW.astimezone(SHANGHAI)

    def rows(request_id: int) -> list[dict]:
        return [
            {
                "request_id": request_id, "account_id": sender.account.id, "sub_account_id": sender.sub.id,
                "recipient": f"1380013800{i}", "carrier": "cmcc", "content": SIGNED, "encoding": "ucs2", "segments": 2,
                "price_per_message": Decimal("0.045"), "charge": Decimal("0.09") if i % 3 else Decimal(0),
                "charge_kind": "usage" if i % 3 else None, "charged_on": date(2026, 11, 23) if i % 3 else None,
                "status": "queued" if i % 3 else "unsubscribed", "duplicate": i == 4, "error": None if i % 3 else "退订",
                "accepted_at": FIXED_NOW, "send_at": beijing,  # the same instant in another time zone
                "valid_until": FIXED_NOW + timedelta(hours=48), "updated_at": FIXED_NOW,
                "next_attempt_at": FIXED_NOW if i % 3 else None, "done_at": None if i % 3 else FIXED_NOW,
            }
            for i in range(7)
        ]  # fmt: skip

    db.session.execute(sa.insert(Message.__table__), rows(request_ids[0]))
    insert_rows(db.session, Message.__table__, rows(request_ids[1]))
    assert _stored(request_ids[0]) == _stored(request_ids[1]) and len(_stored(request_ids[1])) == 7
    loaded = db.session.scalars(sa.select(Message).where(Message.request_id == request_ids[1]).order_by(Message.id)).all()
    assert loaded[1].charge == Decimal("0.09") and loaded[1].send_at == FIXED_NOW and loaded[4].duplicate and loaded[0].attempts == 0

    # A float amount is refused even after an equal Decimal (the converted values are cached).
    floats = rows(request_ids[0])
    floats[0]["charge"], floats[1]["charge"] = Decimal("0.5"), 0.5  # equal, and of one hash
    with pytest.raises((TypeError, sa.exc.StatementError), match="money must be Decimal"), db.session.begin_nested():
        insert_rows(db.session, Message.__table__, floats)

    # A row the database refuses fails the whole insert as SQLAlchemy's error (COPY on PostgreSQL).
    bad = rows(request_ids[0])
    bad[5]["status"] = "lost"
    with pytest.raises(sa.exc.IntegrityError, match="ck_messages_status"), db.session.begin_nested():
        insert_rows(db.session, Message.__table__, bad)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 14
    db.session.rollback()


def test_a_batch_gets_each_recipient_its_own_message_id(app: Flask) -> None:
    sender = active_sender(app)
    given = numbers(40)
    result = send(sender, given)
    stored = dict(db.session.execute(sa.select(Message.id, Message.recipient)).all())
    assert [stored[m["id"]] for m in result.messages] == given


def test_a_key_revoked_in_another_process_cannot_send_and_stops_reading_soon(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender: Sender = active_sender(app)
    secret = api_key(sender)
    assert client.get("/api/v1/balance", headers=auth(secret)).status_code == 200  # now cached in this process
    table = ApiKey.__table__
    db.session.execute(sa.update(table).values(revoked_at=FIXED_NOW))  # as another process would: no ORM event here
    db.session.commit()
    refused = post(client, secret, to="13800138000", content=SIGNED)
    assert refused.status_code == 401 and "吊销" in refused.json["error"]["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
    assert client.get("/api/v1/balance", headers=auth(secret)).status_code == 200  # reads: at most KEY_CACHE_SECONDS more
    later = api_keys.time.monotonic() + api_keys.KEY_CACHE_SECONDS + 1
    monkeypatch.setattr(api_keys.time, "monotonic", lambda: later)
    assert client.get("/api/v1/balance", headers=auth(secret)).status_code == 401


def test_the_key_records_its_use_at_most_once_a_minute(app: Flask, client: FlaskClient) -> None:
    sender = active_sender(app)
    secret = api_key(sender)
    assert post(client, secret, to="13800138000", content=SIGNED).status_code == 202
    key = db.session.scalar(sa.select(ApiKey))
    assert key.last_used_at == FIXED_NOW
    set_clock(lambda: FIXED_NOW + timedelta(seconds=30))
    assert post(client, secret, to="13900139000", content=SIGNED).status_code == 202
    db.session.refresh(key)
    assert key.last_used_at == FIXED_NOW
    set_clock(lambda: FIXED_NOW + timedelta(minutes=2))
    assert client.get("/api/v1/balance", headers=auth(secret)).status_code == 200
    db.session.refresh(key)
    assert key.last_used_at == FIXED_NOW + timedelta(minutes=2)


@pytest.mark.sqlite_only  # SQLite's fsync and WAL settings
def test_only_the_intake_transaction_skips_the_fsync(app: Flask, client: FlaskClient) -> None:
    sender = active_sender(app)
    secret = api_key(sender)  # commits: the request below begins its own transaction and takes its turn
    pragmas: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "synchronous" in statement:
            pragmas.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert post(client, secret, to="13800138000", content=SIGNED).status_code == 202
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", seen)
    assert "PRAGMA synchronous=NORMAL" in pragmas
    assert db.engine.pool.checkedin() == 1  # the connection the request relaxed, and no other
    with db.engine.connect() as connection:  # back in the pool as it was: FULL, for finance and the rest
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1


@pytest.mark.sqlite_only  # SQLite's fsync and WAL settings
def test_the_intake_checkpoints_the_wal_after_its_turn_not_inside_it(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = active_sender(app)
    secret = api_key(sender)
    monkeypatch.setattr(messaging, "CHECKPOINT_EVERY_SECONDS", 0.0)  # after every turn
    happened: list[str] = []
    real_flock = messaging.fcntl.flock

    def flock(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        happened.append("turn taken" if operation == fcntl.LOCK_EX else "turn given back")

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "wal_" in statement and statement != "PRAGMA wal_autocheckpoint":  # (read once per connection)
            happened.append(statement)

    monkeypatch.setattr(messaging.fcntl, "flock", flock)
    sa.event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert post(client, secret, to="13800138000", content=SIGNED).status_code == 202
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", seen)
    assert happened == ["PRAGMA wal_autocheckpoint=0", "turn taken", "turn given back", "PRAGMA wal_checkpoint(PASSIVE)"]
    mx_frame, backfilled = _wal_index(app)
    assert mx_frame > 0 and backfilled == mx_frame  # everything the request wrote is in the database file
    with db.engine.connect() as connection:  # the connection went back to the pool checkpointing as before
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000

    monkeypatch.setattr(messaging, "CHECKPOINT_EVERY_SECONDS", 3600.0)
    happened.clear()
    sa.event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert post(client, secret, to="13900139000", content=SIGNED).status_code == 202
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", seen)
    assert "PRAGMA wal_checkpoint(PASSIVE)" not in happened  # not due: the next one, or any other writer, copies it
    mx_frame, backfilled = _wal_index(app)
    assert backfilled < mx_frame


def _wal_index(app: Flask) -> tuple[int, int]:
    """(mxFrame, nBackfill) from the WAL index (the -shm file): frames in the WAL, and how many of
    them a checkpoint has copied into the database file."""
    database = db.engine.url.database
    assert database
    header = Path(database + "-shm").read_bytes()[:100]
    return struct.unpack_from("=I", header, 16)[0], struct.unpack_from("=I", header, 96)[0]


def test_a_prepared_statement_runs_as_sqlalchemy_runs_it(app: Flask) -> None:
    sender = active_sender(app)
    send(sender, ["13800138000"])
    accounts = EnterpriseAccount.__table__
    query = sa.select(accounts.c.balance, accounts.c.created_at, accounts.c.add_signature, accounts.c.code).where(
        accounts.c.id == sa.bindparam("account_id"), accounts.c.status != "closed"
    )
    params = {"account_id": sender.account.id}
    expected = [tuple(row) for row in db.session.execute(query, params)]
    assert Prepared(query).rows(db.session, params) == expected
    assert isinstance(expected[0][0], Decimal) and expected[0][1].tzinfo is UTC and isinstance(expected[0][2], bool)

    debit = Prepared(
        sa.update(accounts)
        .where(accounts.c.id == sa.bindparam("account_id"), accounts.c.balance >= sa.bindparam("amount", type_=Money()))
        .values(balance=accounts.c.balance - sa.bindparam("amount", type_=Money()))
        .returning(accounts.c.balance)
    )
    before = expected[0][0]
    assert debit.scalar(db.session, {"account_id": sender.account.id, "amount": Decimal("0.0450")}) == before - Decimal("0.045")
    assert debit.first(db.session, {"account_id": sender.account.id, "amount": before * 2}) is None  # not enough: nothing changed
    assert db.session.scalar(sa.select(accounts.c.balance).where(accounts.c.id == sender.account.id)) == before - Decimal("0.045")
    db.session.rollback()


def test_a_prepared_statement_run_on_many_rows_converts_each_rows_own_values(app: Flask) -> None:
    sender = active_sender(app)
    ids = [m["id"] for m in send(sender, numbers(5)).messages]
    messages = Message.__table__
    stamp = Prepared(
        sa.update(messages).where(messages.c.id == sa.bindparam("mid")).values(updated_at=sa.bindparam("at"), error=sa.bindparam("why"))
    )
    later = FIXED_NOW + timedelta(seconds=1)
    given = [FIXED_NOW, FIXED_NOW, FIXED_NOW.astimezone(SHANGHAI), later, FIXED_NOW]  # shared objects, an equal one, another
    stamp.executemany(db.session, [{"mid": i, "at": at, "why": None if n % 2 else f"e{n}"} for n, (i, at) in enumerate(zip(ids, given))])
    stored = db.session.execute(sa.select(messages.c.updated_at, messages.c.error).where(messages.c.id.in_(ids)).order_by(messages.c.id))
    assert [tuple(row) for row in stored] == [(FIXED_NOW, "e0"), (FIXED_NOW, None), (FIXED_NOW, "e2"), (later, None), (FIXED_NOW, "e4")]
    db.session.rollback()


def test_a_prepared_statement_raises_what_sqlalchemy_would(app: Flask) -> None:
    sender = active_sender(app)
    send(sender, ["13800138000"])
    requests = SendRequest.__table__
    opening = Prepared(sa.insert(requests).values({name: sa.bindparam(name) for name in messaging._REQUEST_OPENING}))
    row = {"account_id": sender.account.id, "sub_account_id": sender.sub.id, "client_ref": "same", "fingerprint": "f", "source": "api",
           "created_at": FIXED_NOW, "accepted_count": 0, "charged": Decimal(0), "http_status": 202}  # fmt: skip
    opening.rowcount(db.session, row)
    with pytest.raises(sa.exc.IntegrityError):  # (account_id, client_ref) is unique
        opening.rowcount(db.session, row)
    db.session.rollback()
    missing = sa.select(sa.table("nowhere", sa.column("x"))).where(sa.column("x") == sa.bindparam("x"))
    with pytest.raises(sa.exc.DBAPIError) as expected:
        db.session.execute(missing, {"x": 1})
    db.session.rollback()
    with pytest.raises(
        type(expected.value), match="no such table|does not exist"
    ):  # SQLite: OperationalError; PostgreSQL: ProgrammingError
        Prepared(missing).rows(db.session, {"x": 1})
    db.session.rollback()


def test_a_prepared_statements_error_keeps_its_parameters_out_of_its_message(app: Flask) -> None:
    """Found by a review: the driver's errors, raised as SQLAlchemy's, carried the statement's
    parameters (a message's text, its numbers) into the error and so into the log."""
    missing = sa.select(sa.table("nowhere", sa.column("x"))).where(sa.column("x") == sa.bindparam("x"))
    with pytest.raises(sa.exc.DBAPIError) as caught:
        Prepared(missing).rows(db.session, {"x": "您的验证码是 482913"})
    db.session.rollback()
    assert "nowhere" in str(caught.value) and "482913" not in str(caught.value)
    with pytest.raises(sa.exc.DBAPIError) as caught:
        Prepared(missing).executemany(db.session, [{"x": "您的验证码是 482913"}])
    db.session.rollback()
    assert "nowhere" in str(caught.value) and "482913" not in str(caught.value)


def test_a_prepared_statement_refuses_what_it_cannot_run_as_sqlalchemy_would(app: Flask) -> None:
    messages = Message.__table__
    expanding = Prepared(sa.select(messages.c.id).where(messages.c.recipient.in_(sa.bindparam("numbers", expanding=True))))
    with pytest.raises(ValueError, match="IN lists"):
        expanding.rows(db.session, {"numbers": ["13800138000"]})
    computed = sa.Table("computed_default", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("at", sa.DateTime, default=datetime.now))  # fmt: skip
    with pytest.raises(ValueError, match="at: give a value"):
        Prepared(sa.insert(computed).values(id=sa.bindparam("id"))).rowcount(db.session, {"id": 1})
    db.session.rollback()


def test_every_prepared_statement_of_the_hot_paths_compiles(app: Flask) -> None:
    """Each is compiled on first use; a statement it cannot run (a computed default, an IN list)
    must fail here, not in the first request or turn of the dispatcher that needs it."""
    from sqlalchemy.dialects.postgresql.base import PGDialect

    from backoffice.services import dispatcher, message_queue, send_log, usage

    modules = (messaging, dispatcher, message_queue, send_log, usage)
    found = [value for module in modules for value in vars(module).values() if isinstance(value, Prepared)]
    assert len(found) >= 23
    for prepared in found:
        prepared._compile(db.engine.dialect)
        prepared._compile(PGDialect(paramstyle="pyformat"))  # named parameters, as psycopg (run by hand against PostgreSQL 15)
