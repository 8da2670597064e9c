"""Two finance users confirm two transfers of one customer at the same moment (PostgreSQL: read
committed, two connections). Before the fix each read what the customer still owed before
the other committed, the second's guarded UPDATE then matched no row, and its event was booked
anyway, so the books held a credit the database never got."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from backoffice.extensions import db
from backoffice.models import EnterpriseAccount
from backoffice.services.credit import credit_receipt
from tests.backoffice.test_books import DAY, settle
from tests.conftest import make_contract


def _session() -> Session:
    session = Session(db.engine)
    session.execute(sa.text("SET lock_timeout = '10s'"))
    session.commit()
    return session


def while_the_first_waits(app: Flask, first: Session, second: Session, work: Callable[[Session], object]) -> list[BaseException]:
    """Run `work` in `second` (another finance user, its own thread) while `first` holds what it
    took uncommitted; assert it waits for `first`'s commit; the errors it ended with."""
    errors: list[BaseException] = []
    done = threading.Event()

    def other_finance_user() -> None:
        with app.app_context():
            try:
                work(second)
                second.commit()
            except BaseException as error:  # noqa: BLE001 - the caller asserts on them
                second.rollback()
                errors.append(error)
            finally:
                done.set()

    thread = threading.Thread(target=other_finance_user)
    thread.start()
    time.sleep(0.5)
    assert not done.is_set()  # it waits for the first one's locks
    first.commit()
    thread.join(20)
    first.close()
    second.close()
    return errors


@pytest.fixture
def contract(app: Flask):  # type: ignore[no-untyped-def]
    """004: 50,000 messages at 0.035 = 1,750.00 元, unpaid."""
    return make_contract(app, "sms_business_service")


def test_two_receipts_of_one_account_confirmed_at_once_are_both_credited(app: Flask, contract) -> None:  # type: ignore[no-untyped-def]
    code = contract.contract.account.code  # 1,750.00 owed under the contract
    first, second = _session(), _session()
    credit_receipt(first, account_code=code, amount=Decimal("1000.00"), bank="CMB", bank_ref="P1", received_on=DAY, actor="finance:a")
    errors = while_the_first_waits(  # for the first confirmation's lock on the account
        app, first, second,
        lambda session: credit_receipt(
            session, account_code=code, amount=Decimal("1000.00"), bank="CMB", bank_ref="P2", received_on=DAY, actor="finance:b"
        ),
    )  # fmt: skip
    assert errors == []
    db.session.expire_all()
    account = db.session.scalars(sa.select(EnterpriseAccount).where(EnterpriseAccount.code == code)).one()
    assert (account.balance, account.contracted_credit, account.receivable) == (Decimal("2000.00"), 0, 0)
    settle(app)  # the books agree with the database to the fen


