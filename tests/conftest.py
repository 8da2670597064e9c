"""Shared fixtures: a fresh app, database and instance folder per test, a fixed clock, a
session-wide signing identity (key generation is the slow part), and contract factories."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from backoffice import create_app
from backoffice.clock import set_clock
from backoffice.extensions import db

FIXED_NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


@pytest.fixture(scope="session")
def signing_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from reports.signing import ensure_signing_identity

    identity = ensure_signing_identity(tmp_path_factory.mktemp("keys"), common_name="测试签章", organization="Test Provider")
    return identity.key_path, identity.cert_path


# A contract's PDF (WeasyPrint, then the PAdES signature) and DOCX, by what they were made from.
_DOCUMENTS: dict[tuple[Any, ...], bytes] = {}
DOCUMENT_CACHE_STATS = {"rendered": 0, "reused": 0}


@pytest.fixture(autouse=True)
def contract_documents_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render each distinct contract document once in the session. A test's first contract is
    the same HTML test after test (a fresh database, the fixed clock), and rendering it cost ~0.6 s
    of each of the hundreds of tests that issue a contract only to have an account to work with.
    What a test gets is what the real renderer made of that very HTML; the tests of the documents
    themselves read it back (tests/backoffice/test_issue_contract.py). A test that replaces a
    renderer (to make it fail) replaces this too."""
    from backoffice.services import documents

    real_pdf, real_docx = documents.render_contract_pdf, documents.render_contract_docx

    def once(key: tuple[Any, ...], render: Callable[[], bytes]) -> bytes:
        if key in _DOCUMENTS:
            DOCUMENT_CACHE_STATS["reused"] += 1
        else:
            if len(_DOCUMENTS) >= 256:
                _DOCUMENTS.clear()
            _DOCUMENTS[key] = render()
            DOCUMENT_CACHE_STATS["rendered"] += 1
        return _DOCUMENTS[key]

    def files(*paths: Path) -> tuple[tuple[str, int, int], ...]:
        """What the renderer may read besides the HTML (the templates' folder: CSS, fonts,
        images; the signing key and certificate), by name, size and time: a change renders anew."""
        found = []
        for path in paths:
            for item in [path] if path.is_file() else sorted(path.rglob("*")):
                if item.is_file():
                    stat = item.stat()
                    found.append((str(item), stat.st_size, stat.st_mtime_ns))
        return tuple(found)

    def pdf(template: Any, html: str, *, title: str, identity: Any, location: str) -> bytes:
        signer = files(identity.key_path, identity.cert_path) if identity is not None else ()
        key = ("pdf", template.id, hashlib.sha256(html.encode()).digest(), title, location, files(template.folder.parent), signer)
        return once(key, lambda: real_pdf(template, html, title=title, identity=identity, location=location))

    def docx(template: Any, html: str, *, header: str) -> bytes:
        key = ("docx", template.id, hashlib.sha256(html.encode()).digest(), header, repr(sorted(template.docx.items())))
        return once(key, lambda: real_docx(template, html, header=header))

    monkeypatch.setattr(documents, "render_contract_pdf", pdf)
    monkeypatch.setattr(documents, "render_contract_docx", docx)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at a sixteenth of production's cost (N=1024, not 16384: ~2 ms, not ~37 ms a hash):
    every contract opens logins and every web test logs staff in, a few thousand hashes a run.
    The stored format, the check and the timing-safe path are the same; production's cost is
    tested apart (test_invariants)."""
    from backoffice.services import accounts

    monkeypatch.setattr(accounts, "PASSWORD_HASH", "scrypt:1024:8:1")


@pytest.fixture(autouse=True)
def fixed_clock() -> Iterator[None]:
    set_clock(lambda: FIXED_NOW)
    yield
    set_clock(None)


def app_config(instance: Path, signing_files: tuple[Path, Path], **extra: Any) -> dict[str, Any]:
    return {
        "INSTANCE_PATH": instance,
        "LEDGER_PATH": instance / "ledger",
        "DOCUMENTS_PATH": instance / "documents",
        "KEYS_PATH": instance / "keys",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'test.sqlite3'}",
        "SECRET_KEY": "test-secret",
        "WTF_CSRF_ENABLED": False,
        "SIGNING_KEY_FILE": str(signing_files[0]),
        "SIGNING_CERT_FILE": str(signing_files[1]),
        "TESTING": True,
        **extra,
    }


@pytest.fixture
def app(tmp_path: Path, signing_files: tuple[Path, Path]) -> Iterator[Flask]:
    yield from app_for_a_test(tmp_path / "instance", signing_files)


def app_for_a_test(instance: Path, signing_files: tuple[Path, Path], **extra: Any) -> Iterator[Flask]:
    """The `app` fixtures' body: an app on a fresh instance (and, with `extra`, another
    database), its schema made, in an app context; afterwards the books checked."""
    instance.mkdir()
    app = create_app(app_config(instance, signing_files, **extra))
    with app.app_context():
        db.create_all()
        yield app
        # Every test that moved money leaves books that pass beancount's checker and reconcile.
        from backoffice.services.bookkeeping import check_and_reconcile

        db.session.rollback()
        if (instance / "ledger" / "main.beancount").exists():
            report = check_and_reconcile(db.session, instance / "ledger")
            assert report.ok, f"books not in step after the test: {report}"
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def staff(app: Flask) -> dict[str, str]:
    """One user per role; returns username -> password."""
    from backoffice.services.staff import create_staff_user

    users = {"sales": "sales-pass-1", "finance": "finance-pass-1", "admin": "admin-pass-1"}
    for role, password in users.items():
        create_staff_user(db.session, role, role, password, role, actor="test")
    db.session.commit()
    return users


def login(client: FlaskClient, username: str, password: str, *, portal: bool = False) -> Any:
    return client.post("/portal/login" if portal else "/login", data={"username": username, "password": password})


def customer_login(client: FlaskClient, username: str, password: str) -> Any:
    """A customer's login past its first one: its initial password already changed (a first
    login is sent to the password page before anything else)."""
    from backoffice.models import SubAccount

    sub = db.session.scalar(sa.select(SubAccount).where(SubAccount.login == username))
    assert sub is not None
    sub.must_change_password = False
    db.session.commit()
    return login(client, username, password, portal=True)


def sample(template_id: str, **overrides: Any) -> dict[str, Any]:
    """The template's sample data (nested), with dotted-key overrides; None removes a field."""
    from backoffice.services.contract_fields import flatten, nest
    from backoffice.services.templates import get_template

    flat = flatten(copy.deepcopy(get_template(template_id).sample))
    for key, value in overrides.items():
        key = key.replace("__", ".")
        if value is None:
            flat.pop(key, None)
        else:
            flat[key] = value
    return nest(flat)


