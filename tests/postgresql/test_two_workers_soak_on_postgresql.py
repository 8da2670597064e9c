"""The two-worker soak on PostgreSQL, where the workers' transactions really run at once (see conftest)."""

from tests.backoffice.test_two_workers_soak import *  # noqa: F403
