"""SQLAlchemy models, one small module per area; importing this package registers them all."""

from backoffice.models.accounts import EnterpriseAccount, SubAccount
from backoffice.models.base import Base
from backoffice.models.contracts import Contract, ContractJob, DocumentSequence
from backoffice.models.finance import (
    Invoice,
    Notification,
    Receipt,
    StatementImport,
    StatementLine,
    WorkingDayOverride,
)
from backoffice.models.ledger import LedgerEvent
from backoffice.models.provider import ProviderProfile
from backoffice.models.staff import AuditEntry, StaffUser
from backoffice.models.usage import UsageDay

__all__ = [
    "AuditEntry",
    "Base",
    "Contract",
    "ContractJob",
    "DocumentSequence",
    "EnterpriseAccount",
    "Invoice",
    "LedgerEvent",
    "Notification",
    "ProviderProfile",
    "Receipt",
    "StaffUser",
    "StatementImport",
    "StatementLine",
    "SubAccount",
    "UsageDay",
    "WorkingDayOverride",
]
