"""The outbox of notifications to customers (invoices, receipts, renewal and tariff notices).

A business change queues a notification in its own transaction, under a key saying what it is
about, so it is queued once however often the change is retried. A job sends them: e-mail over
SMTP (the PDF attached) when a server is configured, otherwise into the outbox folder an
administrator page lists; SMS through the platform's own dispatcher. A notification is claimed
with one conditional UPDATE before it is sent, so two runs of the job never send it twice; a send
that was interrupted is not retried blindly but marked for an administrator to look at."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backoffice.clock import SHANGHAI, chinese_date, to_local, utcnow
from backoffice.models import Contract, EnterpriseAccount, Invoice, Notification, Receipt
from backoffice.money import format_money
from backoffice.services.staged_files import recover_file
from ledger.books import write_atomically

log = logging.getLogger(__name__)

RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=6))
STALE_SENDING = timedelta(minutes=30)
_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$", re.ASCII)


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int
    user: str
    password: str
    sender: str
    outbox: Path
    documents_root: Path
    timeout: float = 20.0
    security: str = ""  # ssl / starttls / none; "" = ssl on port 465, else starttls (config: SMTP_SECURITY)

    @property
    def tls(self) -> str:
        mode = (self.security or ("ssl" if self.port == 465 else "starttls")).lower()
        if mode not in ("ssl", "starttls", "none"):
            raise ValueError(f"SMTP_SECURITY must be ssl, starttls or none, not {self.security!r}")
        return mode


#: When notices go out (Beijing time), e-mail and SMS alike, whatever made them: the renewal
#: notice's job runs at the start (jobs.JOB_HOUR); one made at night waits for it: the expiry at
#: 00:00, a job run late after the scheduler was down (found by an exploratory test: the expiry SMS
#: went at midnight), a resend, and what staff do late (a receipt confirmed at 02:00 texted the
#: customer then). Both channels wait, as the jobs' always did: the SMS points to the e-mail.
NOTICE_HOURS = (time(9, 0), time(21, 0))


def in_notice_hours(moment: datetime) -> datetime:
    """`moment`, or when it is outside NOTICE_HOURS, the next start of them (09:00 Beijing)."""
    local = to_local(moment)
    start, end = NOTICE_HOURS
    if start <= local.time() < end:
        return moment
    day = local.date() if local.time() < start else local.date() + timedelta(days=1)
    return datetime.combine(day, start, tzinfo=SHANGHAI).astimezone(UTC)


def _see_more(account: EnterpriseAccount) -> str:
    """Where an SMS points for the rest: the e-mail, or the portal when the account has no
    e-mail address (found by a review: "详见邮件" went to customers with none)."""
    return "详见邮件" if account.contact_email else "详情及发票请登录客户门户查看"


def mobile_of(*candidates: str | None) -> str | None:
    """The first candidate that is a mainland mobile number, normalised to 11 digits."""
    for raw in candidates:
        match = _MOBILE.match(re.sub(r"[\s\-]", "", raw or ""))
        if match:
            return match.group(1)
    return None


def sms_address(account: EnterpriseAccount) -> str | None:
    """Where the account's SMS notices go: its mobile, else the contract's phone if a mobile."""
    return mobile_of(account.reserved_mobile, account.contact_phone)


def queue(
    session: Session,
    *,
    key: str,
    channel: str,
    recipient: str | None,
    body: str,
    subject: str = "",
    account: EnterpriseAccount | None = None,
    attachments: Iterable[str] = (),
    unreachable: str | None = None,
) -> Notification | None:
    """Queue one notification, once per key (None when the key is already queued or there is
    nobody to send it to). `unreachable`: with no recipient, keep it as failed for this reason;
    not sent before NOTICE_HOURS (made at night, it waits for 09:00), whatever made it."""
    if not recipient and unreachable is None:
        return None
    existing = session.scalar(sa.select(Notification).where(Notification.key == key))
    if existing is not None:
        return existing
    note = Notification(
        key=key, channel=channel, recipient=recipient or "", subject=subject, body=body, attachments=list(attachments), account=account,
        next_attempt_at=in_notice_hours(utcnow()),
    )  # fmt: skip
    if not recipient:
        note.status, note.last_error = "failed", unreachable
    session.add(note)
    return note


#: The outbox's error for a notice nobody could be sent (`_both`).
UNREACHABLE = "客户没有电子邮箱，也没有手机号码（合同只留了固定电话）：请人工通知客户，用 account contact 补充电子邮箱或手机号码后可重发"


def _both(
    session: Session,
    key: str,
    account: EnterpriseAccount,
    subject: str,
    body: str,
    sms: str,
    attachments: Iterable[str] = (),
) -> bool:
    """Queue the e-mail and the SMS the account has addresses for (both held to NOTICE_HOURS);
    False when it has neither. Then the notice is kept in the outbox as failed, naming why, for
    staff to tell the customer (found by a review: 000/001 contracts ask for one phone, often a
    landline, and no e-mail, so their renewal and expiry notices went nowhere while the job said
    they were sent)."""
    mobile = sms_address(account)
    # With neither, both are kept (failed), so that whichever address staff add (`account contact`), that one's resend goes out.
    unreachable = UNREACHABLE if not account.contact_email and not mobile else None
    queue(
        session,
        key=f"{key}:email",
        channel="email",
        recipient=account.contact_email,
        subject=subject,
        body=body,
        account=account,
        attachments=attachments,
        unreachable=unreachable,
    )
    queue(
        session,
        key=f"{key}:sms",
        channel="sms",
        recipient=mobile,
        body=sms,
        account=account,
        unreachable=unreachable,
    )
    return unreachable is None


def receipt_confirmed(session: Session, receipt: Receipt, invoices: list[Invoice], owed: dict[int, Decimal], *, activated: bool) -> None:
    """The money arrived: the credit, the balance, and every invoice the receipt settled or issued
    (`invoices.invoices_for_receipt`), each one's current PDF attached (found by an exploratory
    test: an overpaid contract invoice was paid and a second issued for the rest, and only the
    second was named and sent). `owed`: what is still owed on each unpaid one."""
    from backoffice.services.sending_settings import ended_contract

    account = receipt.account
    opened = "您的账户已开通，可以开始发送短信。\n" if activated else ""
    expired = ended_contract(session, account) is not None  # sending again needs a renewal
    if account.status == "suspended":  # an expired contract's account: the money is kept, sending is not (a review)
        # Suspended by an administrator, the contract still running, there is nothing to renew (an exploratory test).
        ask = "请与我方联系续约" if expired else "请与我方联系"
        opened = f"请注意：账户当前已暂停发送短信（{account.status_name}），余额保留；如需恢复发送，{ask}。\n"
    said, texted = [], []
    for invoice in invoices:
        if invoice.status == "unpaid":  # an instalment: the contract's invoice says what is still owed
            left = format_money(owed[invoice.id])
            said.append(
                f"合同发票 {invoice.number}（{format_money(invoice.amount)} 元）{invoice.unpaid_name(owed[invoice.id])}，尚欠 {left} 元"
            )
            texted.append(f"{invoice.number}（尚欠{left}元）")
        elif invoice.due_on is not None:  # the contract's invoice, issued before: this payment settled it
            said.append(f"合同发票 {invoice.number}（{format_money(invoice.amount)} 元）已付清")
            texted.append(f"{invoice.number}（已付清）")
        else:  # issued now for this payment
            said.append(f"已开具发票 {invoice.number}（{format_money(invoice.amount)} 元，已付款）")
            texted.append(invoice.number)
    numbers = "、".join(i.number for i in invoices)
    body = (
        f"尊敬的{account.customer_name}：\n\n"
        f"我们已确认收到您于 {chinese_date(receipt.paid_on)} 的汇款 {format_money(receipt.amount)} 元"
        f"（银行流水号 {receipt.bank_reference}），已充值到账户 {account.code}。\n"
        f"{opened}当前可用余额：{format_money(account.balance)} 元。\n"
        + "".join(f"{line}。\n" for line in said)
        + ("发票见附件。\n" if len(invoices) == 1 else f"以上 {len(invoices)} 张发票均见附件。\n")
    )
    sms = (
        f"您的汇款{format_money(receipt.amount)}元已到账，账户{account.code}可用余额{format_money(account.balance)}元，"
        f"发票{'、'.join(texted)}{'已发至邮箱' if account.contact_email else '可登录客户门户下载'}。"
    )
    if account.status == "suspended":
        sms += "账户当前暂停发送，如需恢复请联系我方" + ("续约。" if expired else "。")
    attachments = [i.pdf_file for i in invoices]
    _both(session, f"receipt-confirmed-{receipt.id}", account, f"到账确认及发票 {numbers}", body, sms, attachments)


def renewal_notice(session: Session, contract: Contract, *, object_by: date | None, extends: bool = False) -> bool:
    """The contract's term is ending: what happens then, and (yearly extension) until when the
    customer can object in writing; `extends` without `object_by`: that day has passed. False:
    the customer has no address to send it to (`_both`)."""
    account = contract.account
    end = contract.term_end
    assert end is not None
    if object_by is not None:
        then = f"如双方均无书面异议，合同将自动顺延一年。如不再续约，请于 {chinese_date(object_by)} 前书面通知我方。"
        sms_then = f"如无书面异议将自动顺延一年；如不续约，请于{chinese_date(object_by)}前书面通知。"
    elif extends:
        then = "提出书面异议的期限已过，合同将按约定自动顺延一年。如有疑问，请与我方销售人员联系。"
        sms_then = "书面异议期限已过，合同将自动顺延一年。"
    else:
        then = "到期后合同终止，账户将暂停发送短信（余额保留）。如需续约，请在到期前与我方销售人员联系。"
        sms_then = "到期后账户将暂停发送，如需续约请联系我方销售人员。"
    body = (
        f"尊敬的{account.customer_name}：\n\n"
        f"贵方合同 {contract.contract_no} 将于 {chinese_date(end)} 到期。\n{then}\n"
        f"账户 {account.code} 当前可用余额：{format_money(account.balance)} 元。\n"
    )
    sms = f"贵方合同{contract.contract_no}将于{chinese_date(end)}到期。{sms_then}"
    # (Its job runs at 09:00, or late at night after downtime: then it waits for 09:00, `_both`.)
    return _both(
        session, f"renewal-notice-{contract.contract_no}-{end.isoformat()}", account, f"合同到期提醒 {contract.contract_no}", body, sms
    )


def contract_expired(session: Session, contract: Contract, *, suspended: bool, objection_received_on: date | None = None) -> bool:
    """The contract ended with its term. `objection_received_on`: because of the customer's
    written objection, recorded after an automatic extension that it undid (said, so that the
    customer is not left believing the contract runs another year)."""
    account = contract.account
    assert contract.term_end is not None
    why = (
        f"贵方于 {chinese_date(objection_received_on)} 提出的书面异议已登记，合同不再顺延（此前的自动顺延已撤销）。"
        if objection_received_on
        else ""
    )
    stopped = (
        f"账户 {account.code} 已暂停发送短信，余额 {format_money(account.balance)} 元保留；如需续约或处理余额，请联系我方。"
        if suspended
        else ""
    )
    body = f"尊敬的{account.customer_name}：\n\n贵方合同 {contract.contract_no} 已于 {chinese_date(contract.term_end)} 到期终止。{why}\n{stopped}\n"
    # The SMS written as the other SMS notices are, without the e-mail's spaces around codes and numbers.
    sms = f"贵方合同{contract.contract_no}已到期终止。{(why + stopped).replace(' ', '')}"
    # Keyed by the term's end: a contract renewed and expired again tells the customer again.
    key = f"contract-expired-{contract.contract_no}-{contract.term_end}"
    # The expiry itself takes effect at 00:00 (jobs.AT_TERM_END); the customer is told at 09:00 (`_both`).
    return _both(session, key, account, f"合同已到期 {contract.contract_no}", body, sms)


def contract_renewed(session: Session, contract: Contract, *, previous_end: date, resumed: bool) -> bool:
    """The contract was renewed on paper to a new last day (`renewal.renew_contract`): the customer
    had been told when it ends or that it ended, and is told it runs on (found by a review: nothing
    was sent). `resumed`: the expiry had stopped the account, and it sends again. False: the
    customer has no address to send it to (`_both`)."""
    account = contract.account
    assert contract.term_end is not None
    until = chinese_date(contract.term_end)
    resumed = resumed and account.status == "active"  # (never paid: it opens when the money arrives)
    body = (
        f"尊敬的{account.customer_name}：\n\n"
        f"贵方合同 {contract.contract_no} 已续签，合同期延至 {until}（原到期日 {chinese_date(previous_end)}）。\n"
        + (f"账户 {account.code} 已恢复发送短信。\n" if resumed else "")
    )
    sms = f"贵方合同{contract.contract_no}已续签，合同期延至{until}。" + (f"账户{account.code}已恢复发送短信。" if resumed else "")
    # Keyed by both ends: each renewal of the contract is told once, however often it is retried.
    key = f"contract-renewed-{contract.contract_no}-{previous_end.isoformat()}-{contract.term_end.isoformat()}"
    return _both(session, key, account, f"合同续签确认 {contract.contract_no}", body, sms)


def _whose(receipt: Receipt) -> str:
    """A transfer the customer recorded in the portal is 您登记的汇款; one finance entered on the
    customer's behalf is not something the customer did (found by an exploratory test)."""
    return "您登记的汇款" if (receipt.recorded_by or "").startswith("sub:") else "您的汇款"


