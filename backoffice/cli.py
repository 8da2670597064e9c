"""Command line: `flask --app wsgi <group> <command>`; `--json` where a script reads the output."""

from __future__ import annotations

import contextlib
import copy
import getpass
import json
import re
import secrets
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup

from backoffice.clock import utcnow
from backoffice.errors import Conflict, DomainError, NotFound, ValidationFailed
from backoffice.extensions import db
from backoffice.models.staff import ROLES
from backoffice.storage import StorageUnavailable, commits, storage_refusal
from ledger import LedgerWriteError


def _emit(payload: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2, default=str) if as_json else text)


def _fail(error: DomainError, as_json: bool) -> NoReturn:
    db.session.rollback()
    _print_refusal(error, as_json)
    sys.exit(1 if not isinstance(error, ValidationFailed) else 2)


def _print_refusal(error: DomainError, as_json: bool) -> None:
    """A refusal as every command prints it: JSON on stdout with --json, else Chinese on stderr."""
    fields = getattr(error, "errors", {})
    if as_json:
        click.echo(json.dumps({"error": {"code": error.code, "message": error.message, "fields": fields}}, ensure_ascii=False, indent=2))
    else:
        click.echo(f"错误：{error.message if not fields else '输入有误'}", err=True)
        for name, reason in fields.items():
            click.echo(f"  {name}: {reason}", err=True)


JSON_FILE_LIMIT = 5_000_000
IMAGE_FILE_LIMIT = 2_000_000
PDF_FILE_LIMIT = 50_000_000


