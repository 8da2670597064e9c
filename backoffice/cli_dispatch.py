"""Command line of the message path: `flask --app wsgi dispatch …` (forbidden keywords, the send
log) and `flask --app wsgi account api-key` (a key printed once)."""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timedelta

import click
from flask.cli import AppGroup

from backoffice.clock import SHANGHAI, to_local
from backoffice.errors import DomainError
from backoffice.extensions import db

dispatch_cli = AppGroup("dispatch", help="短信发送：违禁词、发送日志")
keywords_cli = AppGroup("keywords", help="违禁词列表（管理员维护）")
dispatch_cli.add_command(keywords_cli)


def _cli_helpers():  # type: ignore[no-untyped-def]
    from backoffice.cli import _actor, _emit, _fail

    return _actor, _emit, _fail


@click.command("api-key")
@click.argument("account_code")
@click.option("--sub", "sub_login", default=None, help="sub-account login (default: the primary login)")
@click.option("--label", default="", help="what the key is for")
@click.option("--json", "as_json", is_flag=True)
def account_api_key(account_code: str, sub_login: str | None, label: str, as_json: bool) -> None:
    """Create an API key for an account's sub-account and print it (once: only its hash is kept)."""
    from backoffice.services.api_keys import issue_api_key

    actor, emit, fail = _cli_helpers()
    try:
        key, secret = issue_api_key(db.session, account_code, sub_login=sub_login, label=label, actor=actor())
        db.session.commit()
    except DomainError as error:
        fail(error, as_json)
    payload = {"account_code": account_code, "sub_account": key.sub_account.login, "id": key.id, "prefix": key.prefix, "api_key": secret}
    emit(payload, as_json, f"子号 {key.sub_account.login} 的 API 密钥（只显示这一次，请妥善保存）：\n{secret}")


@keywords_cli.command("add")
@click.argument("words", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
def keywords_add(words: tuple[str, ...], as_json: bool) -> None:
    """Add forbidden keywords."""
    from backoffice.services.messaging import add_keywords

    actor, emit, fail = _cli_helpers()
    try:
        added = add_keywords(db.session, list(words), actor=actor())
        db.session.commit()
    except DomainError as error:
        fail(error, as_json)
    emit({"added": added}, as_json, f"新增 {len(added)} 个违禁词" + (f"：{'、'.join(added)}" if added else "（均已在列表中）"))


@keywords_cli.command("remove")
@click.argument("words", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
def keywords_remove(words: tuple[str, ...], as_json: bool) -> None:
    """Remove forbidden keywords."""
    from backoffice.services.messaging import remove_keywords

    actor, emit, _ = _cli_helpers()
    removed = remove_keywords(db.session, list(words), actor=actor())
    db.session.commit()
    emit({"removed": removed}, as_json, f"删除 {len(removed)} 个违禁词" + (f"：{'、'.join(removed)}" if removed else "（均不在列表中）"))


@keywords_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def keywords_list(as_json: bool) -> None:
    """The forbidden keywords, oldest first."""
    import sqlalchemy as sa

    from backoffice.models import ForbiddenKeyword

    _, emit, _ = _cli_helpers()
    rows = db.session.scalars(sa.select(ForbiddenKeyword).order_by(ForbiddenKeyword.id)).all()
    emit(
        [{"word": r.word, "created_at": r.created_at.isoformat(), "created_by": r.created_by} for r in rows],
        as_json,
        "\n".join(r.word for r in rows),
    )


@dispatch_cli.command("verify-log")
@click.option("--json", "as_json", is_flag=True)
def verify_log(as_json: bool) -> None:
    """Walk the send log's hash chain; exit 1 if any record was changed, removed or inserted."""
    from backoffice.services.send_log import verify_chain

    _, emit, _ = _cli_helpers()
    problems = verify_chain(db.session)
    emit({"ok": not problems, "problems": problems}, as_json, "发送日志完整，未被篡改" if not problems else "\n".join(problems))
    sys.exit(1 if problems else 0)


def _local_day(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=SHANGHAI)


@dispatch_cli.command("export-log")
@click.option("--from", "start", required=True, help="first day, YYYY-MM-DD (Beijing)")
@click.option("--to", "end", required=True, help="last day, YYYY-MM-DD (Beijing), included")
@click.option("--account", "account_code", default=None)
def export_log(start: str, end: str, account_code: str | None) -> None:
    """The send log as CSV on stdout (for the authorities): time, account, service code,
    recipient, content, result, and the chain's hashes so the copy can be verified."""
    from backoffice.services.send_log import export_send_log

    writer = csv.writer(sys.stdout)
    writer.writerow(["seq", "time_beijing", "account", "service_code", "recipient", "content", "result", "prev_hash", "hash"])
    rows = export_send_log(db.session, start=_local_day(start), end=_local_day(end) + timedelta(days=1), account_code=account_code)
    for r in rows:
        writer.writerow(
            [
                r.seq,
                to_local(r.logged_at).isoformat(),
                r.account_code,
                r.service_code or "",
                r.recipient,
                r.content,
                r.result,
                r.prev_hash,
                r.hash,
            ]
        )
