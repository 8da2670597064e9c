"""Every test of tests/backoffice/test_issue_contract.py, on PostgreSQL (see conftest)."""

from tests.backoffice.test_issue_contract import *  # noqa: F403
