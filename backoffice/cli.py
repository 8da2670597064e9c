"""Command line: `flask --app wsgi <group> <command>`; `--json` where a script reads the output."""

from __future__ import annotations

import getpass
import json
import secrets
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup

from backoffice.clock import utcnow
from backoffice.errors import DomainError, ValidationFailed
from backoffice.extensions import db


def _emit(payload: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2, default=str) if as_json else text)


def _fail(error: DomainError, as_json: bool) -> NoReturn:
    db.session.rollback()
    fields = getattr(error, "errors", {})
    if as_json:
        click.echo(json.dumps({"error": {"code": error.code, "message": error.message, "fields": fields}}, ensure_ascii=False, indent=2))
    else:
        click.echo(f"错误：{error.message if not fields else '输入有误'}", err=True)
        for name, reason in fields.items():
            click.echo(f"  {name}: {reason}", err=True)
    sys.exit(1 if not isinstance(error, ValidationFailed) else 2)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file, numbers with a fraction as Decimal (money never passes
    through float); anything unreadable is a ValidationFailed naming the file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
        json.dumps(raw, ensure_ascii=False, default=str).encode("utf-8")  # lone surrogates
    except (OSError, UnicodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValidationFailed({"data": f"无法读取 JSON 文件：{type(exc).__name__}"}) from None
    if not isinstance(raw, dict):
        raise ValidationFailed({"data": "JSON 文件应为一个对象"})
    return raw


def busy_error() -> DomainError:
    db.session.rollback()
    error = DomainError("系统繁忙（数据库被其他操作占用），未做任何更改，请稍后重试")
    error.status, error.code = 503, "busy"
    return error


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
    """Post pending ledger events and arm pending jobs; both are retried later if this fails."""
    from backoffice.jobs import arm_pending
    from backoffice.services.bookkeeping import post_pending

    warnings = []
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


contract_cli = AppGroup("contract", help="合同：模板、签发、核验")
account_cli = AppGroup("account", help="企业账户")
ledger_cli = AppGroup("ledger", help="账簿（beancount）")
jobs_cli = AppGroup("jobs", help="定时任务")
demo_cli = AppGroup("demo", help="演示数据")
user_cli = AppGroup("user", help="员工账号")


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
    path = (base / str(value)).resolve()
    if not path.is_file():
        raise ValidationFailed({"signature": f"签名图片文件不存在：{value}"})
    return path.read_bytes()


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
    try:
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
    except DomainError as error:
        _fail(error, as_json)
    except sa.exc.OperationalError:
        _fail(busy_error(), as_json)
    except BaseException:
        db.session.rollback()  # discards staged files too: a crash leaves nothing behind
        raise
    for warning in after_commit_catch_up(app):
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
    result = verify_pdf(pdf_file.read_bytes(), trusted_certs=[identity.cert_path])
    ok = result.signed and result.intact and result.valid and result.trusted and result.covers_whole_file
    payload = {"file": str(pdf_file), "intact": ok, **{k: v for k, v in vars(result).items()}}
    text = "签章完好：文件自签署后未被修改" if ok else "签章无效或文件已被修改：" + "；".join(result.problems or ["未通过校验"])
    _emit(payload, as_json, text)
    sys.exit(0 if ok else 1)


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
        "pending_events": report.pending_events,
        "differences": [{"account": d.account, "database": str(d.database), "books": str(d.books)} for d in report.differences],
    }
    lines = ["账簿检查通过" if report.ok else "账簿检查未通过"] + report.errors
    lines += [f"不一致：{d.account} 数据库 {d.database} 账簿 {d.books}" for d in report.differences]
    if report.pending_events:
        lines.append(f"有 {report.pending_events} 笔事件尚未记账（运行 ledger sync）")
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
    import filecmp
    import shutil
    import tempfile

    from backoffice.services.bookkeeping import rebuild_books

    root = Path(current_app.config["LEDGER_PATH"])
    staging = Path(tempfile.mkdtemp(prefix="ledger-rebuild-", dir=root.parent))
    count = rebuild_books(db.session, staging)
    differing = []
    names = {
        p.relative_to(d).as_posix()
        for d in (root, staging)
        if d.exists()
        for p in d.rglob("*.beancount")
        if not any(part.startswith(".") for part in p.relative_to(d).parts)  # the checker's work files
    }
    for name in sorted(names):
        a, b = root / name, staging / name
        if not (a.exists() and b.exists() and filecmp.cmp(a, b, shallow=False)):
            differing.append(name)
    click.echo(
        f"从 {count} 笔记账事件重建账簿："
        + ("与现有账簿完全一致" if not differing else f"{len(differing)} 个文件不同：{', '.join(differing)}")
    )
    if replace and differing:
        backup = root.with_name(f"{root.name}.replaced-{utcnow():%Y%m%dT%H%M%S}")
        if root.exists():
            root.rename(backup)
        staging.rename(root)
        click.echo(f"已用重建的账簿替换；原账簿保存在 {backup}")
        return
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
        click.echo(f"查询有误：{exc}", err=True)
        sys.exit(2)
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    text = "\n".join(["\t".join(result.columns)] + ["\t".join(str(v) for v in row) for row in result.rows])
    _emit(rows, as_json, text)


@ledger_cli.command("assert-balances")
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="default: today (Beijing)")
def ledger_assert_balances(day: Any) -> None:
    """Write today's balance assertion of every customer's prepaid account, from the database."""
    from backoffice.clock import local_today
    from backoffice.services.bookkeeping import post_pending
    from backoffice.services.credit import record_balance_assertions

    count = record_balance_assertions(db.session, day.date() if day else local_today())
    db.session.commit()
    post_pending(db.session, Path(current_app.config["LEDGER_PATH"]))
    click.echo(f"写入 {count} 条余额断言")


@ledger_cli.command("sync")
def ledger_sync() -> None:
    """Post every pending ledger event to the books."""
    from backoffice.services.bookkeeping import post_pending

    count = post_pending(db.session, Path(current_app.config["LEDGER_PATH"]))
    db.session.commit()
    click.echo(f"记账 {count} 笔")


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
@click.option("--role", type=click.Choice(["sales", "finance", "admin"]), required=True)
@click.option("--name", "display_name", default="")
@click.password_option()
def user_create(username: str, role: str, display_name: str, password: str) -> None:
    from backoffice.services.staff import create_staff_user

    try:
        create_staff_user(db.session, username, display_name, password, role, actor=_actor())
        db.session.commit()
    except DomainError as error:
        _fail(error, False)
    click.echo(f"已创建 {role} 用户 {username}")


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


def register_cli(app: Flask) -> None:
    for group in (contract_cli, account_cli, ledger_cli, jobs_cli, demo_cli, user_cli):
        app.cli.add_command(group)
