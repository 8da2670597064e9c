"""Every test of tests/backoffice/test_dispatch_status.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_dispatch_status import *  # noqa: F403