def receipt_rejected(session: Session, receipt: Receipt) -> None:
    account = receipt.account
    whose = _whose(receipt)
    body = (
        f"尊敬的{account.customer_name}：\n\n"
        f"{whose} {format_money(receipt.amount)} 元（银行流水号 {receipt.bank_reference}）未能确认入账。\n"
        f"原因：{receipt.rejection_reason}\n如有疑问，请联系我们的财务人员。\n"
    )
    sms = f"{whose}{format_money(receipt.amount)}元（流水号{receipt.bank_reference}）未能入账，原因：{receipt.rejection_reason}"
    _both(session, f"receipt-rejected-{receipt.id}", account, "汇款未能确认入账", body, sms)


def receipt_reversed(
    session: Session, receipt: Receipt, changed: list[Invoice], owed: dict[int, Decimal], *, account_reopened: bool
) -> None:
    """A confirmed receipt undone: the customer had been told it was credited (and their account
    opened), so they are told it no longer is, why, and what became of its invoices (found by an
    exploratory test: nothing was sent). The changed invoices' new files go with the e-mail."""
    account = receipt.account
    whose = _whose(receipt)
    voided = [i.number for i in changed if i.status == "void"]
    unpaid = [i for i in changed if i.status == "unpaid"]
    effects = ""
    if voided:
        effects += f"为该笔汇款开具的发票 {'、'.join(voided)} 已作废。\n"
    for invoice in unpaid:
        effects += f"合同发票 {invoice.number} {invoice.unpaid_name(owed[invoice.id])}，尚欠 {format_money(owed[invoice.id])} 元（更新后的发票见附件）。\n"
    if account_reopened:
        effects += "账户恢复为待付款开通状态，款项到账并经我方确认后重新开通，在此之前不能发送短信。\n"
    body = (
        f"尊敬的{account.customer_name}：\n\n"
        f"{whose} {format_money(receipt.amount)} 元（银行流水号 {receipt.bank_reference}）此前已确认入账，现已冲销，不再计入账户余额。\n"
        f"原因：{receipt.reversal_reason}\n{effects}"
        f"当前可用余额：{format_money(account.balance)} 元。如有疑问，请联系我们的财务人员。\n"
    )
    sms = (
        f"{whose}{format_money(receipt.amount)}元（流水号{receipt.bank_reference}）的入账已冲销，原因：{receipt.reversal_reason}。"
        f"账户{account.code}可用余额{format_money(account.balance)}元，{_see_more(account)}。"
    )
    _both(session, f"receipt-reversed-{receipt.id}", account, "汇款入账已冲销", body, sms, [i.pdf_file for i in changed])


