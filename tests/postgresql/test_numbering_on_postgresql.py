"""Every test of tests/backoffice/test_numbering.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_numbering import *  # noqa: F403
