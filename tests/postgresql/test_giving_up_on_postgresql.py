"""When the worker stops trying, on PostgreSQL: the lease renewal's row count and the refunds
of given-up messages under its locking (see conftest)."""

from tests.backoffice.test_giving_up import *  # noqa: F403