def test_one_statement_line_matched_to_two_receipts_at_once_credits_once(app: Flask, contract, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Found by a review: the customer recorded one transfer twice (two numbers); two finance users
    matched the statement's one line to each at the same moment, both read the line free, and both
    receipts were credited. The second match now waits for the first and is refused."""
    from pathlib import Path

    from backoffice.errors import Conflict
    from backoffice.models import Receipt
    from backoffice.services.receipts import confirm_receipt, record_receipt
    from backoffice.services.statements import import_statement, match_line

    code, documents = contract.contract.account.code, Path(app.config["DOCUMENTS_PATH"])
    ids = []
    for reference in ("CUST-1", "CUST-2"):
        receipt = record_receipt(
            db.session, account_code=code, amount="1750.00", paid_on="2026-11-23", payer_name=None, bank_reference=reference,
            bank="CMB", voucher=None, recorded_by="staff:clerk", documents_root=documents, max_voucher_bytes=10**6,
        )  # fmt: skip
        db.session.flush()
        ids.append(receipt.id)
    content = b"date,amount,payer_name,payer_account,reference,memo\n2026-11-23,1750.00,X,,K777,\n"
    line_id = import_statement(db.session, filename="s.csv", actor="staff:clerk", content=content).lines[0].id
    db.session.commit()

    def match_and_confirm(session: Session, receipt_id: int, actor: str) -> None:
        match_line(session, line_id, receipt_id, actor=actor)
        confirm_receipt(session, receipt_id, actor=actor, four_eyes_threshold=Decimal("50000"), documents_root=documents)

    first, second = _session(), _session()
    match_and_confirm(first, ids[0], "staff:finance-a")
    errors = while_the_first_waits(
        app, first, second, lambda session: match_and_confirm(session, ids[1], "staff:finance-b")
    )  # the line's lock
    assert len(errors) == 1 and isinstance(errors[0], Conflict) and f"已匹配到账记录 {ids[0]}" in str(errors[0])
    db.session.expire_all()
    assert db.session.scalar(sa.select(EnterpriseAccount.balance).where(EnterpriseAccount.code == code)) == Decimal("1750.00")
    assert [db.session.get(Receipt, i).status for i in ids] == ["confirmed", "pending"]
    settle(app)


def test_one_statement_imported_by_two_finance_users_at_once_is_imported_once(app: Flask) -> None:
    """Found by a review: import_statement looked for each line among the stored ones, then
    inserted; the second of two imports of one file at the same moment (a double click on 导入,
    two finance users) found nothing stored yet, and its insert then hit the unique index when the
    first committed: an IntegrityError, 系统内部错误 (500). It now waits for the first and counts
    the lines as duplicates."""
    from backoffice.models import StatementLine
    from backoffice.services.statements import import_statement

    content = b"date,amount,payer_name,payer_account,reference,memo\n2026-11-20,100.00,X,,R1,\n2026-11-21,200.00,Y,,R2,\n"
    first, second = _session(), _session()
    counts: list[tuple[int, int]] = []

    def import_it(session: Session) -> None:
        record = import_statement(session, filename="s.csv", content=content, actor="staff:finance-b")
        counts.append((record.line_count, record.duplicate_lines))

    assert import_statement(first, filename="s.csv", content=content, actor="staff:finance-a").line_count == 2
    errors = while_the_first_waits(app, first, second, import_it)  # for the first's lines
    assert errors == []
    assert counts == [(0, 2)]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StatementLine)) == 2


def test_the_same_statement_posted_twice_at_once_is_never_a_500(app: Flask, staff: dict[str, str]) -> None:
    """The review's own test: ten rounds of two finance users posting one file to /finance/statements
    at the same moment (threads, a connection each); every answer is an import, never a 500."""
    from io import BytesIO

    from backoffice.models import StatementLine
    from backoffice.services.staff import create_staff_user
    from tests.conftest import login

    create_staff_user(db.session, "fin2", "fin2", "fin2-pass-12", "finance", actor="test")
    db.session.commit()
    first, second = app.test_client(), app.test_client()
    login(first, "finance", staff["finance"])
    login(second, "fin2", "fin2-pass-12")
    codes: list[int] = []
    for i in range(10):
        content = f"date,amount,payer_name,payer_account,reference,memo\n2026-11-20,{100 + i}.00,甲,,R{i},\n".encode()
        barrier = threading.Barrier(2)

        def post(client, content: bytes = content, barrier: threading.Barrier = barrier) -> None:  # type: ignore[no-untyped-def]
            with app.app_context():
                barrier.wait()
                response = client.post(
                    "/finance/statements", data={"statement": (BytesIO(content), "s.csv")}, content_type="multipart/form-data"
                )
                codes.append(response.status_code)

        threads = [threading.Thread(target=post, args=(c,)) for c in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert codes == [302] * 20
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StatementLine)) == 10


def test_one_transfer_recorded_twice_at_the_same_moment_is_refused_the_second_time(app: Flask, contract) -> None:  # type: ignore[no-untyped-def]
    """The live-receipt unique index is what refuses a bank reference recorded twice at once
    (each lookup ran before the other's insert committed); found by mutation testing, nothing
    tested it but the models-versus-migrations check. Under two bank codes the books' event ids
    differ, so without it the transfer would be credited twice."""
    from pathlib import Path

    from backoffice.errors import Conflict
    from backoffice.models import Receipt
    from backoffice.services.receipts import confirm_receipt, record_receipt

    code, documents = contract.contract.account.code, Path(app.config["DOCUMENTS_PATH"])

    def record(session: Session, bank: str, actor: str) -> None:
        record_receipt(
            session, account_code=code, amount="1750.00", paid_on="2026-11-23", payer_name=None, bank_reference="K-SAME-1",
            bank=bank, voucher=None, recorded_by=actor, documents_root=documents, max_voucher_bytes=10**6,
        )  # fmt: skip
        session.flush()

    first, second = _session(), _session()
    record(first, "CMB", "staff:finance-a")
    errors = while_the_first_waits(app, first, second, lambda session: record(session, "ICBC", "staff:finance-b"))  # the index entry
    assert len(errors) == 1 and isinstance(errors[0], Conflict) and "已登记过" in str(errors[0])
    (receipt,) = db.session.scalars(sa.select(Receipt)).all()
    confirm_receipt(db.session, receipt.id, actor="staff:finance-c", four_eyes_threshold=Decimal("50000"), documents_root=documents)
    db.session.commit()
    assert db.session.scalar(sa.select(EnterpriseAccount.balance).where(EnterpriseAccount.code == code)) == Decimal("1750.00")
    settle(app)
