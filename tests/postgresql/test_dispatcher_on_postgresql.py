"""Every test of tests/backoffice/test_dispatcher.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_dispatcher import *  # noqa: F403
