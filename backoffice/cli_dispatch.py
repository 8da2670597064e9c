"""Command line of the message path: `flask --app wsgi dispatch …` (the worker, forbidden
keywords, the send log), `flask --app wsgi smsc simulate` (the built-in SMSC) and
`flask --app wsgi account api-key` (a key printed once) and `account settings` (rate, signature,
blacklist)."""

from __future__ import annotations

import contextlib
import csv
import logging
import signal
import socket
import sys
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from backoffice.cli import CommandGroup, _actor, _emit, refusals
from backoffice.clock import SHANGHAI
from backoffice.errors import DomainError, ValidationFailed
from backoffice.extensions import db


class _Seconds(click.FloatRange):
    """A non-negative finite number of seconds (or messages per second): nan and inf refused too."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number:  # nan compares unequal to itself and passes FloatRange
            self.fail(f"{value!r} 不是数字", param, ctx)
        return number


_SECONDS = _Seconds(min=0, max=86_400)

dispatch_cli = CommandGroup("dispatch", help="短信发送：发送进程、违禁词、发送日志")
keywords_cli = CommandGroup("keywords", help="违禁词列表（管理员维护）")
dispatch_cli.add_command(keywords_cli)
smsc_cli = CommandGroup("smsc", help="内置 SMSC 模拟器（开发、测试、压测用）")


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a process stops cleanly (drain, record, release)."""
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    return stop


def _log_to_stderr() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command("api-key")
@click.argument("account_code")
@click.option("--sub", "sub_login", default=None, help="sub-account login (default: the primary login)")
@click.option("--label", default="", help="what the key is for")
@click.option("--json", "as_json", is_flag=True)
def account_api_key(account_code: str, sub_login: str | None, label: str, as_json: bool) -> None:
    """Create an API key for an account's sub-account and print it (once: only its hash is kept)."""
    from backoffice.services.api_keys import issue_api_key

    with refusals(as_json):
        key, secret = issue_api_key(db.session, account_code, sub_login=sub_login, label=label, actor=_actor())
        db.session.commit()
    payload = {"account_code": account_code, "sub_account": key.sub_account.login, "id": key.id, "prefix": key.prefix, "api_key": secret}
    _emit(payload, as_json, f"子号 {key.sub_account.login} 的 API 密钥（只显示这一次，请妥善保存）：\n{secret}")


@click.command("settings")
@click.argument("account_code")
@click.option("--rate", default=None, help="messages per second, 1-10000")
@click.option("--signature", default=None, help="the SMS signature, e.g. 【某某科技】 (brackets optional)")
@click.option("--add-signature/--no-add-signature", default=None, help="add the signature to messages that lack it")
@click.option("--lift-blacklist", is_flag=True, help="take the account off the blacklist and clear its violation count")
@click.option("--json", "as_json", is_flag=True)
def account_settings(
    account_code: str, rate: str | None, signature: str | None, add_signature: bool | None, lift_blacklist: bool, as_json: bool
) -> None:
    """Show an account's sending settings, or change the ones given (all or nothing)."""
    from backoffice.services.accounts import get_account
    from backoffice.services.sending_settings import describe_changes, sending_settings, update_sending_settings

    with refusals(as_json):
        if rate is None and signature is None and add_signature is None and not lift_blacklist:
            payload, heading = sending_settings(get_account(db.session, account_code)), []
        else:
            update = update_sending_settings(
                db.session, account_code, rate_limit_per_second=rate, sms_signature=signature, add_signature=add_signature,
                lift_blacklist=lift_blacklist, actor=_actor(),
            )  # fmt: skip
            db.session.commit()
            payload = {**sending_settings(update.account), "changed": list(update.changes)}
            heading = [describe_changes(update)]
    lines = heading + [f"{k}: {'' if v is None else v}" for k, v in payload.items() if k != "changed"]
    _emit(payload, as_json, "\n".join(lines))


