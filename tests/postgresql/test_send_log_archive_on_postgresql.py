"""Every test of tests/backoffice/test_send_log_archive.py, on PostgreSQL (see conftest): the
delete guard's exception for archived rows is a PL/pgSQL function there."""

from __future__ import annotations

from tests.backoffice.test_send_log_archive import *  # noqa: F403
