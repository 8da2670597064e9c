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
from backoffice.models.messaging import (
    ApiKey,
    DispatchRate,
    DispatchWorker,
    ForbiddenKeyword,
    KeywordListVersion,
    Message,
    MessagePart,
    MobileOriginated,
    PortedNumber,
    ReplyFragment,
    SendLog,
    SendLogArchive,
    SendLogHead,
    SendRate,
    SendRequest,
    Unsubscribe,
)
from backoffice.models.provider import ProviderProfile
from backoffice.models.staff import AuditEntry, EndedSession, LoginFailure, StaffUser
from backoffice.models.usage import UsageDay

__all__ = [
    "ApiKey",
    "AuditEntry",
    "EndedSession",
    "LoginFailure",
    "Base",
    "Contract",
    "ContractJob",
    "DocumentSequence",
    "EnterpriseAccount",
    "ForbiddenKeyword",
    "KeywordListVersion",
    "Invoice",
    "LedgerEvent",
    "Message",
    "MessagePart",
    "MobileOriginated",
    "PortedNumber",
    "Notification",
    "ProviderProfile",
    "Receipt",
    "ReplyFragment",
    "SendLog",
    "SendLogArchive",
    "SendLogHead",
    "DispatchRate",
    "DispatchWorker",
    "SendRate",
    "SendRequest",
    "StaffUser",
    "StatementImport",
    "StatementLine",
    "SubAccount",
    "Unsubscribe",
    "UsageDay",
    "WorkingDayOverride",
]
