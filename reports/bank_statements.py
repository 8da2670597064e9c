"""Bank statement CSV files, parsed into the credits finance matches against open receipts.

Two layouts are recognised automatically; the encoding is tried as UTF-8 (with or without a BOM),
then GB18030 (a superset of GBK, which Chinese online banking uses).

Generic layout
--------------
For any bank without a layout of its own: a CSV file in UTF-8 (a BOM is allowed), comma
separated, whose first line is exactly::

    date,amount,payer_name,payer_account,reference,memo

and then one transaction per line:

============== ======== ===============================================================
column         required content
============== ======== ===============================================================
date           yes      booking date: ``2026-11-20``, ``20261120`` or ``2026/11/20`` (``2026/11/5``)
amount         yes      yuan, a plain number with at most 2 decimals, no thousands
                        separator: ``1750`` or ``1750.00``. Positive = money received;
                        negative = money paid out (skipped, only counted); never 0
payer_name     no       who paid, as the bank shows it (empty for e.g. interest)
payer_account  no       the payer's bank account number
reference      credits  the bank's transaction number (流水号), unique in the file
memo           no       the bank's remark / the payer's message (附言)
============== ======== ===============================================================

Example::

    date,amount,payer_name,payer_account,reference,memo
    2026-11-20,1750.00,北京创联致信科技有限公司,110912345678901,K2026112000012,充值 AC1001
    2026-11-21,-35.50,,,K2026112100003,手续费

Fields containing a comma are quoted (``"a,b"``), as every spreadsheet does when saving CSV.
Empty lines are ignored.

China Merchants Bank (招商银行)
------------------------------
The 交易明细 export of CMB enterprise online banking, as saved (GBK): a few lines about the
account (账号, 币种, 查询日期 …), then a header row with, among others, 交易日, 借方金额, 贷方金额,
流水号, 摘要, 收(付)方名称 and 收(付)方账号. Columns are found by name, so their order and any
extra columns do not matter. Amounts may carry thousands separators (``50,000.00``) and a
currency sign (``￥``, ``¥``, ``RMB``); a row fills either 借方金额 (skipped) or 贷方金额. Empty
lines and summary lines (合计/总计 in one of the first three cells, a 共 N 笔 footer) are ignored.

Errors
------
The first line that cannot be read stops the import with `StatementError`, which says which
line and why (in Chinese, for the person who uploaded the file); nothing is half imported.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

GENERIC_HEADER = ("date", "amount", "payer_name", "payer_account", "reference", "memo")
LAYOUT_GENERIC = "generic"
LAYOUT_CMB = "cmb"
FEN = Decimal("0.01")
MAX_AMOUNT = Decimal("1e12")  # as a receipt: an amount the database holds with room to spare
#: A bank transaction number as a receipt takes it (services.receipts): a line that could not be
#: entered as a receipt is refused at import, not left unmatched for ever.
REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_/.]{0,63}")
HEADER_SEARCH_LINES = 30  # bank preambles are a handful of lines; do not scan a whole file

# [0-9], not \d: \d also matches full-width and other scripts' digits.
# Month and day may be one digit with a separator: Excel writes 2026/11/5 when it saves a CSV again.
_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{1,2})-([0-9]{1,2})|([0-9]{2})([0-9]{2})|/([0-9]{1,2})/([0-9]{1,2}))")
_PLAIN_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_BANK_AMOUNT = re.compile(r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?")
#: A bank layout's amount may carry the currency: ¥70,000.00, ￥70,000.00, RMB 70,000.00.
_CURRENCY = re.compile(r"^(?:[¥￥]|RMB|CNY)\s*", re.IGNORECASE)
#: A summary line a bank puts at the end: 合计/总计 in one of its first cells, or a lone
#: "共 5 笔，收入 4 笔…" (found by an exploratory test: refused as a line of the wrong width).
_FOOTER = re.compile(r"^(?:本页|本期)?(?:合计|总计|小计)|^共计?\s*\d+\s*笔")
_EXCEL_TEXT = re.compile(r'="(.*)"', re.DOTALL)  # banks write ="0123" so Excel keeps leading zeros


def normal_reference(text: str) -> str:
    """A bank transaction number as stored and compared: without spaces, upper-case (one
    transfer, however a bank's export or a person spaced or cased it)."""
    return re.sub(r"\s+", "", text).upper()


class StatementError(ValueError):
    """The first line of a statement file that cannot be read, with the reason in Chinese."""

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"第 {line_no} 行：{reason}")
        self.line_no = line_no
        self.reason = reason


@dataclass(frozen=True)
class StatementLine:
    """One credit (money received) on the statement; `line_no` is its line in the file."""

    line_no: int
    booked_on: date
    amount: Decimal
    payer_name: str
    payer_account: str | None
    reference: str
    memo: str


