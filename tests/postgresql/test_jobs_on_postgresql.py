"""Every test of tests/backoffice/test_jobs.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_jobs import *  # noqa: F403