def read_bounded(path: Path, *, field: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a file (one past the limit, for the caller to name the size);
    an unreadable file is a ValidationFailed naming it."""
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise ValidationFailed({field: f"无法读取文件 {path}：{exc.strerror or type(exc).__name__}"}) from None


def read_file(path: Path, *, field: str, limit: int) -> bytes:
    """A file the command was given, at most `limit` bytes; anything unreadable, too large or
    empty is a ValidationFailed naming it (not a traceback, and not a whole /dev/zero in memory)."""
    data = read_bounded(path, field=field, limit=limit)
    if len(data) > limit:
        raise ValidationFailed({field: f"文件过大（超过 {limit // 1_000_000} MB）：{path}"})
    if not data:
        raise ValidationFailed({field: f"文件是空的：{path}"})
    return data


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file, numbers with a fraction as Decimal (money never passes
    through float); anything unreadable is a ValidationFailed naming the file."""
    text = read_file(path, field="data", limit=JSON_FILE_LIMIT)
    try:
        raw = json.loads(text.decode("utf-8"), parse_float=Decimal)
        json.dumps(raw, ensure_ascii=False, default=str).encode("utf-8")  # lone surrogates
    except (UnicodeError, ValueError, RecursionError) as exc:  # ValueError: JSON's, and an integer of 4,300+ digits
        raise ValidationFailed({"data": f"无法读取 JSON 文件：{type(exc).__name__}"}) from None
    if not isinstance(raw, dict):
        raise ValidationFailed({"data": "JSON 文件应为一个对象"})
    return raw


def busy_error(exc: Exception) -> DomainError:
    """The database is locked by other writers (nothing was changed, try again), or its disk is
    full. Any other operational error (a missing table, a lost connection) is raised."""
    from backoffice import DATABASE_BUSY, DATABASE_FULL, database_busy, database_full

    db.session.rollback()
    if isinstance(exc, sa.exc.DBAPIError) and database_busy(exc):
        error = DomainError(DATABASE_BUSY)
        error.status, error.code = 503, "busy"
        return error
    if isinstance(exc, sa.exc.DBAPIError) and database_full(exc):  # was a traceback (found by a review)
        return StorageUnavailable(DATABASE_FULL)
    raise exc


@contextlib.contextmanager
def refusals(as_json: bool) -> Iterator[None]:
    """A command's changes as one transaction: a refusal (DomainError, the database busy, the
    disk full or not writable) rolls back and exits with the message; anything else rolls back
    and propagates."""
    committed = commits(db.session)
    try:
        yield
    except DomainError as error:
        _fail(error, as_json)
    except sa.exc.OperationalError as exc:
        _fail(busy_error(exc), as_json)
    except sa.exc.DataError:  # a value past its column's range or length that no check caught
        _fail(ValidationFailed({"_input": "输入的值超出允许的范围或长度，未做任何更改"}), as_json)
    except LedgerWriteError as error:  # the books changed by hand, or locked: nothing of this command was kept
        _fail(Conflict(f"账簿无法写入：{error}"), as_json)
    except OSError as error:  # was a traceback, even with --json (found by a review)
        refusal = storage_refusal(error, changed=commits(db.session) > committed)
        if refusal is None:
            db.session.rollback()
            raise
        _fail(refusal, as_json)
    except BaseException:
        db.session.rollback()
        raise


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry in some containers
        return "cli"


def signing_identity(app: Flask):  # type: ignore[no-untyped-def]
    """The provider's PDF signing identity: configured files in production, else a self-signed
    certificate generated on first use in the instance folder."""
    from reports.signing import SigningIdentity, ensure_signing_identity

    if app.config["SIGNING_KEY_FILE"] and app.config["SIGNING_CERT_FILE"]:
        return SigningIdentity(key_path=Path(app.config["SIGNING_KEY_FILE"]), cert_path=Path(app.config["SIGNING_CERT_FILE"]))
    return ensure_signing_identity(Path(app.config["KEYS_PATH"]), common_name="短信业务合同签章（自签名）", organization="SMS Back Office")


def after_commit_catch_up(app: Flask) -> list[str]:
    """Post pending ledger events and arm pending jobs; both are retried later if this fails.
    Also says which committed files could not be moved into place (the recovery does it later)."""
    from backoffice.jobs import arm_pending
    from backoffice.services.bookkeeping import post_pending
    from backoffice.services.staged_files import unpromoted

    warnings = [
        f"文件暂未就位（已保存为 .pending，调度进程会自动恢复）：{path}"
        if kept
        else f"文件丢失（未能放到位，也没有 .pending 副本），请联系管理员：{path}"
        for path, kept in unpromoted(db.session)
    ]
    try:
        post_pending(db.session, Path(app.config["LEDGER_PATH"]))
        db.session.commit()
    except Exception as exc:  # the events stay in the outbox; `ledger sync` posts them
        db.session.rollback()
        warnings.append(f"账簿暂未更新（稍后 ledger sync 会补记）：{exc}")
    try:
        arm_pending(app)
    except Exception as exc:
        db.session.rollback()
        warnings.append(f"定时任务暂未登记（调度进程启动时会补登）：{exc}")
    return warnings


class CommandGroup(AppGroup):
    """A command group that refuses arguments which are not text (bytes a terminal or a script
    passed in another encoding, GBK under a UTF-8 locale: Python keeps them as lone surrogates,
    which the database then refuses mid-command)."""

    def invoke(self, ctx: click.Context) -> Any:
        given = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if any(0xDC80 <= ord(c) <= 0xDCFF for arg in given for c in arg):
            message = "参数不是有效的 UTF-8 文本（请检查终端或脚本的字符编码），未做任何更改"
            _print_refusal(ValidationFailed({"arguments": message}), "--json" in given)
            ctx.exit(2)
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # click's own checks (a missing file, a bad choice): in our shape
            field = getattr(getattr(error, "param", None), "name", None) or "arguments"
            _print_refusal(ValidationFailed({field: f"参数有误：{usage_in_chinese(error)}"}), "--json" in given)
            ctx.exit(2)


_CLICK_DETAILS = [  # click's own wording of a bad value (click 8), and ours
    (re.compile(r"^(?:File|Directory|Path) '(.*)' does not exist\.$", re.S), "文件不存在：{0}"),
    (re.compile(r"^(?:File|Path) '(.*)' is a directory\.$", re.S), "是目录，不是文件：{0}"),
    (re.compile(r"^(?:Directory|Path) '(.*)' is a file\.$", re.S), "是文件，不是目录：{0}"),
    (re.compile(r"^(?:File|Directory|Path) '(.*)' is not (?:readable|writable|executable)\.$", re.S), "没有权限：{0}"),
    (re.compile(r"^'(.*)' is not a valid integer(?: range)?\.$", re.S), "不是整数：{0}"),
    (re.compile(r"^'(.*)' is not a valid float(?: range)?\.$", re.S), "不是数字：{0}"),
    (re.compile(r"^'(.*)' is not a valid boolean\.$", re.S), "应为 true 或 false：{0}"),
    (re.compile(r"^(.*) is not in the range (.*)\.$", re.S), "{0} 超出范围 {1}"),
    (re.compile(r"^'(.*)' is not one of (.*)\.$", re.S), "{0} 不在可选值 {1} 之中"),
    (re.compile(r"^Got unexpected extra arguments? \((.*)\)$", re.S), "多余的参数：{0}"),
    (re.compile(r"^'(.*)' does not match the formats? (.*)\.$", re.S), "不是有效的日期（格式 YYYY-MM-DD）：{0}"),
    (re.compile(r"^No such command '(.*)'\.$", re.S), "没有命令 {0}"),
    (re.compile(r"^Option '(.*)' requires an argument\.$", re.S), "选项 {0} 需要一个值"),
    (re.compile(r"^Option '(.*)' does not take a value\.$", re.S), "选项 {0} 不带值"),
]


def usage_in_chinese(error: click.UsageError) -> str:
    """Click's own refusal (click 8, in English) in Chinese where its wording is known; an unknown
    one keeps click's text, so nothing is lost."""
    hint = ""
    if isinstance(error, (click.MissingParameter, click.BadParameter)):
        given = error.param_hint or (error.param.get_error_hint(error.ctx) if error.param is not None and error.ctx is not None else "")
        hint = given if isinstance(given, str) else " / ".join(given)
    if isinstance(error, click.MissingParameter):
        kind = "参数" if isinstance(error.param, click.Argument) else "选项"
        return f"缺少{kind} {hint}".rstrip()
    if isinstance(error, click.NoSuchOption):
        close = f"（是否想用 {'、'.join(error.possibilities)}？）" if error.possibilities else ""
        return f"没有选项 {error.option_name}{close}"
    detail = error.message
    for pattern, wording in _CLICK_DETAILS:
        found = pattern.match(detail)
        if found:
            detail = wording.format(*found.groups())
            break
    return f"{hint} {detail}" if hint else detail


contract_cli = CommandGroup("contract", help="合同：模板、签发、核验")
account_cli = CommandGroup("account", help="企业账户")
ledger_cli = CommandGroup("ledger", help="账簿（beancount）")
jobs_cli = CommandGroup("jobs", help="定时任务")
demo_cli = CommandGroup("demo", help="演示数据")
user_cli = CommandGroup("user", help="员工账号")
finance_cli = CommandGroup("finance", help="财务：到账登记与确认、对账单导入、发票、通知")
documents_cli = CommandGroup("documents", help="合同、发票、汇款凭证文件")


@contract_cli.command("templates")
@click.option("--json", "as_json", is_flag=True)
def contract_templates(as_json: bool) -> None:
    """List the contract templates and their fields."""
    from backoffice.services.templates import list_templates

    templates = list_templates()
    _emit([t.as_json() for t in templates], as_json, "\n".join(f"{t.code} {t.id}  {t.title}" for t in templates))


def _load_signature(value: Any, base: Path) -> bytes | str | None:
    if not value:
        return None
    if isinstance(value, str) and value.startswith("data:"):
        return value
    if not isinstance(value, str) or "\x00" in value:  # (a NUL made resolve() raise: a traceback, found by a review)
        raise ValidationFailed({"signature": "签名图片应为图片文件的路径或 data: URI"})
    path = (base / value).resolve()
    if not path.is_file():  # (a device such as /dev/zero exists: "不存在" alone misled, found by fuzzing)
        raise ValidationFailed({"signature": f"签名图片文件不存在或不是普通文件：{value}"})
    return read_file(path, field="signature", limit=IMAGE_FILE_LIMIT)  # an empty one is refused, not typed instead


@contract_cli.command("issue")
@click.argument("template_id")
@click.option(
    "--data", "data_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSON file of the contract fields"
)
@click.option("--json", "as_json", is_flag=True)
def contract_issue(template_id: str, data_file: Path, as_json: bool) -> None:
    """Issue a contract: PDF + DOCX, account and sub-accounts, booked credit, renewal jobs."""
    from backoffice.money import format_money, format_price
    from backoffice.services.contracts import issue_contract

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with refusals(as_json):  # a rollback also discards the staged files: a crash leaves nothing behind
        raw = read_json_object(data_file)
        cust = _load_signature(raw.pop("customer_signature", None), data_file.parent)
        prov = _load_signature(raw.pop("provider_signature", None), data_file.parent)
        key = raw.pop("submission_id", None)
        issued = issue_contract(
            db.session,
            template_id,
            raw,
            issued_by=_actor(),
            documents_root=Path(app.config["DOCUMENTS_PATH"]),
            signing_identity=signing_identity(app),
            customer_signature=cust,
            provider_signature=prov,
            submission_key=str(key) if key else None,
        )
        db.session.commit()
    from backoffice.services.contracts import existing_customer_warning

    for warning in [existing_customer_warning(db.session, issued.contract), *after_commit_catch_up(app)]:
        if warning:
            click.echo(f"警告：{warning}", err=True)
    c = issued.contract
    payload = {
        "contract_no": c.contract_no,
        "template_id": c.template_id,
        "account_code": c.account.code,
        "sub_accounts": [{"login": o.login, "password": o.password, "primary": o.is_primary} for o in issued.logins],
        "pdf": str(issued.pdf_path),
        "docx": str(issued.docx_path),
        "sha256": {"pdf": c.pdf_sha256, "docx": c.docx_sha256},
        "price_per_message": format_price(c.price_per_message),
        "initial_messages": c.initial_messages,
        "initial_amount": format_money(c.initial_amount),
        "opening_fee": format_money(c.opening_fee),
        "renewal_rule": c.renewal_rule,
    }
    text = [
        f"合同 {c.contract_no} 已签发，企业号 {c.account.code}",
        f"PDF: {issued.pdf_path}",
        f"DOCX: {issued.docx_path}",
        "初始密码（仅显示这一次）：",
    ]
    text += [f"  {o.login}  {o.password}" for o in issued.logins]
    _emit(payload, as_json, "\n".join(text))


@contract_cli.command("verify")
@click.argument("pdf_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def contract_verify(pdf_file: Path, as_json: bool) -> None:
    """Check the provider's digital signature on a contract PDF; exit 1 unless intact."""
    from reports.signing import verify_pdf

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    identity = signing_identity(app)
    with refusals(as_json):
        content = read_file(pdf_file, field="pdf", limit=PDF_FILE_LIMIT)
    result = verify_pdf(content, trusted_certs=[identity.cert_path])
    ok = result.signed and result.intact and result.valid and result.trusted and result.covers_whole_file
    payload = {"file": str(pdf_file), "intact": ok, **{k: v for k, v in vars(result).items()}}
    text = "签章完好：文件自签署后未被修改" if ok else "签章无效或文件已被修改：" + "；".join(result.problems or ["未通过校验"])
    _emit(payload, as_json, text)
    sys.exit(0 if ok else 1)


@contract_cli.command("provider")
@click.argument("template_id")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, path_type=Path), help="JSON object of the fields to save")
@click.option("--seal", "seal_file", type=click.Path(dir_okay=False, path_type=Path), help="the seal image (PNG or JPEG)")
@click.option("--json", "as_json", is_flag=True)
def contract_provider(template_id: str, data_file: Path | None, seal_file: Path | None, as_json: bool) -> None:
    """Show, or with --data / --seal save, the provider's identity a template's contracts print."""
    from backoffice.services.provider import provider_of, save_provider

    with refusals(as_json):
        if data_file is not None or seal_file is not None:
            raw = read_json_object(data_file) if data_file is not None else {}
            if seal_file is not None and not seal_file.is_file():
                raise ValidationFailed({"seal": f"文件不存在或不是普通文件：{seal_file}"})
            seal = read_file(seal_file, field="seal", limit=IMAGE_FILE_LIMIT) if seal_file is not None else None
            save_provider(db.session, template_id, raw, seal=seal, actor=_actor())
            db.session.commit()
        provider = provider_of(db.session, template_id)
    payload = {
        "template": provider.template_id,
        "saved": provider.saved,
        "seal_uploaded": provider.seal_png is not None,
        **provider.identity,
    }
    text = "\n".join(
        [f"模板 {provider.template_id}（{'已保存' if provider.saved else '示例值，请填写'}）"]
        + [f"{k}: {v}" for k, v in provider.identity.items()]
    )
    _emit(payload, as_json, text)


