"""Staff users (sales, finance, admin) and the audit log of who did what."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.clock import utcnow
from backoffice.models.base import EVENT_ID_LENGTH, Base, UTCDateTime

ROLES = {"sales": "销售", "finance": "财务", "admin": "管理员"}


class StaffUser(Base):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(64))
    password_hash: Mapped[str] = mapped_column(sa.String(256))
    role: Mapped[str] = mapped_column(sa.String(16))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # See backoffice.auth. Deferred, with no Python default: rows are written and read without it
    # by code that predates it (a database at an older revision, as the migration tests make).
    session_nonce: Mapped[str] = mapped_column(sa.String(32), server_default="", deferred=True)
    # A password an administrator set (a new user made in the web, a reset): changed at the next
    # login before anything else. Deferred with no Python default, as session_nonce.
    must_change_password: Mapped[bool] = mapped_column(server_default=sa.false(), deferred=True)

    __table_args__ = (sa.CheckConstraint("role in ('sales', 'finance', 'admin')", name="role"),)
    __mapper_args__ = {"eager_defaults": False}  # session_nonce is read when needed, not RETURNING at insert

    @property
    def role_name(self) -> str:
        return ROLES.get(self.role, self.role)


class AuditEntry(Base):
    """Append-only record of an action by a person (staff or customer) or a process."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(80))
    action: Mapped[str] = mapped_column(sa.String(64))
    object_type: Mapped[str] = mapped_column(sa.String(32))
    object_id: Mapped[str] = mapped_column(sa.String(EVENT_ID_LENGTH))  # ledger events' ids among them
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


class EndedSession(Base):
    """A login session ended by its logout (backoffice.auth): its cookie, copied before, opens
    nothing; the login's other sessions go on. Kept as long as a session cookie is accepted."""

    __tablename__ = "ended_sessions"

    token: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LoginFailure(Base):
    """A failed login (staff or customer), kept while it counts against that login and that
    address (backoffice.auth: too many within the window and logins are refused for a while)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(sa.String(100))  # as typed, case folded
    address: Mapped[str] = mapped_column(sa.String(64))  # the client's IP address
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    __table_args__ = (
        sa.Index("ix_login_failures_login_failed_at", "login", "failed_at"),
        sa.Index("ix_login_failures_address_failed_at", "address", "failed_at"),
    )