def invoice_issued(session: Session, invoice: Invoice) -> None:
    account = invoice.account
    due = f"，请于 {chinese_date(invoice.due_on)} 前付款" if invoice.due_on else ""
    body = (
        f"尊敬的{account.customer_name}：\n\n"
        f"我们已为您开具发票 {invoice.number}，金额 {format_money(invoice.amount)} 元{due}。\n"
        "款项到账并经我方确认后，账户即开通。发票见附件。\n"
    )
    sms = f"发票{invoice.number}已开具，金额{format_money(invoice.amount)}元{due.replace(' ', '')}，{_see_more(account)}。"
    _both(session, f"invoice-issued-{invoice.number}", account, f"发票 {invoice.number}", body, sms, [invoice.pdf_file])


def invoice_due_moved(session: Session, invoice: Invoice, *, old: date, sequence: int, today: date) -> None:
    """The working-day calendar changed (official holidays or make-up working days entered
    after the invoice was issued) and moved the invoice's due date: the customer was told the
    old date, in the notice and on the invoice, so they get the corrected invoice."""
    from backoffice.services.invoices import amounts_owed

    account = invoice.account
    assert invoice.due_on is not None
    owed = amounts_owed(session, [invoice])[invoice.id]
    owing = f"尚欠 {format_money(owed)} 元" if invoice.is_part_paid(owed) else f"金额 {format_money(invoice.amount)} 元"
    late = "该日期已过，请尽快付款。\n" if invoice.is_overdue(today) else ""
    body = (
        f"尊敬的{account.customer_name}：\n\n"
        f"因国家法定节假日（含调休上班日）安排的更新，按合同约定的工作日计算，发票 {invoice.number}（{owing}）"
        f"的付款期限由 {chinese_date(old)} 更正为 {chinese_date(invoice.due_on)}，请于该日前付款。\n{late}"
        "发票号码和金额不变，更正后的发票见附件，请以此为准。\n"
    )
    sms = f"发票{invoice.number}的付款期限由{chinese_date(old)}更正为{chinese_date(invoice.due_on)}，{_see_more(account)}。"
    _both(
        session,
        f"invoice-due-moved-{invoice.number}-{sequence}",
        account,
        f"发票 {invoice.number} 付款期限更正",
        body,
        sms,
        [invoice.pdf_file],
    )