@dataclass(frozen=True)
class Statement:
    """The credits of one file, the layout it was read as, and how many debit rows were skipped."""

    layout: str
    lines: list[StatementLine]
    skipped_debits: int


@dataclass(frozen=True)
class _Row:
    line_no: int
    cells: list[str]


@dataclass(frozen=True)
class _BankLayout:
    """A bank's export, described by the names of its columns (first name found wins)."""

    name: str
    label: str
    date: Sequence[str]
    debit: Sequence[str]
    credit: Sequence[str]
    payer_name: Sequence[str]
    payer_account: Sequence[str]
    reference: Sequence[str]
    memo: Sequence[str]  # all found are joined

    def required(self) -> list[Sequence[str]]:
        return [self.date, self.debit, self.credit, self.payer_name, self.reference]


CMB = _BankLayout(
    name=LAYOUT_CMB,
    label="招商银行",
    date=("交易日", "交易日期"),
    debit=("借方金额",),
    credit=("贷方金额",),
    payer_name=("收(付)方名称", "收（付）方名称"),
    payer_account=("收(付)方账号", "收（付）方账号"),
    reference=("流水号", "交易流水号"),
    memo=("摘要", "用途", "业务摘要", "其它摘要", "其他摘要", "扩展摘要"),
)
BANK_LAYOUTS = (CMB,)


def parse_statement(data: bytes) -> Statement:
    """The credits in a bank statement CSV export, its layout detected from the content.

    Raises `StatementError` for the first line that cannot be read.
    """
    rows = _rows(_decode(data))
    first = next((row for row in rows if any(row.cells)), None)
    if first is None:
        raise StatementError(1, "文件是空的")
    if tuple(first.cells) == GENERIC_HEADER:
        return _parse_generic(rows, first)
    for layout in BANK_LAYOUTS:
        for row in rows[:HEADER_SEARCH_LINES]:
            if all(_find(row.cells, names) is not None for names in layout.required()):
                return _parse_bank(layout, rows, row)
    known = "、".join(layout.label for layout in BANK_LAYOUTS)
    raise StatementError(
        first.line_no, f"无法识别的表头：通用格式的第一行应为 {','.join(GENERIC_HEADER)}；或上传{known}网银导出的交易明细 CSV"
    )


def _decode(data: bytes) -> str:
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise StatementError(1, "这是 Excel 文件，不是 CSV：请在网银中导出 CSV，或在 Excel 中“另存为 CSV”")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise StatementError(data[: exc.start].count(b"\n") + 1, "文件编码无法识别：请保存为 UTF-8 或 GBK 编码的 CSV") from None


def _rows(text: str) -> list[_Row]:
    """CSV rows with the file line each starts on; cells trimmed and unwrapped from ="…"."""
    if "\x00" in text:
        raise StatementError(text[: text.index("\x00")].count("\n") + 1, "文件含有二进制内容，不是 CSV")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[_Row] = []
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return rows
        except csv.Error:
            raise StatementError(start, "引号不配对，无法拆分各列") from None
        rows.append(_Row(start, [_clean(cell) for cell in cells]))
        start = reader.line_num + 1


def _clean(cell: str) -> str:
    cell = cell.strip().lstrip("\t").strip()
    match = _EXCEL_TEXT.fullmatch(cell)
    return match.group(1).strip() if match else cell


