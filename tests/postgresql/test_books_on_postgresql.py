"""Every test of tests/backoffice/test_books.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_books import *  # noqa: F403