@keywords_cli.command("add")
@click.argument("words", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
def keywords_add(words: tuple[str, ...], as_json: bool) -> None:
    """Add forbidden keywords."""
    from backoffice.services.messaging import add_keywords, same_as_note

    with refusals(as_json):
        result = add_keywords(db.session, list(words), actor=_actor())
        db.session.commit()
    added = result.added
    text = f"新增 {len(added)} 个违禁词" + (f"：{'、'.join(added)}" if added else "（均已在列表中）")
    _emit({"added": added, "same_as": result.same_as}, as_json, "\n".join(filter(None, [text, same_as_note(result.same_as)])))


@keywords_cli.command("remove")
@click.argument("words", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
def keywords_remove(words: tuple[str, ...], as_json: bool) -> None:
    """Remove forbidden keywords."""
    from backoffice.services.messaging import remove_keywords

    with refusals(as_json):
        removed = remove_keywords(db.session, list(words), actor=_actor())
        db.session.commit()
    _emit({"removed": removed}, as_json, f"删除 {len(removed)} 个违禁词" + (f"：{'、'.join(removed)}" if removed else "（均不在列表中）"))


@keywords_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def keywords_list(as_json: bool) -> None:
    """The forbidden keywords, oldest first."""
    import sqlalchemy as sa

    from backoffice.models import ForbiddenKeyword

    rows = db.session.scalars(sa.select(ForbiddenKeyword).order_by(ForbiddenKeyword.id)).all()
    _emit(
        [{"word": r.word, "created_at": r.created_at.isoformat(), "created_by": r.created_by} for r in rows],
        as_json,
        "\n".join(r.word for r in rows),
    )


_ARCHIVES = click.option(
    "--archives",
    "archive_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="the archive files' folder (default: SEND_LOG_ARCHIVE_DIR)",
)


def _archives(archive_dir: str | None) -> Path:
    """Where the send log's archive files are: --archives, else SEND_LOG_ARCHIVE_DIR."""
    from flask import current_app

    return Path(archive_dir or current_app.config["SEND_LOG_ARCHIVE_PATH"])


@dispatch_cli.command("verify-log")
@_ARCHIVES
@click.option("--json", "as_json", is_flag=True)
def verify_log(archive_dir: str | None, as_json: bool) -> None:
    """Walk the send log's hash chain, and each archive file's; exit 1 if any record was changed,
    removed or inserted, or an archive file is missing or changed."""
    from backoffice.services.send_log import verify_chain

    problems = verify_chain(db.session, _archives(archive_dir))
    _emit({"ok": not problems, "problems": problems}, as_json, "发送日志完整，未被篡改" if not problems else "\n".join(problems))
    sys.exit(1 if problems else 0)


@dispatch_cli.command("archive-log")
@click.option("--before", "before", required=True, help="archive the lines logged before this day, YYYY-MM-DD (Beijing)")
@click.option("--json", "as_json", is_flag=True)
def archive_log(before: str, as_json: bool) -> None:
    """Move the send log's lines logged before --before (at least SEND_LOG_KEEP_MONTHS months ago,
    six at least) to a gzip CSV file in the export's format in SEND_LOG_ARCHIVE_DIR (one folder
    for all archives, which export-log reads): written, read back and verified, recorded, then
    deleted from the database. Safe to run again after an interruption."""
    from flask import current_app

    from backoffice.clock import local_today
    from backoffice.services.send_log import archive_send_log

    with refusals(as_json):
        day = _local_day(before, "--before").date()
        directory = _archives(None)
        result = archive_send_log(
            db.session, before=day, directory=directory, actor=_actor(), today=local_today(),
            keep_months=current_app.config["SEND_LOG_KEEP_MONTHS"],
        )  # fmt: skip
    archive = result.archive
    if archive is None:
        payload: dict[str, Any] = {"archived": None, "deleted": result.deleted}
        text = f"{day} 之前没有尚未归档的记录" + (f"；已删除上次中断时留下的 {result.deleted} 条已归档记录" if result.deleted else "")
    else:
        payload = {
            "archived": {
                "file": str(result.path), "sha256": archive.file_sha256, "first_seq": archive.first_seq,
                "last_seq": archive.last_seq, "rows": archive.rows, "last_hash": archive.last_hash,
            },
            "deleted": result.deleted,
        }  # fmt: skip
        text = (
            f"已归档第 {archive.first_seq}–{archive.last_seq} 条（{archive.rows} 条，{day} 之前）到 {result.path}，"
            f"SHA-256 {archive.file_sha256}；已从数据库删除 {result.deleted} 条"
        )
    _emit(payload, as_json, text)


@dispatch_cli.command("status")
@click.option("--json", "as_json", is_flag=True)
def dispatch_status_command(as_json: bool) -> None:
    """The queue, each worker as it last said it was, and the problems that need someone (the
    operations page's figures); exit 1 if there is a problem, for a monitoring system to call."""
    from flask import current_app

    from backoffice.services.dispatch_status import status_from_config

    status = status_from_config(db.session, current_app.config)
    db.session.rollback()
    lines = [
        f"待发 {status.due} 条，发送中 {status.held} 条，定时/稍后 {status.later} 条，待回执 {status.awaiting_receipt} 条"
        + (f"；最早的待发短信已等待 {status.oldest_due_minutes} 分钟" if status.oldest_due_minutes is not None else ""),
    ]
    for worker in status.workers:
        row = worker.row
        link = "已绑定" if row.bound else f"未绑定（{worker.down_seconds} 秒）"
        lines.append(
            f"发送进程 {row.name}（{row.host}，进程号 {row.pid}）：{worker.state_name}，{link}，{worker.silent_seconds} 秒前，{row.smsc}"
        )
    lines += [f"问题：{problem}" for problem in status.problems] or ["正常"]
    _emit(status.as_dict(), as_json, "\n".join(lines))
    sys.exit(0 if status.healthy else 1)


@dispatch_cli.command("forget-worker")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def dispatch_forget_worker(name: str, as_json: bool) -> None:
    """Remove the row of a worker gone for good (it is no longer reported as silent); refused
    while it runs."""
    from flask import current_app

    from backoffice.services.dispatch_status import DispatchThresholds, forget_worker

    with refusals(as_json):
        forget_worker(db.session, name, actor=_actor(), thresholds=DispatchThresholds.from_config(current_app.config))
        db.session.commit()
    _emit({"forgotten": name}, as_json, f"已移除发送进程 {name} 的记录")


def _local_day(value: str, field: str) -> datetime:
    """A day of the log (YYYY-MM-DD, Beijing) as the start of that day, or a refusal naming the option."""
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailed({field: f"{field} 应为日期 YYYY-MM-DD：{value[:40]}"}) from None
    if not 2000 <= day.year <= 2100:
        raise ValidationFailed({field: f"{field} 超出范围（2000–2100 年）：{day}"})
    return datetime.combine(day, datetime.min.time(), tzinfo=SHANGHAI)


def _export_account(value: str) -> str:
    """The code of an existing account (case aside), or a refusal naming --account."""
    import sqlalchemy as sa

    from backoffice.models import EnterpriseAccount

    code = value.strip().upper()
    if not code:
        raise ValidationFailed({"--account": "--account 不能为空（导出全部账户时不要给出 --account）"})
    if db.session.scalar(sa.select(EnterpriseAccount.id).where(EnterpriseAccount.code == code)) is None:
        raise ValidationFailed({"--account": f"没有这个账户：{value.strip()[:40]}"})
    return code


@dispatch_cli.command("export-log")
@click.option("--from", "start", required=True, help="first day, YYYY-MM-DD (Beijing)")
@click.option("--to", "end", required=True, help="last day, YYYY-MM-DD (Beijing), included")
@click.option("--account", "account_code", default=None)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True), default=None, help="CSV file (default: stdout)")
@_ARCHIVES
def export_log(start: str, end: str, account_code: str | None, out_path: str | None, archive_dir: str | None) -> None:
    """The send log as CSV (for the authorities): time (Beijing), account, service code, recipient,
    content, result, and the chain's fields so the copy can be verified: `logged_at_utc` and
    `message_id` are hashed too, and hash = SHA-256(prev_hash + canonical row). A verification
    line goes to stderr; the exit status is 1 if a row or the chain does not verify."""
    from backoffice.services.send_log import EXPORT_COLUMNS, LogEntry, chain_hash, export_row, export_send_log, verify_chain

    with refusals(False):
        first, last = _local_day(start, "--from"), _local_day(end, "--to") + timedelta(days=1)
        if last <= first:
            raise ValidationFailed({"--to": f"--to（{end}）早于 --from（{start}）"})
        if account_code is not None:  # an empty or unknown one would export every account's lines, or none "verified"
            account_code = _export_account(account_code)
        target = Path(out_path) if out_path else None
        if target is not None and not target.parent.is_dir():
            raise ValidationFailed({"--out": f"目录不存在：{target.parent}"})
        # A file is written next to the target and renamed over it only when complete: an export
        # that fails leaves an earlier file as it was. A device or a pipe (/dev/null, /dev/stdout,
        # a FIFO) is written to as it is: found by fuzzing, --out /dev/full renamed a file over
        # the device itself (as root, /dev/null would have gone the same way).
        special = target is not None and target.exists() and not target.is_file()
        if target is not None and not special:
            target = target.resolve()  # a link's file is replaced, not the link
        partial = target.with_name(f".{target.name}.partial") if target is not None and not special else None
        try:
            out = open(partial or target, "w", encoding="utf-8", newline="") if target is not None else sys.stdout  # noqa: SIM115 (closed below)
        except OSError as error:  # a folder that cannot take the file: read-only, /proc (found by a review)
            raise ValidationFailed({"--out": f"无法在 {target.parent if target else ''} 写入文件：{error.strerror or error}"}) from None
    problems: list[str] = []
    count, seqs = 0, []
    done = False
    try:
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        previous = None
        for r in export_send_log(db.session, start=first, end=last, account_code=account_code, archive_dir=_archives(archive_dir)):
            entry = LogEntry(r.account_code, r.service_code, r.recipient, r.content, r.result, r.message_id)
            if chain_hash(r.prev_hash, r.seq, r.logged_at, entry) != r.hash:
                problems.append(f"第 {r.seq} 条记录的内容与其哈希不符（记录被修改）")
            if previous is not None and previous.seq + 1 == r.seq and previous.hash != r.prev_hash:
                problems.append(f"第 {r.seq} 条记录的前序哈希与上一条不符（链条断开）")
            writer.writerow(export_row(r))
            previous = r
            count += 1
            seqs.append(r.seq)
        out.flush()  # a full disk (or /dev/full) refuses here, not in close() below
        done = True
    except DomainError as error:  # an archive file the period needs is missing or changed
        with refusals(False):
            raise error from None
    except OSError as error:  # the disk filled up, say: the partial file goes, an earlier export stays
        with refusals(False):
            raise ValidationFailed({"--out": f"写入导出文件失败：{error.strerror or error}"}) from None
    finally:
        if out is not sys.stdout:
            with contextlib.suppress(OSError):  # what was not written is the error above
                out.close()
            if partial is not None and target is not None:
                if done:
                    partial.replace(target)
                else:
                    partial.unlink(missing_ok=True)
    problems += verify_chain(db.session)
    span = f"第 {seqs[0]}–{seqs[-1]} 条" if seqs else "无记录"
    if problems:
        click.echo(f"校验失败：导出 {count} 条（{span}）；" + "；".join(problems[:20]), err=True)
        sys.exit(1)
    click.echo(f"校验通过：导出 {count} 条（{span}），每条哈希与内容相符，整条发送日志哈希链完整", err=True)


