"""Every test of tests/backoffice/test_send_log_guard.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_send_log_guard import *  # noqa: F403
