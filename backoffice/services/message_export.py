"""The customer's sent messages of a period as a CSV file Excel opens as it is (发送记录导出): the
traffic statistics 004 §2.2(2) owes the customer, one line a message and a line of totals that
adds up to what the sending cost the balance."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import SHANGHAI, local_today, to_local
from backoffice.errors import ValidationFailed
from backoffice.models import Message, SubAccount
from backoffice.models.messaging import NOTICE_CHARGE_KIND
from backoffice.money import format_price
from dispatch.numbers import CARRIER_NAMES

MAX_DAYS = 93  # a quarter at a time: the file is written while the web worker waits
HEADER = (
    "编号", "批次", "子号", "受理时间", "号码", "运营商", "内容", "条数",
    "计费（元）", "已退（元）", "实际费用（元）", "状态", "说明", "提交时间", "完成时间",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a cell Excel would run as a formula


@dataclass(frozen=True)
class ExportPeriod:
    first: date
    last: date  # inclusive, Beijing days


EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)


def export_period(first: str | None, last: str | None, *, verb: str = "导出") -> ExportPeriod:
    """The Beijing days asked for (YYYY-MM-DD; by default this month up to today), each bad value
    named under its field (`verb`: what is done with them, in the refusal of too long a range)."""
    today = local_today()
    errors: dict[str, str] = {}

    def day(text: str | None, field: str, label: str, default: date) -> date:
        if not text or not text.strip():
            return default
        try:
            given = date.fromisoformat(text.strip())
        except ValueError:
            errors[field] = f"{label}应为日期（年-月-日，如 {today:%Y-%m-%d}），收到的是 {text.strip()[:20]!r}"
            return default
        # Found by a review: 0001-01-01 and 9999-12-31 overflowed the times they become (a 500, or a
        # download of a header alone). (A month's page asks up to its last day, after today.)
        if not EARLIEST <= given <= LATEST:
            errors[field] = f"{label}应在 {EARLIEST} 至 {LATEST} 之间，收到的是 {given:%Y-%m-%d}"
            return default
        return given

    start = day(first, "from", "开始日期", today.replace(day=1))
    end = day(last, "to", "结束日期", today)
    if not errors and start > end:
        errors["to"] = f"结束日期（{end:%Y-%m-%d}）早于开始日期（{start:%Y-%m-%d}）"
    elif not errors and (end - start).days + 1 > MAX_DAYS:
        errors["to"] = f"一次最多{verb} {MAX_DAYS} 天的记录，请缩短日期范围"
    if errors:
        raise ValidationFailed(errors)
    return ExportPeriod(start, end)


def excel_text(value: str) -> str:
    """A cell of the customer's own text, kept from being run as a formula by Excel."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _when(moment: datetime | None) -> str:
    return to_local(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def export_messages(session: Session, account_id: int, period: ExportPeriod, *, sub_account_id: int | None = None) -> Iterator[str]:
    """The CSV's text in pieces: UTF-8 with a BOM (Excel on Chinese Windows reads it as such, not
    as GBK), numbers kept as text (="138…": Excel would show 1.38E+10), times in Beijing time, and a
    last line of totals. Only the customer's own sends (the platform's notices are not), only
    the sub-account's when `sub_account_id` is given."""
    start = datetime.combine(period.first, time(0), SHANGHAI)
    end = datetime.combine(period.last + timedelta(days=1), time(0), SHANGHAI)
    query = (
        sa.select(Message, SubAccount.login)
        .join(SubAccount, SubAccount.id == Message.sub_account_id)
        .where(
            Message.account_id == account_id,
            Message.charge_kind.is_distinct_from(NOTICE_CHARGE_KIND),
            Message.accepted_at >= start,
            Message.accepted_at < end,
        )
        .order_by(Message.id)
    )
    if sub_account_id is not None:
        query = query.where(Message.sub_account_id == sub_account_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    yield "\ufeff" + buffer.getvalue()
    count = segments = 0
    charged = refunded = Decimal(0)
    for message, login in session.execute(query.execution_options(yield_per=1000)):
        buffer.seek(0)
        buffer.truncate()
        count += 1
        segments += message.segments
        charged += message.charge
        refunded += message.refunded
        writer.writerow(
            (
                message.id, message.request_id, login, _when(message.accepted_at), f'="{message.recipient}"',
                CARRIER_NAMES.get(message.reported_carrier or message.carrier, message.carrier), excel_text(message.content),
                message.segments, format_price(message.charge), format_price(message.refunded), format_price(message.net_charge),
                message.status_name, excel_text(message.error or ""), _when(message.submitted_at), _when(message.done_at),
            )
        )  # fmt: skip
        yield buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    totals = (f"合计 {count} 条短信", "", "", "", "", "", "", segments, format_price(charged), format_price(refunded))
    writer.writerow((*totals, format_price(charged - refunded), "", "", "", ""))
    yield buffer.getvalue()
