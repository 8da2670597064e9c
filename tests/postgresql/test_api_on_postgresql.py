"""Every test of tests/backoffice/test_api.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_api import *  # noqa: F403