@contract_cli.command("stop-renewal")
@click.argument("contract_no")
@click.option("--received-on", required=True, help="the day the customer's written objection arrived (YYYY-MM-DD)")
@click.option("--json", "as_json", is_flag=True)
def contract_stop_renewal(contract_no: str, received_on: str, as_json: bool) -> None:
    """Record the customer's written objection to the yearly extension (004 §8.5): the contract ends with its term."""
    from backoffice.clock import local_today
    from backoffice.services.contracts import get_contract
    from backoffice.services.renewal import parse_received_on, stop_renewal

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with refusals(as_json):
        contract = get_contract(db.session, contract_no)
        expire = stop_renewal(db.session, contract, received_on=parse_received_on(received_on), actor=_actor(), today=local_today())
        db.session.commit()
    for warning in after_commit_catch_up(app) + disarm_warnings(app, contract_no):
        click.echo(warning, err=True)
    payload = {
        "contract_no": contract_no,
        "renewal_rule": contract.renewal_rule,
        "term_end": contract.term_end,
        "expires_on": expire.due_on,
        "status": contract.status,
        "extension_undone": expire.done_at is not None,
    }
    _emit(payload, as_json, objection_recorded(contract, expire))


def objection_recorded(contract: Any, expire: Any) -> str:
    """What staff are told once a written objection is recorded (command line, contract page)."""
    if expire.done_at is None:
        return f"已登记书面异议：合同 {contract.contract_no} 不再顺延，于 {contract.term_end} 到期终止"
    return (
        f"已登记书面异议（在期限内收到）：已撤销自动顺延，合同 {contract.contract_no} 已于 {contract.term_end} 到期终止；{expire.outcome}"
    )


def disarm_warnings(app: Flask, contract_no: str) -> list[str]:
    """Cancelled jobs taken out of the job store; a failure is a warning (they do nothing when run)."""
    from backoffice.jobs import disarm_done

    try:
        disarm_done(app, contract_no)
    except Exception as exc:
        db.session.rollback()
        return [f"已取消的定时任务暂未从任务库移除（运行时不会执行任何操作）：{exc}"]
    return []


@contract_cli.command("renew")
@click.argument("contract_no")
@click.option("--until", required=True, help="the renewed term's last day (YYYY-MM-DD)")
@click.option("--by", "username", required=True, help="the sales or admin staff user who records the renewal")
@click.option("--reason", default=None, help="a note for the audit log (the paper renewal's number, date)")
@click.option("--json", "as_json", is_flag=True)
def contract_renew(contract_no: str, until: str, username: str, reason: str | None, as_json: bool) -> None:
    """Record a fixed-term contract renewed on paper: a new last day, the renewal jobs armed
    again, the account sending again if the expiry had stopped it."""
    from backoffice.clock import local_today
    from backoffice.services.contracts import get_contract
    from backoffice.services.renewal import parse_until, renew_contract

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with refusals(as_json):
        actor = _staff_actor(username, ("sales", "admin"), "销售或管理员")
        contract = get_contract(db.session, contract_no)
        renewal = renew_contract(db.session, contract, until=parse_until(until), actor=actor, today=local_today(), reason=reason)
        db.session.commit()
    for warning in after_commit_catch_up(app) + disarm_warnings(app, contract_no):
        click.echo(f"警告：{warning}", err=True)
    account = contract.account
    payload = {
        "contract_no": contract_no,
        "status": contract.status,
        "previous_end": renewal.previous_end,
        "term_end": contract.term_end,
        "renewal_rule": contract.renewal_rule,
        "account": account.code,
        "account_status": account.status,
        "account_resumed": renewal.account_resumed,
        "customer_told": renewal.customer_told,
        "jobs": [{"kind": j.kind, "due_on": j.due_on} for j in renewal.jobs],
    }
    _emit(payload, as_json, renewal_recorded(renewal))


def renewal_recorded(renewal: Any) -> str:
    """What staff are told once a renewal is recorded (command line, contract page)."""
    contract = renewal.contract
    account = contract.account
    text = f"合同 {contract.contract_no} 已续签至 {contract.term_end}（原到期日 {renewal.previous_end}）"
    if not renewal.customer_told:
        text += "；客户没有电子邮箱或手机号码，未能通知续签，请人工通知"
    if renewal.account_resumed:
        return text + f"；账户 {account.code} 已恢复发送（{account.status_name}）"
    if account.status == "suspended":
        return text + f"；账户 {account.code} 仍为暂停状态（系管理员暂停，非合同到期所致），如需恢复请在账户页面操作"
    return text


def _staff_actor(username: str, roles: tuple[str, ...], who: str) -> str:
    """`staff:<username>` for an active staff user in one of `roles`; refused otherwise."""
    from backoffice.models import StaffUser

    user = db.session.scalar(sa.select(StaffUser).where(StaffUser.username == username))
    if user is None or user.role not in roles or not user.active:
        raise ValidationFailed({"by": f"{username} 不是有效的{who}账号"})
    return f"staff:{user.username}"


@account_cli.command("suspend")
@click.argument("account_code")
@click.option("--reason", required=True)
@click.option("--json", "as_json", is_flag=True)
def account_suspend(account_code: str, reason: str, as_json: bool) -> None:
    """Stop an account sending (its balance stays)."""
    _sending_status(account_code, reason, as_json, suspend=True)


