"""The hostile-SMSC tests whose answers reach the database (ids, statuses, parts sent again
later), on PostgreSQL: its column types refused what SQLite stored (see conftest)."""

from tests.backoffice.test_hostile_smsc import (  # noqa: F401
    hostile,
    make_worker,
    running_clock,
    test_a_crash_loop,
    test_a_part_answered_with_a_temporary_error_goes_again_after_a_restart_not_refunded,
    test_messages_are_not_refunded_because_every_session_is_cut_right_after_the_bind,
    test_one_destination_answered_msgqful_does_not_throttle_every_other_message,
    test_submit_resp_message_ids,
    test_submit_resp_statuses,
    test_temporary_smsc_errors_are_retried_ever_more_slowly_not_refunded,
)
