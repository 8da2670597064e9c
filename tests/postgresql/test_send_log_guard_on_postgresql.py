"""Every test of tests/backoffice/test_send_log_guard.py, on PostgreSQL (see conftest), and
TRUNCATE, which only PostgreSQL has."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.extensions import db
from tests.backoffice.test_messaging import Sender, numbers, send
from tests.backoffice.test_send_log_guard import *  # noqa: F403
from tests.backoffice.test_send_log_guard import log_rows


def test_truncating_the_send_log_is_refused_on_postgresql(app: Flask, sender: Sender) -> None:
    """TRUNCATE fires no row trigger: a statement trigger refuses it (found by mutation
    testing: with it gone, only the migrations' test noticed)."""
    send(sender, numbers(3))
    before = log_rows()
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        db.session.execute(sa.text("TRUNCATE send_log"))
    db.session.rollback()
    assert log_rows() == before
