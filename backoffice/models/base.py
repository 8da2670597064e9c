"""Declarative base with a constraint naming convention (stable Alembic migrations) and the
column types every model shares: money as exact integers of 0.0001 元, times as aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Money events' ids: "reversal-receipt-<bank>-<bank reference up to 64>#<receipt id>" is the longest.
EVENT_ID_LENGTH = 200
MONEY_SCALE = Decimal("10000")  # 1 unit = 0.0001 元: prices have up to 4 decimals


class Money(sa.types.TypeDecorator[Decimal]):
    """A CNY amount stored as an integer count of 0.0001 元, so SQL arithmetic (the atomic
    conditional debit) is exact on SQLite and PostgreSQL alike."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | int | None, dialect: sa.Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money must be Decimal, not float")
        scaled = Decimal(value) * MONEY_SCALE
        if scaled != scaled.to_integral_value():
            raise ValueError(f"amount {value} has more than 4 decimal places")
        return int(scaled)

    def process_result_value(self, value: int | None, dialect: sa.Dialect) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(value) / MONEY_SCALE).quantize(Decimal("0.0001"))


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite forgets time zones)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: times are stored in UTC and must be aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