@account_cli.command("resume")
@click.argument("account_code")
@click.option("--reason", required=True)
@click.option("--json", "as_json", is_flag=True)
def account_resume(account_code: str, reason: str, as_json: bool) -> None:
    """Let a suspended account send again (a dispute settled); an expired contract is renewed with `contract renew`."""
    _sending_status(account_code, reason, as_json, suspend=False)


def _sending_status(account_code: str, reason: str, as_json: bool, *, suspend: bool) -> None:
    from backoffice.services.sending_settings import set_sending_status

    with refusals(as_json):
        account = set_sending_status(db.session, account_code, suspend=suspend, reason=reason, actor=_actor())
        db.session.commit()
    _emit({"account": account.code, "status": account.status}, as_json, f"账户 {account.code}：{account.status_name}")


@account_cli.command("contact")
@click.argument("account_code")
@click.option("--email", default=None, help="where notices and invoices go by e-mail ('' clears it)")
@click.option("--mobile", default=None, help="the mobile number SMS notices go to ('' clears it: then the contract's phone, if a mobile)")
@click.option("--json", "as_json", is_flag=True)
def account_contact(account_code: str, email: str | None, mobile: str | None, as_json: bool) -> None:
    """Show or set where an account's notices go (a contract that gave a landline only gives none)."""
    from backoffice.services.accounts import get_account, update_contact

    with refusals(as_json):
        if email is None and mobile is None:
            account = get_account(db.session, account_code)
        else:
            account = update_contact(db.session, account_code, email=email, mobile=mobile, actor=_actor())
            db.session.commit()
    from backoffice.services.notifications import sms_address

    sms_to = sms_address(account)
    payload = {
        "account": account.code, "email": account.contact_email, "mobile": account.reserved_mobile, "phone": account.contact_phone,
        "sms_notices_to": sms_to,
    }  # fmt: skip
    _emit(
        payload,
        as_json,
        f"账户 {account.code}：电子邮箱 {account.contact_email or '（无）'}，手机 {account.reserved_mobile or '（无）'}，电话 {account.contact_phone or '（无）'}，短信通知发往 {sms_to or '（无）'}",
    )


@account_cli.command("show")
@click.argument("account_code")
@click.option("--json", "as_json", is_flag=True)
def account_show(account_code: str, as_json: bool) -> None:
    """Status, spendable balance, price, sub-accounts, contract, term and renewal rule."""
    from backoffice.services.contracts import account_summary

    try:
        summary = account_summary(db.session, account_code)
    except DomainError as error:
        _fail(error, as_json)
    lines = [f"{k}: {v}" for k, v in summary.items()]
    _emit(summary, as_json, "\n".join(lines))


@ledger_cli.command("check")
@click.option("--json", "as_json", is_flag=True)
def ledger_check(as_json: bool) -> None:
    """beancount's checker plus reconciliation with the database; exit 1 on any problem."""
    from backoffice.services.bookkeeping import check_and_reconcile

    report = check_and_reconcile(db.session, Path(current_app.config["LEDGER_PATH"]))
    payload = {
        "ok": report.ok,
        "errors": report.errors,
        "warnings": report.warnings,
        "pending_events": report.pending_events,
        "differences": [{"account": d.account, "database": str(d.database), "books": str(d.books)} for d in report.differences],
    }
    lines = ["账簿检查通过" if report.ok else "账簿检查未通过"] + report.errors
    lines += [f"不一致：{d.account} 数据库 {d.database} 账簿 {d.books}" for d in report.differences]
    if report.pending_events:
        lines.append(f"有 {report.pending_events} 笔事件尚未记账（运行 ledger sync）")
    if not as_json:
        for warning in report.warnings:  # what the check went without: its result stands
            click.echo(f"警告：{warning}", err=True)
    _emit(payload, as_json, "\n".join(lines))
    sys.exit(0 if report.ok else 1)


@ledger_cli.command("reconcile")
@click.option("--json", "as_json", is_flag=True)
def ledger_reconcile(as_json: bool) -> None:
    """Per customer account: the database balance against the books balance."""
    import ledger
    from backoffice.services.bookkeeping import expected_balances

    main = Path(current_app.config["LEDGER_PATH"]) / "main.beancount"
    books = ledger.ledger_balances(main)
    rows = [
        {"account": account, "database": str(want), "books": str(books.get(account, 0)), "ok": books.get(account, 0) == want}
        for account, want in sorted(expected_balances(db.session).items())
    ]
    text = "\n".join(f"{'✓' if r['ok'] else '✗'} {r['account']}  数据库 {r['database']}  账簿 {r['books']}" for r in rows)
    _emit(rows, as_json, text or "没有客户账户")
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


@ledger_cli.command("rebuild")
@click.option("--replace", is_flag=True, help="replace the books with the rebuilt ones (the old ones are kept aside)")
def ledger_rebuild(replace: bool) -> None:
    """Regenerate the books from the recorded events and compare them with the books on disk."""
    import shutil
    import tempfile

    import ledger
    from backoffice.services.bookkeeping import rebuild_books

    root = Path(current_app.config["LEDGER_PATH"])
    staging = Path(tempfile.mkdtemp(prefix="ledger-rebuild-", dir=root.parent))
    replaced = False
    # The books' lock from reading the events to the swap: an event posted in between went into
    # the old folder (the backup) and was missing from the new books, called posted by the
    # database (found by a review). A poster waiting for the lock writes into the new folder.
    with ledger.Books(root).locked():
        db.session.rollback()  # read the events in a snapshot taken under the lock
        count = rebuild_books(db.session, staging)
        differing = ledger.books.differing_files(root, staging)
        if replace and differing:
            backup = root.with_name(f"{root.name}.replaced-{utcnow():%Y%m%dT%H%M%S}")
            if root.exists():
                root.rename(backup)
            staging.rename(root)
            replaced = True
    click.echo(
        f"从 {count} 笔记账事件重建账簿："
        + ("与现有账簿完全一致" if not differing else f"{len(differing)} 个文件不同：{', '.join(differing)}")
    )
    if replaced:
        click.echo(f"已用重建的账簿替换；原账簿保存在 {backup}")
        # Check the new books at once: this also stores the month summaries, so the next check
        # (finance's, or the nightly one) does not pay for loading the whole year again.
        from ledger import check_books

        problems = check_books(root / "main.beancount")
        click.echo("重建的账簿检查通过" if not problems else "重建的账簿有问题：\n" + "\n".join(problems))
        sys.exit(0 if not problems else 1)
    shutil.rmtree(staging)
    sys.exit(0 if not differing else 1)


@ledger_cli.command("query")
@click.argument("bql")
@click.option("--json", "as_json", is_flag=True)
def ledger_query(bql: str, as_json: bool) -> None:
    """Run a beanquery (BQL) query on the books."""
    from ledger.query import QueryError, run_query

    try:
        result = run_query(Path(current_app.config["LEDGER_PATH"]) / "main.beancount", bql)
    except QueryError as exc:
        _fail(ValidationFailed({"bql": f"查询有误：{exc}"}), as_json)
    for warning in result.warnings:
        click.echo(f"警告：{warning}", err=True)
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    text = "\n".join(["\t".join(result.columns)] + ["\t".join(str(v) for v in row) for row in result.rows])
    _emit(rows, as_json, text)