# --- delivery -------------------------------------------------------------------------------


def _claim(session: Session, note_id: int, now: datetime) -> bool:
    result = session.execute(
        sa.update(Notification)
        .where(Notification.id == note_id, Notification.status == "pending", Notification.next_attempt_at <= now)
        .values(status="sending", attempts=Notification.attempts + 1, next_attempt_at=now)
    )
    session.commit()
    return bool(result.rowcount)


def _email(session: Session, note: Notification, settings: MailSettings) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = note.subject
    message["From"] = formataddr(("短信业务", settings.sender))
    message["To"] = note.recipient
    # Beijing time with its offset (+0800), from the application's clock (it ended in -0000).
    message["Date"] = format_datetime(to_local(utcnow()))
    # Stable per notification: a receiving server can recognise a resend as the same message.
    domain = settings.sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<{re.sub(r'[^A-Za-z0-9.-]', '.', note.key)}.{note.id}@{domain}>"
    message.set_content(note.body)
    for relative in note.attachments:
        path = (settings.documents_root / relative).resolve()
        if not path.is_relative_to(settings.documents_root.resolve()):
            raise ValueError(f"attachment outside the documents folder: {relative}")
        # Committed, but its process died before moving it into place: put there now, not after every retry.
        recover_file(session, settings.documents_root, relative)
        message.add_attachment(path.read_bytes(), maintype="application", subtype="pdf", filename=path.name)
    return message


