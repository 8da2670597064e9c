"""The SMS back office: a Flask application factory with no side effects beyond configuring."""

from __future__ import annotations

import logging
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, g, jsonify, render_template, request
from flask_login import current_user
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, Map

from backoffice.config import Config, ConfigError
from backoffice.errors import DomainError
from backoffice.extensions import csrf, db, login_manager, migrate
from backoffice.services.sql import MAX_ID, MAX_INT_ID
from backoffice.storage import commits, storage_refusal

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def _secret_key(instance: Path) -> str:
    """SECRET_KEY from the environment, else the instance's stored key, made by the first process
    that needs one. Found by a review: a process that found none used a key of its own, so with
    two gunicorn workers most logins failed (each worker refused the other's session and CSRF
    token). Several hosts need SECRET_KEY set (README). Written whole to a file of its own and
    linked into place: the link fails if another process got there first, and no process ever
    reads a key half written (a second review: one that died mid-write stopped every start)."""
    stored = instance / "secret_key"
    try:
        key, found = stored.read_text().strip(), True
    except FileNotFoundError:
        key, found = "", False
    except OSError as unreadable:
        raise ConfigError(f"SECRET_KEY 未设置，且 {stored} 无法读取（{unreadable}）") from None
    if key:
        return key
    # Empty as read, not absent then: another process may have linked its key in since our read
    # (found by the suite in two processes: a start beside another was refused as "空文件").
    if found:
        raise ConfigError(f"SECRET_KEY 未设置，且 {stored} 是空文件：删除它（将自动重新生成），或设置 SECRET_KEY")
    key = secrets.token_hex(32)
    try:
        instance.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=instance, prefix=".secret_key.", delete=False) as handle:  # mode 0600
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(handle.name, stored)
        except FileExistsError:  # another process made it first: theirs
            return stored.read_text().strip()
        finally:
            os.unlink(handle.name)
    except OSError as unwritable:
        log.warning("SECRET_KEY not set and %s cannot be written (%s): using a per-process key", stored, unwritable)
        return key
    log.warning("SECRET_KEY not set: made %s (set SECRET_KEY when several hosts serve the site)", stored)
    return key


#: PostgreSQL's serialization failure, deadlock, and lock not available (lock_timeout, NOWAIT).
_BUSY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def database_busy(error: sa.exc.DBAPIError) -> bool:
    """Whether the database refused for other writers (SQLite's lock, a PostgreSQL lock timeout,
    deadlock or serialization failure), so that the same request may go through a moment later;
    the transaction was rolled back, nothing of it written."""
    if getattr(error.orig, "sqlstate", None) in _BUSY_SQLSTATES:
        return True
    words = ("locked", "busy", "could not obtain lock", "lock timeout", "deadlock", "could not serialize")
    return any(word in str(error.orig).lower() for word in words)


def database_full(error: sa.exc.DBAPIError) -> bool:
    """Whether the database could not write for want of disk space (SQLite's SQLITE_FULL,
    PostgreSQL's disk_full): the statement's transaction was rolled back, nothing of it written."""
    if getattr(error.orig, "sqlstate", None) == "53100":
        return True
    return any(words in str(error.orig).lower() for words in ("database or disk is full", "no space left on device"))


DATABASE_BUSY = "系统繁忙（数据库被其他操作占用），未做任何更改，请稍后重试"
DATABASE_FULL = "磁盘空间不足，数据库无法写入，未做任何更改：请管理员清理磁盘后重试"


def database_error(error: sa.exc.DBAPIError, *, detail: bool = True) -> str:
    """What a log says of a database error: the driver's error class and (with `detail`) the
    first line of its message ("database is locked", "deadlock detected"), never the statement's
    parameters nor the lines of detail that may quote a row's values."""
    orig = error.orig
    first = str(orig).strip().splitlines()[0][:200] if detail and str(orig).strip() else ""
    return f"{type(orig).__module__}.{type(orig).__name__}" + (f": {first}" if first else "")