@ledger_cli.command("assert-balances")
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="default: today (Beijing)")
def ledger_assert_balances(day: Any) -> None:
    """Write today's balance assertion of every customer's prepaid account, from the database."""
    from backoffice.clock import local_today
    from backoffice.services.credit import record_balance_assertions

    with refusals(False):
        count = record_balance_assertions(db.session, day.date() if day else local_today())
        db.session.commit()
    for warning in after_commit_catch_up(current_app._get_current_object()):  # type: ignore[attr-defined]
        click.echo(f"警告：{warning}", err=True)
    click.echo(f"写入 {count} 条余额断言")


@ledger_cli.command("sync")
def ledger_sync() -> None:
    """Post every pending ledger event to the books."""
    from backoffice.services.bookkeeping import post_pending

    with refusals(False):
        count = post_pending(db.session, Path(current_app.config["LEDGER_PATH"]))
        db.session.commit()
    click.echo(f"记账 {count} 笔")


@documents_cli.command("recover")
@click.option("--json", "as_json", is_flag=True)
def documents_recover(as_json: bool) -> None:
    """Put in place the committed documents left `.pending` (a process that died between its
    commit and the rename, a rename that failed), as the scheduler does at its start and every
    night; remove old `.pending` files no committed row names. Exit 1 if a file could not be."""
    from backoffice.services.staged_files import recover_staged_files

    with refusals(as_json):
        recovery = recover_staged_files(db.session, Path(current_app.config["DOCUMENTS_PATH"]))
        db.session.rollback()  # (it only read)
    lines = [f"放回 {len(recovery.promoted)} 个已提交的文件，清除 {len(recovery.removed)} 个遗留的 .pending 文件"]
    lines += [f"  放回：{path}" for path in recovery.promoted] + [f"  问题：{problem}" for problem in recovery.problems]
    _emit({"promoted": recovery.promoted, "removed": recovery.removed, "problems": recovery.problems}, as_json, "\n".join(lines))
    if recovery.problems:
        raise SystemExit(1)


@jobs_cli.command("run")
def jobs_run() -> None:
    """Run the scheduler process (one per installation)."""
    from backoffice.jobs import run_scheduler

    run_scheduler(current_app._get_current_object())  # type: ignore[attr-defined]


@jobs_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def jobs_list(as_json: bool) -> None:
    """Jobs armed in the persistent job store."""
    from backoffice.jobs import stored_jobs

    jobs = [
        {"id": j.id, "name": j.name, "next_run": j.next_run_time.isoformat() if j.next_run_time else None}
        for j in stored_jobs(current_app._get_current_object())
    ]  # type: ignore[attr-defined]
    _emit(jobs, as_json, "\n".join(f"{j['next_run']}  {j['id']}" for j in jobs))


@user_cli.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(list(ROLES)), required=True)
@click.option("--name", "display_name", default="")
@click.option("--must-change", is_flag=True, help="the password is set for someone else: changed at the first login")
@click.password_option()
def user_create(username: str, role: str, display_name: str, must_change: bool, password: str) -> None:
    from backoffice.services.staff import create_staff_user

    try:
        create_staff_user(db.session, username, display_name, password, role, actor=_actor(), must_change=must_change)
        db.session.commit()
    except DomainError as error:
        _fail(error, False)
    click.echo(f"已创建 {role} 用户 {username}")


@user_cli.command("reset-password")
@click.argument("username")
@click.option("--json", "as_json", is_flag=True)
def user_reset_password(username: str, as_json: bool) -> None:
    """A new random password for a staff user, printed once; the user's sessions end."""
    _reset_password("staff", username, as_json)


@user_cli.command("disable")
@click.argument("username")
def user_disable(username: str) -> None:
    """A staff user who left: cannot log in any more; open sessions end at once."""
    _staff_active(username, active=False)


@user_cli.command("enable")
@click.argument("username")
def user_enable(username: str) -> None:
    _staff_active(username, active=True)


@account_cli.command("reset-password")
@click.argument("login")
@click.option("--json", "as_json", is_flag=True)
def account_reset_password(login: str, as_json: bool) -> None:
    """A new random password for a customer's login (企业号 or 子号), printed once; it must be
    changed at the next login (002 §5(5): a lost password is recovered through the provider)."""
    _reset_password("sub", login, as_json)


def _reset_password(kind: str, name: str, as_json: bool) -> None:
    from backoffice.models import StaffUser, SubAccount
    from backoffice.services.passwords import reset_password

    with refusals(as_json):
        record: StaffUser | SubAccount | None
        if kind == "staff":
            record = db.session.scalar(sa.select(StaffUser).where(StaffUser.username == name.strip()))
        else:
            record = db.session.scalar(sa.select(SubAccount).where(SubAccount.login == name.strip()))
        if record is None:
            raise NotFound(f"登录名不存在：{name}")
        password = reset_password(db.session, record, actor=_actor())
        db.session.commit()
    _emit({"login": name.strip(), "password": password}, as_json, f"{name.strip()} 的新密码（仅显示这一次）：{password}")


def _staff_active(username: str, *, active: bool) -> None:
    from backoffice.services.passwords import set_active
    from backoffice.services.staff import active_message, get_staff

    with refusals(False):
        user = get_staff(db.session, username)
        changed = set_active(db.session, user, active=active, actor=_actor())
        db.session.commit()
    click.echo(active_message(user, active=active, changed=changed))


@user_cli.command("role")
@click.argument("username")
@click.argument("role", type=click.Choice(list(ROLES)))
def user_role(username: str, role: str) -> None:
    """Give a staff user another role (the last active administrator keeps theirs)."""
    from backoffice.services.staff import get_staff, set_role

    with refusals(False):
        user = get_staff(db.session, username)
        changed = set_role(db.session, user, role, actor=_actor())
        db.session.commit()
    click.echo(f"员工账号 {user.username} 的角色：{user.role_name}" + ("" if changed else "（未变）"))


@user_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def user_list(as_json: bool) -> None:
    """Every staff user: login, name, role, active or not."""
    from backoffice.services.staff import list_staff

    users = list_staff(db.session)
    rows = [{"username": u.username, "name": u.display_name, "role": u.role, "active": u.active} for u in users]
    text = "\n".join(f"{u.username}\t{u.display_name}\t{u.role_name}\t{'启用' if u.active else '停用'}" for u in users)
    _emit(rows, as_json, text or "还没有员工账号")


def _finance_actor(username: str | None) -> str:
    """Who acts: a named finance (or admin) staff user, so four-eyes holds on the command line
    too; without --by, the operating-system user."""
    return _staff_actor(username, ("finance", "admin"), "财务人员") if username else _actor()


def _receipt_json(r: Any) -> dict[str, Any]:
    from backoffice.money import format_money

    return {
        "id": r.id, "account_code": r.account.code, "amount": format_money(r.amount), "paid_on": r.paid_on.isoformat(),
        "payer_name": r.payer_name, "bank": r.bank, "bank_reference": r.bank_reference, "status": r.status,
        "status_name": r.status_name, "recorded_by": r.recorded_by, "approved_by": r.approved_by, "confirmed_by": r.confirmed_by,
        "rejection_reason": r.rejection_reason, "reversal_reason": r.reversal_reason, "voucher": r.voucher_file,
    }  # fmt: skip