def _send_smtp(message: EmailMessage, settings: MailSettings) -> str:
    """Send over SMTP: implicit TLS (ssl), or STARTTLS when the server offers it; the password
    is never sent in clear unless SMTP_SECURITY is none (a server on loopback)."""
    mode = settings.tls
    smtp: smtplib.SMTP
    if mode == "ssl":
        smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    with smtp:
        smtp.ehlo()
        encrypted = mode == "ssl"
        if mode == "starttls" and smtp.has_extn("starttls"):
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
            encrypted = True
        if settings.user:
            if not encrypted and mode != "none":
                raise smtplib.SMTPException(
                    f"{settings.host}:{settings.port} offers no STARTTLS: the password is not sent in clear "
                    "(SMTP_SECURITY=ssl for port 465, or none for a server on loopback)"
                )
            smtp.login(settings.user, settings.password)
        smtp.send_message(message)
    return f"smtp{'s' if encrypted else ''}://{settings.host}:{settings.port}"


def _write_outbox(note: Notification, message: EmailMessage, settings: MailSettings) -> str:
    """Into the outbox folder, whole or not at all (found by a review: not synced, and each
    retry on a full disk left another half-written temporary file)."""
    stamp = to_local(note.created_at).strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{note.id:06d}-{note.channel}.eml"
    write_atomically(settings.outbox / name, bytes(message))
    return name


