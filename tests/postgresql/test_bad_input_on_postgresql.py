"""Every test of tests/backoffice/test_bad_input.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_bad_input import *  # noqa: F403
