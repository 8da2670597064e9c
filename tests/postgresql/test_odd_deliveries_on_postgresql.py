"""Every test of tests/backoffice/test_odd_deliveries.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_odd_deliveries import *  # noqa: F403
