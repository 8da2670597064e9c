"""The provider's identity per template (name, address, bank…), editable by administrators;
the template's demo values apply until one is saved."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.clock import utcnow
from backoffice.models.base import Base, UTCDateTime


class ProviderProfile(Base):
    __tablename__ = "provider_profiles"

    template_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    identity: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    seal_png: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