@finance_cli.command("receipt")
@click.option("--account", "account_code", required=True, help="enterprise account code, e.g. E000001")
@click.option("--amount", required=True, help="amount in 元, e.g. 1750.00")
@click.option("--bank-ref", required=True, help="the bank's transaction reference")
@click.option("--date", "paid_on", required=True, help="date of the transfer, YYYY-MM-DD")
@click.option("--payer", default=None, help="payer name (default: the customer's name)")
@click.option("--bank", default=None, help="receiving bank code (default: from the contract, else RECEIVING_BANK)")
@click.option("--voucher", type=click.Path(dir_okay=False, path_type=Path), default=None, help="remittance voucher (PDF, PNG or JPEG)")
@click.option("--by", "username", default=None, help="finance staff user recording it")
@click.option("--json", "as_json", is_flag=True)
def finance_receipt(
    account_code: str, amount: str, bank_ref: str, paid_on: str, payer: str | None, bank: str | None,
    voucher: Path | None, username: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Record a bank transfer (waits for finance to confirm it)."""
    from backoffice.services.receipts import Voucher, receiving_bank, record_receipt

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with refusals(as_json):
        actor = _finance_actor(username)
        upload = None
        if voucher is not None:
            # One byte past the limit: the service names the size (as the web form reads it).
            upload = Voucher(voucher.name, read_bounded(voucher, field="voucher", limit=app.config["VOUCHER_MAX_BYTES"]))
        receipt = record_receipt(
            db.session, account_code=account_code, amount=amount, paid_on=paid_on, payer_name=payer, bank_reference=bank_ref,
            bank=bank or receiving_bank(db.session, account_code, default=app.config["RECEIVING_BANK"]), voucher=upload, recorded_by=actor,
            documents_root=Path(app.config["DOCUMENTS_PATH"]), max_voucher_bytes=app.config["VOUCHER_MAX_BYTES"],
        )  # fmt: skip
        db.session.commit()
    _emit(
        _receipt_json(receipt),
        as_json,
        f"已登记到账记录 {receipt.id}（{receipt.status_name}）：{receipt.account.code} {amount} 元，流水号 {receipt.bank_reference}",
    )


def _confirmation_json(result: Any) -> dict[str, Any]:
    from backoffice.money import format_money

    inv = result.invoice
    return {
        "receipt": _receipt_json(result.receipt),
        "credited": result.credited,
        "already_confirmed": result.already,
        "waiting_for_second_approval": result.receipt.status == "approved",
        "balance": format_money(result.balance),
        "account_status": result.receipt.account.status,
        "invoice_number": inv.number if inv else None,
        "invoice_pdf": inv.pdf_file if inv else None,
    }


@finance_cli.command("confirm")
@click.argument("receipt_id")
@click.option("--by", "username", default=None, help="finance staff user confirming it (four-eyes)")
@click.option("--json", "as_json", is_flag=True)
def finance_confirm(receipt_id: str, username: str | None, as_json: bool) -> None:
    """Confirm a receipt: credit the account, book it, issue the invoice, notify the customer."""
    from backoffice.money import format_money
    from backoffice.services.receipts import confirm_receipt

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with refusals(as_json):
        result = confirm_receipt(
            db.session, receipt_id, actor=_finance_actor(username), four_eyes_threshold=app.config["FOUR_EYES_THRESHOLD"],
            documents_root=Path(app.config["DOCUMENTS_PATH"]),
        )  # fmt: skip
        db.session.commit()
    for warning in after_commit_catch_up(app):
        click.echo(f"警告：{warning}", err=True)
    r = result.receipt
    if r.status == "approved":
        text = f"到账记录 {r.id} 已初审（{r.approved_by}），金额超过四眼原则限额，须由另一位财务人员复核确认"
    else:
        prefix = "（此前已确认）" if result.already else ""
        number = result.invoice.number if result.invoice else "无"
        text = f"到账记录 {r.id} 已确认入账{prefix}：账户 {r.account.code} 可用余额 {format_money(result.balance)} 元，发票 {number}"
    _emit(_confirmation_json(result), as_json, text)


@finance_cli.command("reject")
@click.argument("receipt_id")
@click.option("--reason", required=True)
@click.option("--by", "username", default=None)
@click.option("--json", "as_json", is_flag=True)
def finance_reject(receipt_id: str, reason: str, username: str | None, as_json: bool) -> None:
    """Reject a recorded receipt with a reason the customer sees."""
    from backoffice.services.receipts import reject_receipt

    with refusals(as_json):
        receipt = reject_receipt(db.session, receipt_id, reason=reason, actor=_finance_actor(username))
        db.session.commit()
    _emit(_receipt_json(receipt), as_json, f"到账记录 {receipt.id} 已驳回：{receipt.rejection_reason}")


@finance_cli.command("reverse")
@click.argument("receipt_id")
@click.option("--reason", required=True)
@click.option("--by", "username", default=None)
@click.option("--json", "as_json", is_flag=True)
def finance_reverse(receipt_id: str, reason: str, username: str | None, as_json: bool) -> None:
    """Reverse a confirmed receipt by a reversing entry (the invoice is voided)."""
    from backoffice.services.receipts import reverse_receipt

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with refusals(as_json):
        reversal = reverse_receipt(
            db.session, receipt_id, reason=reason, actor=_finance_actor(username), documents_root=Path(app.config["DOCUMENTS_PATH"])
        )
        db.session.commit()
    for warning in after_commit_catch_up(app):
        click.echo(f"警告：{warning}", err=True)
    receipt = reversal.receipt
    _emit(_receipt_json(receipt), as_json, f"到账记录 {receipt.id} {reversal.summary()}：{receipt.reversal_reason}")


@finance_cli.command("receipts")
@click.option("--all", "show_all", is_flag=True, help="every receipt, not only the ones waiting for finance")
@click.option("--json", "as_json", is_flag=True)
def finance_receipts(show_all: bool, as_json: bool) -> None:
    """The queue of receipts waiting for finance."""
    from backoffice.models.finance import RECEIPT_STATUSES
    from backoffice.services.receipts import receipt_queue

    rows = receipt_queue(db.session, tuple(RECEIPT_STATUSES) if show_all else ("pending", "approved"))
    payload = [_receipt_json(r) for r in rows]
    text = "\n".join(
        f"{r['id']:>6}  {r['account_code']}  {r['amount']:>12}  {r['paid_on']}  {r['bank_reference']}  {r['status_name']}" for r in payload
    )
    _emit(payload, as_json, text or "没有待确认的到账")


@finance_cli.command("import-statement")
@click.argument("statement_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--by", "username", default=None)
@click.option("--json", "as_json", is_flag=True)
def finance_import_statement(statement_file: Path, username: str | None, as_json: bool) -> None:
    """Import a bank statement (CSV: the generic layout or a bank's export) and propose matches."""
    from backoffice.money import format_money
    from backoffice.services.statements import import_statement, proposals

    with refusals(as_json):
        from backoffice.services.statements import MAX_STATEMENT_BYTES

        content = read_bounded(statement_file, field="file", limit=MAX_STATEMENT_BYTES)  # the service refuses what is over
        record = import_statement(db.session, filename=statement_file.name, content=content, actor=_finance_actor(username))
        db.session.commit()
    ours = {line.id for line in record.lines}
    found = [p for p in proposals(db.session) if p.line.id in ours]
    payload = {
        "statement_id": record.id, "layout": record.layout, "lines": record.line_count, "skipped_debits": record.skipped_debits,
        "duplicate_lines": record.duplicate_lines,
        "proposals": [
            {"line_id": p.line.id, "line_no": p.line.line_no, "booked_on": p.line.booked_on.isoformat(), "amount": format_money(p.line.amount),
             "payer_name": p.line.payer_name, "reference": p.line.reference, "receipt_id": p.receipt.id if p.receipt else None,
             "account_code": p.account.code if p.account else None, "customer_name": p.account.customer_name if p.account else None,
             "score": p.score, "reasons": p.reasons, "conflicts": p.conflicts, "hint": p.hint}
            for p in found
        ],
    }  # fmt: skip
    lines = [
        f"已导入对账单（{record.layout}）：{record.line_count} 笔入账，跳过支出 {record.skipped_debits} 笔、重复 {record.duplicate_lines} 笔"
    ]
    for p in payload["proposals"]:
        target = (
            f"到账记录 {p['receipt_id']}（账户 {p['account_code']} {p['customer_name']}）"
            if p["receipt_id"]
            else (f"账户 {p['account_code']} {p['customer_name']}（未登记）" if p["account_code"] else "无匹配")
        )
        lines.append(f"  第 {p['line_no']} 行 {p['amount']} 元 {p['payer_name']} → {target}：{'、'.join(p['reasons'])}")
        lines.extend(f"    {conflict}" for conflict in p["conflicts"])
        lines.extend([f"    {p['hint']}"] if p["hint"] else [])
    _emit(payload, as_json, "\n".join(lines))


@finance_cli.command("match")
@click.argument("line_id")
@click.argument("receipt_id")
@click.option("--by", "username", default=None)
@click.option("--json", "as_json", is_flag=True)
def finance_match(line_id: str, receipt_id: str, username: str | None, as_json: bool) -> None:
    """Accept a proposed match: tie the statement line to the receipt and confirm the receipt."""
    from backoffice.services.receipts import confirm_receipt
    from backoffice.services.statements import match_line

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with refusals(as_json):
        actor = _finance_actor(username)
        match_line(db.session, line_id, receipt_id, actor=actor)
        result = confirm_receipt(
            db.session,
            receipt_id,
            actor=actor,
            four_eyes_threshold=app.config["FOUR_EYES_THRESHOLD"],
            documents_root=Path(app.config["DOCUMENTS_PATH"]),
        )
        db.session.commit()
    for warning in after_commit_catch_up(app):
        click.echo(f"警告：{warning}", err=True)
    _emit(_confirmation_json(result), as_json, f"已匹配并确认到账记录 {result.receipt.id}（{result.receipt.status_name}）")


statement_line_cli = CommandGroup("statement-line", help="对账单明细：列出已忽略的明细，忽略（不是客户的汇款）或恢复")
finance_cli.add_command(statement_line_cli)


def _statement_line_json(line: Any) -> dict[str, Any]:
    from backoffice.money import format_money

    return {
        "id": line.id, "statement_id": line.statement_id, "line_no": line.line_no, "booked_on": line.booked_on.isoformat(),
        "amount": format_money(line.amount), "payer_name": line.payer_name, "reference": line.reference, "memo": line.memo,
        "receipt_id": line.receipt_id, "ignored": line.ignored_at is not None,
        "ignored_at": line.ignored_at.isoformat() if line.ignored_at else None, "ignored_by": line.ignored_by,
        "ignore_reason": line.ignore_reason,
    }  # fmt: skip


@statement_line_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def statement_line_list(as_json: bool) -> None:
    """The lines set aside (忽略), latest first, with the id `restore` takes (as 已忽略的明细 on
    the statements page)."""
    from backoffice.clock import to_local
    from backoffice.display import actor_name
    from backoffice.money import format_money
    from backoffice.services.statements import ignored_lines

    lines = ignored_lines(db.session)
    text = "\n".join(
        f"{line.id}  {line.booked_on}  {format_money(line.amount):>12}  {line.payer_name or '-'}  {line.reference}  "
        f"{line.ignore_reason}  {actor_name(line.ignored_by)}  {to_local(line.ignored_at):%Y-%m-%d %H:%M}"
        for line in lines
        if line.ignored_at is not None
    )
    if text:
        text = "编号  入账日期  金额（元）  付款人  流水号  忽略原因  忽略人  时间\n" + text
        text += "\n恢复某条明细：finance statement-line restore 编号"
    _emit([_statement_line_json(line) for line in lines], as_json, text or "没有已忽略的明细")


@statement_line_cli.command("ignore")
@click.argument("line_id")
@click.option("--reason", required=True, help="why it is set aside (not a customer's money: interest, a refund …)")
@click.option("--by", "username", default=None, help="finance staff user setting it aside")
@click.option("--json", "as_json", is_flag=True)
def statement_line_ignore(line_id: str, reason: str, username: str | None, as_json: bool) -> None:
    """Set a statement line aside with a reason, off the queue of lines to match (as 忽略 on the statements page)."""
    from backoffice.services.statements import ignore_line

    with refusals(as_json):
        line = ignore_line(db.session, line_id, reason=reason, actor=_finance_actor(username))
        db.session.commit()
    text = (
        f"已忽略对账单明细 {line.id}（流水号 {line.reference}）：{line.ignore_reason}；可用 finance statement-line restore {line.id} 恢复"
    )
    _emit(_statement_line_json(line), as_json, text)


@statement_line_cli.command("restore")
@click.argument("line_id")
@click.option("--by", "username", default=None, help="finance staff user restoring it")
@click.option("--json", "as_json", is_flag=True)
def statement_line_restore(line_id: str, username: str | None, as_json: bool) -> None:
    """Put a statement line set aside back on the queue of lines to match (as 恢复 on the statements page)."""
    from backoffice.services.statements import restore_line

    with refusals(as_json):
        line = restore_line(db.session, line_id, actor=_finance_actor(username))
        db.session.commit()
    _emit(_statement_line_json(line), as_json, f"已恢复对账单明细 {line.id}（流水号 {line.reference}），重新列入待匹配")


@finance_cli.command("invoices")
@click.option("--overdue", is_flag=True, help="only unpaid invoices past their due date")
@click.option("--json", "as_json", is_flag=True)
def finance_invoices(overdue: bool, as_json: bool) -> None:
    """Invoices, newest first, with their payment status (overdue ones marked)."""
    from backoffice.clock import local_today
    from backoffice.money import format_money
    from backoffice.services.invoices import amounts_owed, invoice_list

    today = local_today()
    invoices = invoice_list(db.session, overdue_only=overdue, today=today)
    owed = amounts_owed(db.session, invoices)  # an invoice paid in part: what is still owed on it
    rows = [
        {"number": i.number, "account_code": i.account.code, "amount": format_money(i.amount), "issued_on": i.issued_on.isoformat(),
         "due_on": i.due_on.isoformat() if i.due_on else None, "status": i.status, "overdue": i.is_overdue(today),
         "status_name": i.status_name(today, owed[i.id]), "pdf": i.pdf_file,
         "owed": format_money(owed[i.id]), "part_paid": i.is_part_paid(owed[i.id])}
        for i in invoices
    ]  # fmt: skip
    text = "\n".join(
        f"{r['number']}  {r['account_code']}  {r['amount']:>12}  尚欠 {r['owed']:>12}  {r['issued_on']}  到期 {r['due_on'] or '-'}  {r['status_name']}"
        for r in rows
    )
    _emit(rows, as_json, text or "没有发票")


@finance_cli.command("notify")
@click.option("--json", "as_json", is_flag=True)
def finance_notify(as_json: bool) -> None:
    """Send the notifications that are due (the scheduler does this every minute)."""
    from backoffice.jobs import deliver_notifications_now

    counts = deliver_notifications_now(current_app._get_current_object())  # type: ignore[attr-defined]
    _emit(counts, as_json, "，".join(f"{k} {v}" for k, v in counts.items()))


@finance_cli.command("holiday")
@click.argument("day")
@click.argument("last_day", required=False)
@click.option("--working", "is_working", flag_value=True, help="a make-up working day (调休上班)")
@click.option("--rest", "is_working", flag_value=False, default=False, help="an official holiday (default)")
@click.option("--note", default="", help="e.g. 2027 春节")
@click.option("--remove", is_flag=True, help="delete the entry")
@click.option("--json", "as_json", is_flag=True)
def finance_holiday(day: str, last_day: str | None, is_working: bool, note: str, remove: bool, as_json: bool) -> None:
    """Maintain the official calendar for years chinese-calendar does not cover yet (from the
    State Council's notice): DAY, or DAY through LAST_DAY (a whole holiday period at once).
    Invoice due dates count Chinese working days: the unpaid invoices the change makes fall due
    later are moved (rendered again, the customer told once); none is moved earlier."""
    from datetime import date as date_type

    from backoffice.models import WorkingDayOverride
    from backoffice.services.working_days import set_working_day
    from reports.workdays import covered_by_library

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with refusals(as_json):
        try:
            when = date_type.fromisoformat(day)
        except ValueError:
            raise ValidationFailed({"day": "日期格式应为 YYYY-MM-DD"}) from None
        try:
            last = date_type.fromisoformat(last_day) if last_day else None
        except ValueError:
            raise ValidationFailed({"last_day": "结束日期格式应为 YYYY-MM-DD"}) from None
        moves = set_working_day(
            db.session,
            when,
            is_working=is_working,
            note=note,
            remove=remove,
            last_day=last,
            actor=_actor(),
            documents_root=Path(app.config["DOCUMENTS_PATH"]),
        )
        db.session.commit()
    for warning in after_commit_catch_up(app):
        click.echo(f"警告：{warning}", err=True)
    rows = db.session.scalars(sa.select(WorkingDayOverride).order_by(WorkingDayOverride.day)).all()
    calendar = [{"day": r.day.isoformat(), "working_day": r.is_working_day, "note": r.note} for r in rows]
    warning = "" if not covered_by_library(when.year) else f"（注意：{when.year} 年已由 chinese-calendar 覆盖，此条优先于库中的日历）"
    text = "\n".join(f"{r['day']}  {'调休上班' if r['working_day'] else '休息'}  {r['note']}" for r in calendar)
    # The invoices moved go to stderr: --json prints the calendar as it always has (a stable
    # interface, DESIGN), and `finance invoices --json` gives every due date (a review).
    if moves:
        click.echo(
            f"已按新的工作日安排调整 {len(moves)} 张未付发票的付款期限（已重新生成发票并通知客户）：\n"
            + "\n".join(f"  {m.invoice.number}  {m.invoice.account.code}  {m.old.isoformat()} → {m.new.isoformat()}" for m in moves),
            err=True,
        )
    else:
        click.echo("没有未付发票的付款期限因此改变", err=True)
    _emit(calendar, as_json, (text or "没有自定义的节假日") + warning)


@demo_cli.command("load")
def demo_load() -> None:
    """Demo settings: a secret key, the signing certificate, and demo staff (admin/sales/finance)."""
    import sqlalchemy as sa

    from backoffice.models import StaffUser
    from backoffice.services.staff import create_staff_user

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    instance = Path(app.config["INSTANCE_PATH"])
    instance.mkdir(parents=True, exist_ok=True)
    key_file = instance / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    signing_identity(app)
    for username, role, name in (("admin", "admin", "系统管理员"), ("sales", "sales", "销售演示"), ("finance", "finance", "财务演示")):
        if not db.session.scalar(sa.select(StaffUser).where(StaffUser.username == username)):
            create_staff_user(db.session, username, name, f"{username}-demo-2026", role, actor="demo")
    db.session.commit()
    click.echo("演示数据已加载：admin / sales / finance，密码为 <用户名>-demo-2026")
    credentials = _demo_customer(app)
    if credentials:
        click.echo(credentials)


DEMO_CUSTOMER = "演示客户（成都）网络科技有限公司"


def _demo_customer(app: Flask) -> str | None:
    """Once per instance: a contract (template 000) for a demo customer, its first payment
    confirmed by finance (so the account is active with credit), and an API key. The logins and
    the key are shown once and kept in instance/demo-credentials.txt (mode 600)."""
    from backoffice.clock import local_today
    from backoffice.models import Contract
    from backoffice.money import format_price
    from backoffice.services.api_keys import issue_api_key
    from backoffice.services.contract_fields import flatten
    from backoffice.services.contracts import issue_contract
    from backoffice.services.receipts import confirm_receipt, record_receipt
    from backoffice.services.templates import get_template

    if db.session.scalar(sa.select(Contract.id).where(Contract.customer_name == DEMO_CUSTOMER)) is not None:
        return None
    today = local_today()
    raw = flatten(copy.deepcopy(get_template("enterprise_sms_center").sample))
    raw.update({
        "customer.name": DEMO_CUSTOMER, "term_start": today.isoformat(), "customer_signed_on": today.isoformat(),
        "provider_signed_on": today.isoformat(),
    })  # fmt: skip
    raw.pop("term_end", None)  # computed from the start and the years
    documents = Path(app.config["DOCUMENTS_PATH"])
    issued = issue_contract(
        db.session, "enterprise_sms_center", raw, issued_by="demo", documents_root=documents, signing_identity=signing_identity(app)
    )
    account = issued.contract.account
    account.contact_email = "demo-customer@example.cn"
    receipt = record_receipt(
        db.session, account_code=account.code, amount=issued.contract.initial_amount, paid_on=today, payer_name=DEMO_CUSTOMER,
        bank_reference=f"DEMO{today:%Y%m%d}", bank=str(app.config["RECEIVING_BANK"]), voucher=None, recorded_by="staff:sales",
        documents_root=documents, max_voucher_bytes=int(app.config["VOUCHER_MAX_BYTES"]),
    )  # fmt: skip
    confirm_receipt(
        db.session, receipt.id, actor="staff:finance", four_eyes_threshold=app.config["FOUR_EYES_THRESHOLD"], documents_root=documents
    )
    _, secret = issue_api_key(db.session, account.code, sub_login=None, label="演示", actor="demo")
    db.session.commit()
    for warning in after_commit_catch_up(app):
        click.echo(f"警告：{warning}", err=True)
    lines = [
        f"演示客户：{DEMO_CUSTOMER}，合同 {issued.contract.contract_no}，企业号 {account.code}，可用余额 {format_price(account.balance)} 元"
    ]
    lines += [f"  客户门户登录 /portal/login：{o.login} / {o.password}" for o in issued.logins]
    lines.append(f"  API 密钥（Authorization: Bearer …）：{secret}")
    text = "\n".join(lines)
    path = Path(app.config["INSTANCE_PATH"]) / "demo-credentials.txt"
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return text


def register_cli(app: Flask) -> None:
    from backoffice.cli_dispatch import account_api_key, account_settings, dispatch_cli, smsc_cli

    account_cli.add_command(account_api_key)
    account_cli.add_command(account_settings)
    groups = (contract_cli, account_cli, ledger_cli, jobs_cli, demo_cli, user_cli, finance_cli, documents_cli, dispatch_cli, smsc_cli)
    for group in groups:
        app.cli.add_command(group)
