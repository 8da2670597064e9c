"""The hostile-SMSC tests whose answers reach the database (ids, statuses), on PostgreSQL: its
column types refused what SQLite stored (see conftest)."""

from tests.backoffice.test_hostile_smsc import (  # noqa: F401
    hostile,
    make_worker,
    test_a_crash_loop,
    test_submit_resp_message_ids,
    test_submit_resp_statuses,
)