@dispatch_cli.command("worker")
@click.option("--window", type=click.IntRange(1, 1000), default=None, help="outstanding submit_sm (default DISPATCH_WINDOW, 10)")
@click.option("--batch", type=click.IntRange(1, 10000), default=None, help="messages claimed at a time (default DISPATCH_BATCH, 200)")
@click.option("--name", "worker_name", default=None, help="worker name for the leases (default dispatch@<host>; one per process)")
@click.option("--max-tps", type=_SECONDS, default=None, help="the link's own rate limit (default SMSC_MAX_TPS; 0: none)")
def dispatch_worker(window: int | None, batch: int | None, worker_name: str | None, max_tps: float | None) -> None:
    """The dispatcher: binds to the SMSC (SMSC_HOST/PORT/SYSTEM_ID/PASSWORD) and sends the queue
    until SIGTERM or Ctrl-C, then drains the window, records the answers and releases the rest."""
    from flask import current_app

    from backoffice.services.dispatcher import DispatchSettings, run_worker
    from dispatch.smpp_link import LinkConfig

    _log_to_stderr()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    c = app.config
    tps = c["SMSC_MAX_TPS"] if max_tps is None else max_tps
    try:
        link = LinkConfig(
            host=c["SMSC_HOST"], port=int(c["SMSC_PORT"]), system_id=c["SMSC_SYSTEM_ID"], password=c["SMSC_PASSWORD"],
            window=window or int(c["DISPATCH_WINDOW"]), max_tps=tps or None,
        )  # fmt: skip
        DispatchSettings.from_config(c)  # refused here, not by every restart of the worker
    except ValueError as exc:
        click.echo(f"错误：配置有误：{exc}", err=True)
        sys.exit(1)
    name = worker_name or f"dispatch@{socket.gethostname()}"
    run_worker(app, link, name, _stop_on_signals(), batch=batch)


