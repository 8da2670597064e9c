"""Every test of tests/backoffice/test_messaging.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_messaging import *  # noqa: F403
