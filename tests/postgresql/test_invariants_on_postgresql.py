"""Every test of tests/backoffice/test_invariants.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_invariants import *  # noqa: F403
