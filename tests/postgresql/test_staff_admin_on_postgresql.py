"""Every test of tests/backoffice/test_staff_admin.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_staff_admin import *  # noqa: F403