def _find(header: list[str], names: Sequence[str]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _parse_date(text: str, line_no: int, column: str) -> date:
    match = _DATE.fullmatch(text)
    if not match:
        raise StatementError(line_no, f"{column}“{text}”不是日期，应为 YYYY-MM-DD、YYYYMMDD 或 YYYY/MM/DD")
    year, *rest = match.groups()
    month, day = [part for part in rest if part is not None]
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise StatementError(line_no, f"{column}“{text}”不是有效日期") from None


def _is_footer(cells: Sequence[str], at_date: int) -> bool:
    """A summary line, not a transaction: no date where the transactions have theirs."""
    dated = at_date < len(cells) and _DATE.fullmatch(cells[at_date]) is not None
    return not dated and any(_FOOTER.match(cell) for cell in cells[:3])


def _parse_amount(text: str, line_no: int, column: str, *, thousands: bool) -> Decimal:
    """An amount of yuan with at most 2 decimals; the sign is kept (only plain numbers carry one)."""
    pattern = _BANK_AMOUNT if thousands else _PLAIN_AMOUNT
    if thousands:
        text = _CURRENCY.sub("", text)
    if not pattern.fullmatch(text):
        hint = "" if thousands or "," not in text else "（不要使用千位分隔符）"
        raise StatementError(line_no, f"{column}“{text}”不是金额{hint}")
    amount = Decimal(text.replace(",", ""))
    if abs(amount) >= MAX_AMOUNT:  # before quantize, which fails past 28 digits
        raise StatementError(line_no, f"{column}“{text[:40]}”过大（应小于 1 万亿元）")
    if amount != amount.quantize(FEN):
        raise StatementError(line_no, f"{column}“{text}”超过 2 位小数")
    if amount == 0:
        raise StatementError(line_no, f"{column}不能为 0")
    if abs(amount) >= MAX_AMOUNT:
        raise StatementError(line_no, f"{column}“{text}”过大（应小于 1 万亿元）")
    return amount.quantize(FEN)


def _check_width(row: _Row, width: int) -> list[str]:
    cells = row.cells
    while len(cells) > width and cells[-1] == "":  # a trailing comma is harmless
        cells = cells[:-1]
    if len(cells) != width:
        raise StatementError(row.line_no, f"应有 {width} 列，实际 {len(cells)} 列（含逗号的内容需加英文双引号）")
    return cells


class _Collector:
    """Accumulates credits, refusing a bank transaction number seen twice in one file."""

    def __init__(self) -> None:
        self.lines: list[StatementLine] = []
        self.skipped_debits = 0
        self._seen: dict[str, int] = {}

    def add(self, line: StatementLine, reference_label: str) -> None:
        # Some exports space the number out (CMB 2026 1120 0001): the transfer's reference is
        # the same without the spaces, as finance types it on a receipt. Upper-cased, as a
        # receipt stores it (found by an exploratory test: k-html-1 in one export and K-HTML-1
        # in the next were two lines of one transfer, the second never to be cleared; and K1 and
        # k1 in one file both passed the check for a number seen twice).
        line = dataclasses.replace(line, reference=normal_reference(line.reference))
        if not line.reference:
            raise StatementError(line.line_no, f"收入记录缺少{reference_label}")
        if not REFERENCE.fullmatch(line.reference):
            raise StatementError(
                line.line_no, f"{reference_label}“{line.reference[:70]}”应为 1–64 位字母、数字或 - _ / .，无法据此登记到账"
            )
        if line.payer_account is not None and len(line.payer_account) > 64:
            raise StatementError(line.line_no, f"付款账号超过 64 位：{line.payer_account[:70]}")
        if line.reference in self._seen:
            raise StatementError(line.line_no, f"{reference_label}“{line.reference}”与第 {self._seen[line.reference]} 行重复")
        self._seen[line.reference] = line.line_no
        self.lines.append(line)

    def statement(self, layout: str) -> Statement:
        return Statement(layout=layout, lines=self.lines, skipped_debits=self.skipped_debits)


def _parse_generic(rows: list[_Row], header: _Row) -> Statement:
    collector = _Collector()
    for row in rows:
        if row.line_no <= header.line_no or not any(row.cells):
            continue
        booked, amount_text, payer_name, payer_account, reference, memo = _check_width(row, len(GENERIC_HEADER))
        booked_on = _parse_date(booked, row.line_no, "date")
        amount = _parse_amount(amount_text, row.line_no, "amount", thousands=False)
        if amount < 0:
            collector.skipped_debits += 1
            continue
        line = StatementLine(row.line_no, booked_on, amount, payer_name, payer_account or None, reference, memo)
        collector.add(line, "reference（银行流水号）")
    return collector.statement(LAYOUT_GENERIC)


def _parse_bank(layout: _BankLayout, rows: list[_Row], header: _Row) -> Statement:
    columns = header.cells

    def index(names: Sequence[str]) -> int:
        found = _find(columns, names)
        assert found is not None  # detection checked every required column
        return found

    at_date, at_debit, at_credit, at_name, at_reference = (index(names) for names in layout.required())
    at_account = _find(columns, layout.payer_account)
    at_memo = [columns.index(name) for name in layout.memo if name in columns]

    collector = _Collector()
    for row in rows:
        if row.line_no <= header.line_no or not any(row.cells) or _is_footer(row.cells, at_date):
            continue
        cells = _check_width(row, len(columns))
        booked_on = _parse_date(cells[at_date], row.line_no, columns[at_date])
        debit_text, credit_text = cells[at_debit], cells[at_credit]
        if debit_text and credit_text:
            raise StatementError(row.line_no, f"{columns[at_debit]}和{columns[at_credit]}不能同时有值")
        if not debit_text and not credit_text:
            raise StatementError(row.line_no, f"{columns[at_debit]}和{columns[at_credit]}都为空")
        if debit_text:
            _parse_amount(debit_text, row.line_no, columns[at_debit], thousands=True)
            collector.skipped_debits += 1
            continue
        amount = _parse_amount(credit_text, row.line_no, columns[at_credit], thousands=True)
        payer_account = cells[at_account] if at_account is not None else ""
        memo = " / ".join(dict.fromkeys(cells[i] for i in at_memo if cells[i]))
        line = StatementLine(row.line_no, booked_on, amount, cells[at_name], payer_account or None, cells[at_reference], memo)
        collector.add(line, columns[at_reference])
    return collector.statement(layout.name)