SmsSender = Callable[[Session, Notification], str]


def deliver_pending(session: Session, settings: MailSettings, *, send_sms: SmsSender | None = None, limit: int = 100) -> dict[str, int]:
    """Send what is due; returns counts by outcome. Safe to run in several processes at once."""
    now = utcnow()
    counts = {"sent": 0, "written": 0, "retry": 0, "failed": 0}
    stalled = (Notification.status == "sending", Notification.next_attempt_at < now - STALE_SENDING)
    stale = session.execute(
        sa.update(Notification)
        .where(*stalled, Notification.channel != "sms")
        .values(status="failed", last_error="发送过程中断，无法确定是否已送达：请管理员核实后重新发送")
    )
    counts["failed"] += stale.rowcount or 0
    # An SMS notice is queued and marked sent in one transaction, and queued once however often it
    # is sent (`send_notification_sms`): one whose run died before its commit was certainly not
    # sent, and goes again (found by a review: it was marked failed, never to be sent).
    session.execute(sa.update(Notification).where(*stalled, Notification.channel == "sms").values(status="pending", next_attempt_at=now))
    session.commit()
    channels = ["email"] + (["sms"] if send_sms is not None else [])
    due = session.scalars(
        sa.select(Notification.id)
        .where(Notification.status == "pending", Notification.next_attempt_at <= now, Notification.channel.in_(channels))
        .order_by(Notification.id)
        .limit(limit)
    ).all()
    for note_id in due:
        if not _claim(session, note_id, now):
            continue  # another run took it
        note = session.get(Notification, note_id)  # the claim's commit expired it: this loads it afresh
        assert note is not None
        address = _address_now(note)  # corrected since it was queued: the address now
        if not address:  # removed since it was queued (a review: it still went to the removed address)
            _unless_withdrawn(session, note_id, status="failed", last_error=_removed(note))
            counts["failed"] += 1
            continue
        note.recipient = address
        try:
            if note.channel == "sms":
                assert send_sms is not None
                where, status = send_sms(session, note), "sent"
            else:
                message = _email(session, note, settings)
                if settings.host:
                    where, status = _send_smtp(message, settings), "sent"
                else:
                    where, status = _write_outbox(note, message, settings), "written"
        except Exception as exc:  # network, server refusal, missing attachment: retry later
            session.rollback()
            log.warning("notification %s failed (attempt %s): %s", note.key, note.attempts, exc)
            refused = refused_for_good(exc)
            # (every delay used: found by a review, the last was not)
            final = refused is not None or note.attempts > len(RETRY_DELAYS)
            outcome: dict[str, object] = {
                "status": "failed" if final else "pending",
                "last_error": (refused or f"{type(exc).__name__}: {exc}")[:500],
                "recipient": address,  # (the rollback undid it)
            }
            if not final:
                outcome["next_attempt_at"] = utcnow() + RETRY_DELAYS[note.attempts - 1]
            if not _unless_withdrawn(session, note_id, **outcome):
                final = True  # withdrawn while it was being sent: not retried with what it said
            counts["failed" if final else "retry"] += 1
            continue
        # It went: sent, even if withdrawn while it was on its way (the withdrawal's words cleared).
        session.execute(
            sa.update(Notification)
            .where(Notification.id == note_id)
            .values(status=status, sent_at=utcnow(), delivered_to=where, last_error=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        counts[status] += 1
    return counts


def _unless_withdrawn(session: Session, note_id: int, **outcome: object) -> bool:
    """Record what became of a claimed notice that did not go out (to be retried, or failed),
    unless it was withdrawn while it was being sent (`withdraw`): then it stays withdrawn. Found by
    a review: one in `sending` when a renewal withdrew the old term's notices failed for now and
    was retried later, telling the renewed customer the contract had ended. True if recorded."""
    result = session.execute(
        sa.update(Notification)
        .where(Notification.id == note_id, Notification.status == "sending")
        .values(**outcome)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount)


#: RCPT replies that are about the recipient's address itself (RFC 5321 §4.2.3, RFC 3463 5.1.x).
_NO_SUCH_RECIPIENT = (550, 551, 553)


def _said(answers: list[tuple[str, int, str]]) -> str:
    return "；".join(f"{address + ' ' if address else ''}{code} {text}".strip() for address, code, text in answers)


def _enhanced_status(text: str) -> str:
    """The enhanced status code (RFC 3463) a reply's text begins with, e.g. 5.1.1; else ""."""
    words = text.split()
    return words[0] if words and words[0][:1] in "245" and words[0].count(".") == 2 else ""


def refused_for_good(exc: BaseException) -> str | None:
    """The outbox's words for an SMTP server's permanent refusal of this notice, which no retry
    changes; None for anything else, retried. Found by an exploratory test: "550 no such user" was
    retried for about 9 hours before it failed. Only two refusals are this notice's own:
    - the recipient's address (550/551/553 to RCPT, or an enhanced status 5.1.x), not a policy
      reply (5.7.x: relaying denied, the sender not allowed), which is the platform's setting;
    - the message's size (552, or 5.3.4), the attachments too large for the server.
    Everything else (a 4xx: greylisting, a full mailbox; a refused login, sender or relay; a 554
    without a reason) is retried, so the notices go once an administrator has fixed the setting
    (a review: "554 5.7.1 Relay access denied" failed every notice at once, naming the customer's
    address as the fault)."""
    raw: list[tuple[str, int, bytes | str]] = []
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        raw = [(address, code, text) for address, (code, text) in exc.recipients.items()]
    elif isinstance(exc, smtplib.SMTPDataError):
        raw = [("", exc.smtp_code, exc.smtp_error)]
    if not raw:
        return None
    answers = [(address, code, text.decode(errors="replace") if isinstance(text, bytes) else text) for address, code, text in raw]

    def too_large(code: int, text: str) -> bool:
        # 552 without an enhanced status, or 5.3.4; "552 5.2.2 over quota" is a full mailbox (a review).
        status = _enhanced_status(text)
        return status == "5.3.4" or (code == 552 and not status)

    def no_such_recipient(address: str, code: int, text: str) -> bool:
        status = _enhanced_status(text)
        # A policy refusal names 5.7.x anywhere in its words ("553 sorry, … rcpthosts (#5.7.1)"),
        # or speaks of relaying: the platform's setting, not the customer's address (a review).
        policy = "5.7." in text or "relay" in text.lower()
        return bool(address) and not policy and (status.startswith("5.1.") or (code in _NO_SUCH_RECIPIENT and not status))

    if all(too_large(code, text) for _, code, text in answers):
        return f"邮件服务器以邮件过大拒收（{_said(answers)}），不再自动重试：请检查附件大小及邮件服务器的大小限制后重发"
    if all(no_such_recipient(address, code, text) for address, code, text in answers):
        return f"邮件服务器永久拒收（{_said(answers)}），不再自动重试：请核对客户的电子邮箱，用 account contact 更正后重发"
    return None


def current_address(note: Notification) -> str | None:
    """Where the notice goes now: the account's e-mail or mobile as it is at this moment (found by an
    exploratory test: a resend after the customer's e-mail was corrected went to the old address)."""
    account = note.account
    if account is None:
        return None
    return account.contact_email if note.channel == "email" else sms_address(account)


def _address_now(note: Notification) -> str | None:
    """Where the notice goes: an account's notice to the account's address as it is now, None
    when it has been removed since; another's (staff) to the address it was queued with."""
    return current_address(note) if note.account_id is not None else note.recipient


def _removed(note: Notification) -> str:
    what = "电子邮箱" if note.channel == "email" else "手机号码"
    return f"客户的{what}已在通知排队后删除：未发送（不发往已删除的地址），补充后可重发"


def readdress(session: Session, account: EnterpriseAccount) -> int:
    """The account's contact changed: its notices not sent yet (waiting, or failed for a resend)
    go to its addresses now, and the outbox shows them. Returns how many were changed."""
    changed = 0
    for note in session.scalars(
        sa.select(Notification).where(Notification.account_id == account.id, Notification.status.in_(("pending", "failed")))
    ):
        address = current_address(note)
        if address and address != note.recipient:
            note.recipient = address
            changed += 1
    return changed


#: The start of `last_error` of a notice withdrawn before it went (what it said is no longer so).
WITHDRAWN = "已撤回，不再发送"


def term_notice_keys(contract_no: str, end: date | None) -> list[str]:
    """The keys of the notices of a contract's term ending on `end`: its renewal notice and its
    expiry notice, e-mail and SMS (as `renewal_notice` and `contract_expired` key them)."""
    if end is None:
        return []
    return [
        f"{kind}-{contract_no}-{end.isoformat()}:{channel}"
        for kind in ("renewal-notice", "contract-expired")
        for channel in ("email", "sms")
    ]


def withdraw(session: Session, keys: Iterable[str], *, why: str) -> int:
    """Withdraw the notices of `keys` not sent yet (waiting, failed for a resend, or being sent at
    this moment): they stay in the outbox as failed, saying why, and cannot be resent. One being
    sent is recorded sent if it goes; if it fails, it is not retried (`_unless_withdrawn`). One
    UPDATE, its condition checked on each row as it is changed: a notice that was sent meanwhile
    (PostgreSQL: committed while this waited for its row) is not marked withdrawn. Returns how many."""
    keys = list(keys)
    if not keys:
        return 0
    result = session.execute(
        sa.update(Notification)
        .where(Notification.key.in_(keys), Notification.status.in_(("pending", "failed", "sending")))
        .values(status="failed", last_error=f"{WITHDRAWN}：{why}"[:500])
    )
    return result.rowcount or 0


def requeue(session: Session, note_id: int) -> Notification:
    """An administrator sends a failed notification again."""
    from backoffice.errors import Conflict, NotFound

    note = session.get(Notification, note_id)
    if note is None:
        raise NotFound(f"通知不存在：{note_id}")
    if note.status != "failed":
        raise Conflict(f"通知 {note_id} 的状态是 {note.status}，只有发送失败的通知可以重发")
    if (note.last_error or "").startswith(WITHDRAWN):
        raise Conflict(f"通知 {note_id} {note.last_error}：其内容已不再属实，不能重发")
    # The account's address now (corrected since, or added to one kept for want of an address, `_both`).
    address = _address_now(note)
    if not address:
        what = "电子邮箱" if note.channel == "email" else "手机号码"
        raise Conflict(f"通知 {note_id} 没有收件人：客户仍没有{what}，请先用 account contact 补充")
    note.recipient = address
    # In the day, as every notice: a resend at 06:00 texted the customer then (an exploratory test).
    note.status, note.attempts, note.next_attempt_at = "pending", 0, in_notice_hours(utcnow())
    return note
