"""Every test of tests/backoffice/test_usage.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_usage import *  # noqa: F403