def make_contract(app: Flask, template_id: str = "sms_business_service", **overrides: Any) -> Any:
    """Issue a contract through the service, commit, post the books: an IssuedContract."""
    from backoffice.cli import after_commit_catch_up, signing_identity
    from backoffice.services.contracts import issue_contract

    data = sample(template_id, **overrides)
    if data.get("service_code") and "service_code" not in overrides:  # a live account's code is not given twice
        data["service_code"] = free_service_code(data["service_code"])
    issued = issue_contract(
        db.session,
        template_id,
        data,
        issued_by="test",
        documents_root=Path(app.config["DOCUMENTS_PATH"]),
        signing_identity=signing_identity(app),
    )
    db.session.commit()
    assert after_commit_catch_up(app) == []
    return issued


def free_service_code(code: str) -> str:
    """`code` (the template's sample), or the next number of its length no live account's code
    equals or nests with: the tests' second contract of a template gets a code of its own."""
    from backoffice.services.contracts import service_code_clash

    while service_code_clash(db.session, code):
        code = str(int(code) + 1).zfill(len(code))
    return code


def drop_send_log_guard() -> None:
    """Drop the triggers that keep the send log append-only, as only the database's owner could:
    for tests of what the hash chain still reveals when the database did not stop a change."""
    from sqlalchemy import text

    from backoffice.models.messaging import SEND_LOG_HEAD_UNGUARD, SEND_LOG_UNGUARD

    for statement in SEND_LOG_UNGUARD[db.engine.dialect.name] + SEND_LOG_HEAD_UNGUARD[db.engine.dialect.name]:
        db.session.execute(text(statement))


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


TEMPLATE_IDS = [
    "enterprise_sms_center",
    "gateway_api_partner",
    "lingxuntong_service",
    "sms_genie_user",
    "sms_business_service",
]


@pytest.fixture
def smsc() -> Iterator[Callable[..., Any]]:
    """Start built-in SMSC simulators on loopback (receipts at once unless a test says otherwise);
    every one started is stopped after the test."""
    from dispatch.simulator import SimulatorConfig, SMSCSimulator

    started: list[SMSCSimulator] = []

    def start(**config: Any) -> SMSCSimulator:
        simulator = SMSCSimulator(SimulatorConfig(**{"receipt_delay": 0.0, **config})).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if DOCUMENT_CACHE_STATS["rendered"]:
        terminalreporter.write_line(
            f"contract documents: {DOCUMENT_CACHE_STATS['rendered']} rendered, {DOCUMENT_CACHE_STATS['reused']} reused"
        )
