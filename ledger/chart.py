"""Chart of accounts: plain names, one sub-account per customer (keyed by account code)."""

from __future__ import annotations

import re

CURRENCY = "CNY"
OPENING_DATE = "2000-01-01"

INCOME_SMS = "Income:SMS"
INCOME_OPENING_FEE = "Income:OpeningFee"
INCOME_PENALTY = "Income:Penalty"
INCOME_FORFEITED = "Income:Forfeited"
EXPENSES_TARIFF_ABSORBED = "Expenses:TariffAbsorbed"

STATIC_ACCOUNTS = (
    INCOME_SMS,
    INCOME_OPENING_FEE,
    INCOME_PENALTY,
    INCOME_FORFEITED,
    EXPENSES_TARIFF_ABSORBED,
)

_COMPONENT = re.compile(r"^[A-Z0-9][A-Za-z0-9-]*$")


def component(code: str) -> str:
    """A customer or bank code as a beancount account component; refuse anything else."""
    if not _COMPONENT.match(code):
        raise ValueError(f"not a valid account component: {code!r}")
    return code


def receivable(code: str) -> str:
    """What the customer owes under a signed contract until finance confirms the money."""
    return f"Assets:Receivable:{component(code)}"


def contracted(code: str) -> str:
    """Credit contracted but not yet paid: becomes Prepaid (spendable) when the money arrives."""
    return f"Liabilities:Contracted:{component(code)}"


def prepaid(code: str) -> str:
    """The customer's spendable credit (deferred revenue); equals the account balance in the database."""
    return f"Liabilities:Prepaid:{component(code)}"


CARRIERS = {"CMCC": "中国移动", "CUCC": "中国联通", "CTCC": "中国电信", "CBN": "中国广电"}


def bank(code: str) -> str:
    """The provider's bank account that received the money (e.g. ICBC, CMB)."""
    return f"Assets:Bank:{component(code)}"


def carrier(code: str) -> str:
    if code not in CARRIERS:
        raise ValueError(f"unknown carrier {code!r} (known: {', '.join(CARRIERS)})")
    return code


def carrier_expense(code: str) -> str:
    """What the carrier charges the provider for the messages delivered."""
    return f"Expenses:Carrier:{carrier(code)}"


def carrier_payable(code: str) -> str:
    return f"Liabilities:Payable:Carrier:{carrier(code)}"
