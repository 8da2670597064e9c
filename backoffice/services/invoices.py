"""Invoices: numbered without gaps per year (FP-YYYY-NNNNNN), rendered to PDF with the same CJK
font handling as contracts, stored with their hash. A confirmed recharge gets a paid invoice;
an invoice-first contract (template sms_business_service) gets an unpaid one at signing, due a
number of Chinese working days later, and it is marked paid when the money is confirmed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import local_today
from backoffice.errors import NotFound
from backoffice.models import AuditEntry, Contract, EnterpriseAccount, Invoice, Receipt, WorkingDayOverride
from backoffice.money import capitals, format_price
from backoffice.services.numbering import next_number
from backoffice.services.staged_files import stage_file
from reports import invoice as invoice_report
from reports import workdays


def working_day_overrides(session: Session) -> dict[date, bool]:
    return dict(session.execute(sa.select(WorkingDayOverride.day, WorkingDayOverride.is_working_day)).all())


#: What a contract's terms give when they name no payment term (004 §3: 5 working days).
DEFAULT_PAYMENT_WORKING_DAYS = 5


def payment_working_days(terms: Mapping[str, Any]) -> int:
    """The working days a contract gives the customer to pay its invoice (its template's
    `payment_due_working_days`, as the contract keeps it in its terms)."""
    return int(terms.get("payment_due_working_days") or DEFAULT_PAYMENT_WORKING_DAYS)


def due_date(session: Session, issued_on: date, working_days: int) -> date:
    """`working_days` Chinese working days after `issued_on` (official holidays and make-up
    working days, from the calendar library or the administrator's table for later years)."""
    return workdays.add_working_days(issued_on, working_days, working_day_overrides(session))


def latest_contract(session: Session, account: EnterpriseAccount) -> Contract | None:
    return session.scalar(sa.select(Contract).where(Contract.account_id == account.id).order_by(Contract.id.desc()).limit(1))


def _contract_invoice_in(status: str) -> tuple[sa.ColumnElement[bool], ...]:
    """An invoice issued for a contract at signing (due by a date), in `status`."""
    return (Invoice.status == status, Invoice.contract_id.is_not(None), Invoice.due_on.is_not(None))


def _contract_invoices(account_id: int, status: str) -> sa.Select[tuple[Invoice]]:
    """The account's invoices issued for a contract at signing (due by a date), in `status`, oldest first."""
    return sa.select(Invoice).where(Invoice.account_id == account_id, *_contract_invoice_in(status)).order_by(Invoice.id)


def amounts_owed(session: Session, invoices: list[Invoice]) -> dict[int, Decimal]:
    """What is still owed on each of `invoices` (by id): nothing on a paid or void one, the whole
    amount on another unpaid one, and on an unpaid contract invoice what the account's
    receivable leaves of it.

    A contract's invoice is paid in instalments without a second invoice, so its amount is not
    what the customer still owes: the account's receivable is. Confirmations pay the oldest open
    contract invoice first, so what was paid (their amounts less the receivable) is taken off
    them oldest first. Found by an exploratory test: after an instalment was reversed the
    reopened 1,750.00 invoice, and the overdue list, asked for all of it while 10.00 was owed."""
    owed = {i.id: i.amount if i.status == "unpaid" else Decimal(0) for i in invoices}
    accounts = {i.account_id for i in invoices if i.status == "unpaid" and i.contract_id is not None and i.due_on is not None}
    for account_id in sorted(accounts):
        receivable = session.scalar(sa.select(EnterpriseAccount.receivable).where(EnterpriseAccount.id == account_id)) or Decimal(0)
        open_ones = list(session.scalars(_contract_invoices(account_id, "unpaid")))
        paid = max(Decimal(0), sum((i.amount for i in open_ones), Decimal(0)) - receivable)
        for invoice in open_ones:
            taken = min(paid, invoice.amount)
            if invoice.id in owed:
                owed[invoice.id] = invoice.amount - taken
            paid -= taken
    return owed


def _parties(session: Session, account: EnterpriseAccount, contract: Contract | None) -> tuple[invoice_report.Party, invoice_report.Party]:
    from backoffice.services.contracts import provider_settings
    from backoffice.services.templates import get_template

    provider: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    if contract is not None:
        try:
            provider = provider_settings(session, get_template(contract.template_id))[0]
        except NotFound:  # the template folder was removed; the contract keeps its own copy
            provider = {}
        fields = contract.fields or {}
    seller = invoice_report.Party(
        name=provider.get("name") or "服务提供方",
        address=provider.get("address") or None,
        phone=provider.get("phone") or None,
        bank_name=provider.get("bank_name") or None,
        bank_account=provider.get("bank_account") or None,
        tax_id=provider.get("tax_id") or None,
    )
    buyer = invoice_report.Party(
        name=account.customer_name,
        address=fields.get("customer.address") or None,
        phone=fields.get("customer.contact_phone") or fields.get("customer.phone") or None,
        bank_name=None,
        bank_account=None,
        tax_id=fields.get("customer.tax_id") or None,
    )
    return seller, buyer


def _recharge_line(amount: Decimal, price: Decimal) -> dict[str, Any]:
    messages = (amount / price).to_integral_value(rounding=ROUND_DOWN) if price > 0 else Decimal(0)
    exact = price > 0 and messages * price == amount
    if exact:
        return {"description": "短信充值", "quantity": int(messages), "unit": "条", "unit_price": str(price), "amount": str(amount)}
    note = f"（按 {format_price(price)} 元/条，约 {int(messages):,} 条）" if price > 0 else ""
    return {"description": f"短信充值{note}", "quantity": None, "unit": None, "unit_price": None, "amount": str(amount)}


def _contract_lines(contract: Contract) -> list[dict[str, Any]]:
    lines = [
        {
            "description": f"短信服务预付费（合同 {contract.contract_no} 初始充值）",
            "quantity": contract.initial_messages,
            "unit": "条",
            "unit_price": str(contract.price_per_message),
            "amount": str(contract.initial_amount),
        }
    ]
    if contract.opening_fee:
        lines.append(
            {
                "description": "开户费",
                "quantity": 1,
                "unit": "项",
                "unit_price": str(contract.opening_fee),
                "amount": str(contract.opening_fee),
            }
        )
    return lines


def _render(
    session: Session,
    invoice: Invoice,
    documents_root: Path,
    *,
    today: date,
    contract: Contract | None,
    receipt: Receipt | None,
    suffix: str = "",
) -> None:
    """Render and stage the invoice's PDF; a re-rendered invoice (now paid) gets a new file
    beside the one the customer already received."""
    seller, buyer = _parties(session, invoice.account, contract)
    owed = amounts_owed(session, [invoice])[invoice.id]
    data = invoice_report.InvoiceData(
        number=invoice.number,
        issued_on=invoice.issued_on,
        due_on=invoice.due_on,
        status=invoice.status_name(today, owed),
        provider=seller,
        customer=buyer,
        lines=[
            invoice_report.InvoiceLine(
                description=x["description"],
                quantity=x.get("quantity"),
                unit=x.get("unit"),
                unit_price=Decimal(x["unit_price"]) if x.get("unit_price") is not None else None,
                amount=Decimal(x["amount"]),
            )
            for x in invoice.lines
        ],
        total=invoice.amount,
        total_in_capitals=capitals(invoice.amount),
        contract_number=contract.contract_no if contract else None,
        receipt_reference=receipt.bank_reference if receipt else None,
        notes=f"账户：{invoice.account.code}",
        owed=owed if invoice.status == "unpaid" and owed < invoice.amount else None,
    )
    pdf = invoice_report.render_invoice_pdf(data)
    path = documents_root / "invoices" / str(invoice.issued_on.year) / f"{invoice.number}{suffix}.pdf"
    stage_file(session, path, pdf)
    invoice.pdf_file, invoice.pdf_sha256 = str(path.relative_to(documents_root)), hashlib.sha256(pdf).hexdigest()


def _new_invoice(session: Session, account: EnterpriseAccount, lines: list[dict[str, Any]], *, issued_on: date, **values: Any) -> Invoice:
    number = f"FP-{issued_on.year}-{next_number(session, 'invoice', issued_on.year):06d}"
    invoice = Invoice(
        number=number,
        account=account,
        issued_on=issued_on,
        amount=sum((Decimal(x["amount"]) for x in lines), Decimal(0)),
        lines=lines,
        pdf_file="",
        pdf_sha256="",
        **values,
    )
    session.add(invoice)
    session.flush()
    return invoice


def invoice_at_signing(
    session: Session, contract: Contract, *, working_days: int, documents_root: Path, today: date | None = None
) -> Invoice:
    """An invoice-first contract: the provider invoices at signing; the customer pays within
    `working_days` Chinese working days."""
    today = today or local_today()
    invoice = _new_invoice(
        session,
        contract.account,
        _contract_lines(contract),
        issued_on=today,
        due_on=due_date(session, today, working_days),
        contract_id=contract.id,
    )
    _render(session, invoice, documents_root, today=today, contract=contract, receipt=None)
    return invoice


def invoice_for_receipt(session: Session, receipt: Receipt, *, settled: Decimal, documents_root: Path, today: date) -> Invoice:
    """The invoice for a confirmed receipt (`invoices_for_receipt`): the one issued for it, else
    the contract's invoice it paid towards."""
    return invoices_for_receipt(session, receipt, settled=settled, documents_root=documents_root, today=today)[-1]


def invoices_for_receipt(session: Session, receipt: Receipt, *, settled: Decimal, documents_root: Path, today: date) -> list[Invoice]:
    """The invoices a confirmed receipt settled or issued, the contract's first: the part that
    settled the contract counts towards the contract's invoice (paid once nothing is owed; a part
    payment gets no second invoice), or is invoiced now, with the contract's lines, if none was
    issued; the rest is a recharge at the account's price, invoiced now. Both, when a receipt paid
    the contract's invoice and more (found by an exploratory test: the customer was told of the
    new invoice only, never that the first was paid). `receipt.account` is as the credit left it."""
    account = receipt.account
    contract = latest_contract(session, account)
    paid: Invoice | None = None
    lines: list[dict[str, Any]] = []
    rest = receipt.amount
    if settled > 0:
        open_invoice = session.scalar(
            sa.select(Invoice)
            .where(Invoice.account_id == account.id, Invoice.status == "unpaid", Invoice.contract_id.is_not(None))
            .order_by(Invoice.id)
        )
        if open_invoice is not None:
            # Already invoiced: a payment in instalments is not invoiced again; the invoice is paid
            # once nothing is owed under the contracts any more (the receivable, as credited).
            paid, rest = open_invoice, receipt.amount - settled
            if account.receivable <= 0:
                open_invoice.status, open_invoice.paid_on, open_invoice.receipt_id = "paid", today, receipt.id
                # (named by the receipt: paid again after a reversal, the first paid file stays as sent)
                _render(
                    session, open_invoice, documents_root, today=today, contract=contract, receipt=receipt, suffix=f"-paid-{receipt.id}"
                )
            else:  # an instalment: the invoice the customer is sent says what is still owed
                session.flush()
                _render(session, open_invoice, documents_root, today=today, contract=contract, receipt=None, suffix=f"-part-{receipt.id}")
        elif contract is not None and settled == contract.initial_amount + contract.opening_fee:
            lines, rest = _contract_lines(contract), receipt.amount - settled
        else:
            lines = [{"description": "合同款", "quantity": None, "unit": None, "unit_price": None, "amount": str(settled)}]
            rest = receipt.amount - settled
    if rest > 0:
        lines.append(_recharge_line(rest, account.price_per_message))
    if not lines:
        assert paid is not None
        return [paid]
    invoice = _new_invoice(
        session,
        account,
        lines,
        issued_on=today,
        due_on=None,
        status="paid",
        paid_on=today,
        receipt_id=receipt.id,
        contract_id=contract.id if contract else None,
    )
    _render(session, invoice, documents_root, today=today, contract=contract, receipt=receipt)
    return [invoice] if paid is None else [paid, invoice]


def void_for_receipt(session: Session, receipt: Receipt, *, documents_root: Path, today: date) -> list[Invoice]:
    """A reversed receipt: the invoice issued for it is void (the number stays used, never
    reissued); a contract's invoice is owed again when anything is owed again, whichever of its
    instalments was reversed (`receipt.account` as the reversal left it). Each is rendered again
    beside the file the customer had (found by a review: the portal kept serving 已付款).
    Returns the invoices changed, in their new status (void, or unpaid: owed again)."""
    changed: list[tuple[Invoice, str]] = []
    for invoice in session.scalars(sa.select(Invoice).where(Invoice.receipt_id == receipt.id)):
        if invoice.contract_id is not None and invoice.due_on is not None:
            invoice.status, invoice.paid_on, invoice.receipt_id = "unpaid", None, None  # the contract is owed again
            changed.append((invoice, f"-reopened-{receipt.id}"))
        else:
            invoice.status = "void"
            changed.append((invoice, "-void"))
    if receipt.account.receivable > 0:  # an earlier instalment reversed: the invoice the last one paid is open again
        for invoice in session.scalars(_contract_invoices(receipt.account_id, "paid")):
            invoice.status, invoice.paid_on, invoice.receipt_id = "unpaid", None, None
            changed.append((invoice, f"-reopened-{receipt.id}"))
    if _settled_by(session, receipt) > 0:
        # An instalment of an invoice still part paid: it stays unpaid, and owes more now (found
        # by an exploratory test: its last file, and so the portal, kept the smaller figure).
        seen = {invoice.id for invoice, _ in changed}
        part_paid = session.scalars(_contract_invoices(receipt.account_id, "unpaid"))
        changed += [(invoice, f"-reopened-{receipt.id}") for invoice in part_paid if invoice.id not in seen]
    for invoice, suffix in changed:
        contract = session.get(Contract, invoice.contract_id) if invoice.contract_id is not None else None
        _render(
            session,
            invoice,
            documents_root,
            today=today,
            contract=contract,
            receipt=receipt if invoice.status == "void" else None,
            suffix=suffix,
        )
    return [invoice for invoice, _ in changed]


def _settled_by(session: Session, receipt: Receipt) -> Decimal:
    """What of a receipt went to what the customer owed under its contracts (its credit's event)."""
    from backoffice.models import LedgerEvent

    if receipt.ledger_event_id is None:
        return Decimal(0)
    payload = session.scalar(sa.select(LedgerEvent.payload).where(LedgerEvent.event_id == receipt.ledger_event_id)) or {}
    return Decimal(str(payload.get("settles_receivable") or 0))


@dataclass(frozen=True)
class DueDateMove:
    """An unpaid invoice whose due date a change of the working-day calendar moved."""

    invoice: Invoice
    old: date
    new: date


def recompute_due_dates(
    session: Session, days: Iterable[date], *, actor: str, documents_root: Path, today: date | None = None
) -> list[DueDateMove]:
    """After the working-day calendar changed on `days` (a holiday or a make-up working day
    entered, changed or removed), count again the due dates of the unpaid invoices due in
    working days that those days fall within (issued on or before one, due on or after it), and
    move the ones that fall due later now; none is moved earlier than the customer was told. A
    paid or void invoice keeps its date: it is settled.

    A moved invoice is audited, rendered again beside the file the customer has (the PDF prints
    the due date), and the customer is sent the corrected invoice, as for any other change of
    an invoice they hold. Found by an exploratory test: the 2027 春节 entered after an invoice
    was issued left it due on the old date, and it was listed 已逾期 while the contract gave
    the customer until after the holidays."""
    from backoffice.services import audit, notifications
    from backoffice.services.credit import lock_accounts

    days = sorted(set(days))
    if not days:
        return []
    today = today or local_today()
    contract_invoice = _contract_invoice_in("unpaid")
    within = sa.or_(*(sa.and_(Invoice.issued_on <= day, Invoice.due_on >= day) for day in days))
    candidates = session.execute(sa.select(Invoice.id, Invoice.account_id).where(*contract_invoice, within)).all()
    if not candidates:
        return []
    # A confirmation marks an invoice paid holding its account's row: take the same locks first,
    # then read the invoices again, so one paid meanwhile is seen paid and left alone.
    lock_accounts(session, {row.account_id for row in candidates})
    invoices = session.scalars(
        sa.select(Invoice)
        .where(Invoice.id.in_([row.id for row in candidates]), *contract_invoice)
        .order_by(Invoice.id)
        .execution_options(populate_existing=True)
    ).all()
    overrides = working_day_overrides(session)
    moves: list[DueDateMove] = []
    for invoice in invoices:
        contract = session.get(Contract, invoice.contract_id)
        assert contract is not None and invoice.due_on is not None
        new = workdays.add_working_days(invoice.issued_on, payment_working_days(contract.terms), overrides)
        if new <= invoice.due_on:
            # A date the customer was given in writing is not shortened: a make-up working day
            # entered, or a holiday taken back, leaves it (a review of this change).
            continue
        old, invoice.due_on = invoice.due_on, new
        earlier = session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "move_invoice_due_date", AuditEntry.object_id == invoice.number)
        )
        sequence = (earlier or 0) + 1  # the file and the notice of each move are new ones
        audit.record(
            session,
            actor,
            "move_invoice_due_date",
            "invoice",
            invoice.number,
            old=old.isoformat(),
            new=new.isoformat(),
            calendar_days=[day.isoformat() for day in days],
        )
        session.flush()
        _render(session, invoice, documents_root, today=today, contract=contract, receipt=None, suffix=f"-due-{sequence}")
        notifications.invoice_due_moved(session, invoice, old=old, sequence=sequence, today=today)
        moves.append(DueDateMove(invoice, old, new))
    return moves


def get_invoice(session: Session, number: str) -> Invoice:
    invoice = session.scalar(sa.select(Invoice).where(Invoice.number == number))
    if invoice is None:
        raise NotFound(f"发票不存在：{number}")
    return invoice


def invoice_list(
    session: Session, *, account_id: int | None = None, overdue_only: bool = False, today: date | None = None
) -> list[Invoice]:
    query = sa.select(Invoice).order_by(Invoice.id.desc())
    if account_id is not None:
        query = query.where(Invoice.account_id == account_id)
    if overdue_only:
        query = query.where(Invoice.status == "unpaid", Invoice.due_on < (today or local_today()))
    return list(session.scalars(query))