@smsc_cli.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=2775, show_default=True)
@click.option("--receipt-delay", type=_SECONDS, default=0.5, show_default=True, help="seconds before the delivery receipt")
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="accepted, then receipt UNDELIV")
@click.option("--reject-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="refused at submit (ESME_RSUBMITFAIL)")
@click.option("--max-tps", type=_SECONDS, default=0.0, show_default=True, help="above it: ESME_RTHROTTLED (0: no limit)")
@click.option("--disconnect-after", type=click.IntRange(min=0), default=0, help="drop the link on the Nth submit (0: never)")
@click.option("--disconnect-repeat", is_flag=True, help="… and on every Nth after it")
@click.option("--response-delay", type=_SECONDS, default=0.0, help="hold each submit_sm_resp this long")
@click.option("--message-id-format", type=click.Choice(["hex", "decimal"]), default="hex", show_default=True)
@click.option("--receipt-id-format", type=click.Choice(["same", "hex", "decimal"]), default="same", show_default=True)
@click.option("--no-receipt-tlvs", is_flag=True, help="receipts as text only (no receipted_message_id / message_state)")
@click.option("--receipts-as", type=click.Choice(["deliver_sm", "data_sm"]), default="deliver_sm", show_default=True)
@click.option("--seed", type=int, default=None, help="seed for the injected faults")
def smsc_simulate(
    host: str,
    port: int,
    receipt_delay: float,
    fail_rate: float,
    reject_rate: float,
    max_tps: float,
    disconnect_after: int,
    disconnect_repeat: bool,
    response_delay: float,
    message_id_format: str,
    receipt_id_format: str,
    no_receipt_tlvs: bool,
    receipts_as: str,
    seed: int | None,
) -> None:
    """Run the SMPP 3.4 SMSC simulator (credentials SMSC_SYSTEM_ID / SMSC_PASSWORD) until SIGTERM or Ctrl-C."""
    from flask import current_app

    from dispatch.simulator import SimulatorConfig, serve_forever

    _log_to_stderr()
    c = current_app.config
    config = SimulatorConfig(
        system_id=c["SMSC_SYSTEM_ID"], password=c["SMSC_PASSWORD"], receipt_delay=receipt_delay, receipt_tlvs=not no_receipt_tlvs,
        message_id_format=message_id_format, receipt_id_format=receipt_id_format, receipts_as=receipts_as,  # type: ignore[arg-type]
        fail_rate=fail_rate, reject_rate=reject_rate, max_tps=max_tps or None, disconnect_after=disconnect_after or None,
        disconnect_repeat=disconnect_repeat, response_delay=response_delay, seed=seed,
    )  # fmt: skip
    try:
        serve_forever(config, host, port, stop=_stop_on_signals())
    except OSError as exc:  # the port taken, a host that is not this machine's
        click.echo(f"错误：无法在 {host}:{port} 上监听：{exc.strerror or exc}", err=True)
        sys.exit(1)
