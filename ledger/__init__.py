"""The financial book of record: double-entry beancount books written only by this package.

Business code records `LedgerEvent`s in its own transaction (an outbox); `post_events` turns them
into beancount transactions carrying their event id, so posting twice changes nothing and the
books can be rebuilt from the events. This package imports neither Flask nor `backoffice`.
"""

from ledger.books import Books, LedgerWriteError
from ledger.check import check_books, ledger_balances, reconcile
from ledger.events import Event, PostingRuleError, account_effects, entries_for, posting_totals, transaction_for

__all__ = [
    "Books",
    "Event",
    "LedgerWriteError",
    "PostingRuleError",
    "check_books",
    "account_effects",
    "entries_for",
    "posting_totals",
    "ledger_balances",
    "reconcile",
    "transaction_for",
]