_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def not_text(value: str) -> bool:
    """A NUL, or a lone surrogate (bytes that were not UTF-8): neither belongs in any input.
    One regular-expression scan (found by a fuzzing round: the loop over characters took 1.8 s of
    CPU on a 16 MB field, which any visitor can post before logging in; this takes 0.12 s)."""
    return _NOT_TEXT.search(value) is not None


class DatabaseId(IntegerConverter):
    """`<int:…>` in a route: an id the database can hold (a signed 64-bit integer), else no route matches."""

    largest = MAX_ID

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:  # noqa: A002 - werkzeug's name
        kwargs.setdefault("max", self.largest)
        super().__init__(map, *args, **kwargs)


class SmallDatabaseId(DatabaseId):
    """`<id32:…>`: the id of a table whose ids are PostgreSQL `integer`s (receipts, notifications,
    API keys …): a larger one is no such row (404), not a value the database refuses (400)."""

    largest = MAX_INT_ID


def create_app(config: Config | dict[str, Any] | None = None) -> Flask:
    if not isinstance(config, Config):
        config = Config(**(config or {}))
    app = Flask(__name__, instance_path=str(config.INSTANCE_PATH), instance_relative_config=False)
    app.config.from_mapping(config.as_mapping())
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _secret_key(config.INSTANCE_PATH)
    if hops := int(
        app.config.get("PROXY_HOPS") or 0
    ):  # behind that many reverse proxies: the client's address and scheme are theirs to say
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    # A failed statement's parameters stay out of its error, and so out of the log (found by a
    # review: a locked database logged the new password's hash, a message's text, a session
    # nonce); options set explicitly in the configuration are kept, and win.
    engine_options = {"hide_parameters": True, **app.config["SQLALCHEMY_ENGINE_OPTIONS"]}
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        engine_options = {"connect_args": {"timeout": 30}, **engine_options}
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options

    from backoffice.services.messaging import SendingSettings

    SendingSettings.from_config(app.config)  # a setting that cannot work stops the start, not every request
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS), render_as_batch=True)
    login_manager.init_app(app)
    csrf.init_app(app)

    app.url_map.converters["int"] = DatabaseId  # before the routes: /messages/99999999999999999999 is a 404, not a 500
    app.url_map.converters["id32"] = SmallDatabaseId
    from backoffice import admin, api, auth, finance, portal, portal_sending, sales  # noqa: F401 (portal_sending adds portal pages)
    from backoffice.cli import register_cli

    app.register_blueprint(auth.bp)
    app.register_blueprint(sales.bp)
    app.register_blueprint(portal.bp)
    app.register_blueprint(finance.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(api.bp)
    register_cli(app)
    from backoffice.money import format_money, format_price

    app.jinja_env.filters["money"] = format_money  # 1750 -> 1750.00
    app.jinja_env.filters["price"] = format_price  # 1749.965 and 1500 as such, never 1.5E+3
    from backoffice import display

    display.register(app)  # actors, templates, deliveries in words: |actor, |template_title, |delivery

    from backoffice.services.receipts import size_text

    app.jinja_env.filters["size"] = size_text  # 5242880 -> 5 MB
    from backoffice.services.statements import MAX_STATEMENT_BYTES
    from reports.images import MAX_IMAGE_BYTES, size_limit_text

    # The upload forms name their files' limits and check them in the page (forms.js).
    app.jinja_env.globals.update(MAX_STATEMENT_BYTES=MAX_STATEMENT_BYTES, MAX_IMAGE_BYTES=MAX_IMAGE_BYTES)
    app.jinja_env.filters["image_size"] = size_limit_text  # 2000000 -> 2 MB, as the images' refusals say it
    _error_handlers(app)

    @app.after_request
    def _no_store(response: Response) -> Response:
        # Pages of a logged-in person (initial passwords, balances) and every API answer (balances,
        # statuses) stay out of shared caches. The API is checked first: it has no login session,
        # and loading one for each request is a cost the intake does not need.
        if request.blueprint == "api" or current_user.is_authenticated:
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.after_request
    def _not_framed_nor_sniffed(response: Response) -> Response:
        # No other site shows a page in a frame of its own (found by a review: a page with
        # one-click buttons that move money, framed invisibly, could be clicked through), and no
        # browser reads a download or an answer as another type than it says. The contract
        # preview is an iframe of the page's own (srcdoc), which neither header concerns. No
        # script-src here: the templates have inline scripts.
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.before_request
    def _text_inputs_only() -> Any:
        # NUL (PostgreSQL refuses it in text: a 500 wherever it reached a query, even the login)
        # and lone surrogates (not encodable) in the path, the query string or a form: refused here.
        values = [*(request.view_args or {}).values(), *request.args.values(), *request.args.keys()]
        if request.method == "POST" and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            values += [*request.form.values(), *request.form.keys()]
        if any(isinstance(v, str) and not_text(v) for v in values):
            message = "输入含有无效的控制字符或编码，未做任何更改"
            if _wants_json():
                return jsonify(error={"code": "invalid", "message": message}), 400
            return render_template("error.html", status=400, message=message), 400
        return None

    @app.before_request
    def _count_commits_from_here() -> None:
        g.commits_at_start = commits(db.session)  # (an app context, so its session, may serve several requests)

    @app.teardown_request
    def _forget_user(_error: BaseException | None) -> None:
        # Flask-Login keeps the request's user in `g`, which lives as long as the app context: a
        # context shared by several requests (tests, scripts) must load each request's user anew.
        g.pop("_login_user", None)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        from backoffice.clock import to_local

        return {"to_local": to_local}

    return app


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and a busy timeout: concurrent writers wait instead of failing (see NOTES.md)."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


@event.listens_for(Engine, "do_connect")
def _sqlite_folder(dialect: Any, _record: Any, cargs: tuple, _cparams: dict) -> None:
    """The embedded database's folder (the instance) is made on first connection, so `flask db
    upgrade` works on a fresh BACKOFFICE_INSTANCE_PATH without the factory touching the disk."""
    if dialect.name == "sqlite" and cargs and cargs[0] not in (":memory:", ""):
        Path(str(cargs[0]).removeprefix("file:")).parent.mkdir(parents=True, exist_ok=True)


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain(error: DomainError) -> Any:
        db.session.rollback()
        if _wants_json():
            return jsonify(error={"code": error.code, "message": error.message}), error.status
        return render_template("error.html", status=error.status, message=error.message), error.status

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Any:
        messages = {
            400: "请求无效（表单可能已过期，请刷新后重试）",
            403: "没有权限",
            404: "页面不存在",
            405: "不支持的请求方法",
            # A download resumed from a wrong place, or a condition a cached copy set (found by
            # fuzzing: werkzeug's English sentence was the page).
            412: "文件已更改，请重新下载整个文件",
            416: "请求的下载范围无效，请重新下载整个文件",
        }
        # No other page is in English either: werkzeug's own descriptions are.
        message = messages.get(error.code or 500, f"请求无法处理（HTTP {error.code}）")
        back = None
        if error.code == 413:
            # Found by exploratory tests: a bare "上传的文件过大", no limit, and the API told of a "file".
            from backoffice.services.receipts import size_text
            from backoffice.services.statements import MAX_STATEMENT_BYTES

            total = size_text(app.config["MAX_CONTENT_LENGTH"])
            length = request.content_length
            if length is not None and length <= app.config["MAX_CONTENT_LENGTH"]:
                # Not the size: werkzeug's limit on the number of a form's fields (found by
                # fuzzing: 1,200 fields in 20 KB were told 上传的文件过大).
                message = f"表单的字段过多（最多 {request.max_form_parts} 个），未做任何更改"
            elif request.path.startswith("/api/"):
                message = f"请求体过大：最多 {total}，本次未做任何处理"
            elif request.path.startswith(("/finance", "/portal/receipts")):  # vouchers and statements
                message = (
                    f"上传的文件过大：汇款凭证最大 {size_text(app.config['VOUCHER_MAX_BYTES'])}，对账单最大 "
                    f"{size_text(MAX_STATEMENT_BYTES)}（一次提交最多 {total}）。"
                    "未保存任何内容：请返回上一页，换用较小的文件后重新填写并提交"
                )
            elif request.path == "/portal/send":  # the page checks the size first; this is for a browser without scripts
                message = (
                    f"上传的文件过大：一次提交最多 {total}（收件人文件连同表单）。本次未发送，也未扣费。"
                    "请用浏览器的“后退”按钮返回上一页：您填写的号码、短信内容和定时时间都还在，换用较小的文件（或分几次上传）后再提交"
                )
            else:  # a recipients' file, a signature, a seal (a review: they were told of vouchers)
                message = f"上传的文件过大：一次提交最多 {total}。未保存任何内容：请返回上一页，换用较小的文件后重新提交"
            # Back to what was typed, not to the home page (found by a customer: the page offered
            # only 返回首页, and the form came back empty): the browser's history keeps the fields.
            referrer = request.referrer or ""
            back = referrer if referrer.startswith(request.host_url) else request.path
        if _wants_json():
            response = jsonify(error={"code": error.name.lower().replace(" ", "_"), "message": message})
        else:
            response = app.make_response(render_template("error.html", status=error.code, message=message, back=back))
        response.status_code = error.code or 500
        # The headers the error carries (a 405's Allow, a 416's Content-Range): found by fuzzing
        # the API, a 405 said no method was allowed (RFC 9110 requires Allow).
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(sa.exc.DataError)
    def _out_of_range(error: sa.exc.DataError) -> Any:
        # A value the database refuses as data (a number past its column's range, a text longer
        # than its column) that no check caught first: the request is refused, nothing written.
        db.session.rollback()
        app.logger.warning("value refused by the database: %s", database_error(error, detail=False))
        message = "输入的值超出允许的范围或长度，未做任何更改"
        if _wants_json():
            return jsonify(error={"code": "invalid", "message": message}), 400
        return render_template("error.html", status=400, message=message), 400

    @app.errorhandler(sa.exc.OperationalError)
    def _database_unavailable(error: sa.exc.OperationalError) -> Any:
        # Busy (SQLite's lock, a PostgreSQL lock timeout or deadlock): nothing was written, and
        # the user is told to try again, not shown a "系统内部错误" (found by a review: a locked
        # database during a password change). Out of reach (the server restarting): the
        # connection may have gone while the commit was on its way, so whether it was written
        # is not known, and the user is told to look before doing it again.
        try:
            db.session.rollback()
        except sa.exc.SQLAlchemyError:  # a connection gone: the pool drops it
            db.session.remove()
        busy, full = database_busy(error), database_full(error)
        if busy:
            app.logger.warning("database busy: %s", database_error(error))
            message = DATABASE_BUSY
        elif full:  # was "数据库暂时无法使用": the administrator is told what to mend
            app.logger.error("database cannot write, its disk is full: %s", database_error(error))
            message = DATABASE_FULL
        else:
            app.logger.error("database unavailable: %s", database_error(error), exc_info=error)
            message = "数据库暂时无法使用，本次操作可能未完成：请稍后刷新页面，核对结果后再决定是否重试"
        if _wants_json():
            response = jsonify(error={"code": "busy" if busy else "storage" if full else "unavailable", "message": message})
        else:
            response = app.make_response(render_template("error.html", status=503, message=message))
        response.status_code = 503
        response.headers["Retry-After"] = "1" if busy else "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        db.session.rollback()
        app.logger.exception("unhandled error")
        if _wants_json():
            return jsonify(error={"code": "internal", "message": "系统内部错误"}), 500
        return render_template("error.html", status=500, message="系统内部错误，请稍后重试或联系管理员"), 500

    @app.errorhandler(OSError)
    def _storage(error: OSError) -> Any:
        # The disk full, read-only or not writable: a 503 naming it, not "系统内部错误" (found by
        # a review), saying whether this request had committed anything before it failed.
        refusal = storage_refusal(error, changed=commits(db.session) > g.get("commits_at_start", 0))
        if refusal is None:
            return _unexpected(error)
        db.session.rollback()
        app.logger.error("the disk refused: %s", error)
        if _wants_json():
            return jsonify(error={"code": refusal.code, "message": refusal.message}), refusal.status
        return render_template("error.html", status=refusal.status, message=refusal.message), refusal.status
