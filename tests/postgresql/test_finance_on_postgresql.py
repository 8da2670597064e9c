"""Every test of tests/backoffice/test_finance.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_finance import *  # noqa: F403
