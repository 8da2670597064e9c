"""Every test of tests/backoffice/test_sending_settings.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_sending_settings import *  # noqa: F403
