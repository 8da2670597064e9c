"""The provider form's tests of tests/backoffice/test_web.py, on PostgreSQL (see conftest): a
first save and a stale form are decided there by the profile row's lock, not SQLite's one writer."""

from tests.backoffice.test_web import (  # noqa: F401
    test_a_stale_provider_form_does_not_put_back_another_admins_bank_account,
    test_an_administrator_sets_the_provider_identity_contracts_print,
    test_two_admins_saving_the_provider_identity_for_the_first_time_at_once_is_not_a_500,
)
