"""Every test of tests/backoffice/test_intake_fast_paths.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_intake_fast_paths import *  # noqa: F403
