"""The financial book of record: double-entry beancount books written only by this package.

Business code records `LedgerEvent`s in its own transaction (an outbox); `post_events` turns them
into beancount transactions carrying their event id, so posting twice changes nothing and the
books can be rebuilt from the events. This package imports neither Flask nor `backoffice`.
"""

from ledger.books import Books, LedgerWriteError
from ledger.check import check_books, ledger_balances, reconcile
from ledger.events import Event, PostingRuleError, entries_for, prepaid_effect, transaction_for

__all__ = [
    "Books",
    "Event",
    "LedgerWriteError",
    "PostingRuleError",
    "check_books",
    "entries_for",
    "prepaid_effect",
    "ledger_balances",
    "reconcile",
    "transaction_for",
]
