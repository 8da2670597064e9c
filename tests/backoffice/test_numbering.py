"""Gapless numbering: a rolled-back issue gives its number back; concurrent issuers never share one."""

from __future__ import annotations

import threading

from flask import Flask

from backoffice.extensions import db
from backoffice.services.numbering import next_number


def test_rollback_gives_the_number_back(app: Flask) -> None:
    assert next_number(db.session, "contract", 2026) == 1
    db.session.commit()
    assert next_number(db.session, "contract", 2026) == 2
    db.session.rollback()
    assert next_number(db.session, "contract", 2026) == 2
    db.session.commit()


def test_series_and_years_are_independent(app: Flask) -> None:
    assert [
        next_number(db.session, "contract", 2026),
        next_number(db.session, "contract", 2027),
        next_number(db.session, "invoice", 2026),
    ] == [1, 1, 1]


def test_concurrent_numbering_is_gapless_and_unique(app: Flask) -> None:
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with app.app_context():
            for _ in range(10):
                number = next_number(db.session, "contract", 2026)
                db.session.commit()
                with lock:
                    taken.append(number)
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == list(range(1, 81))
