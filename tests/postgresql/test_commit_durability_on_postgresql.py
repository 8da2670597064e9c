"""How durably intake and the dispatcher commit on PostgreSQL: `synchronous_commit` off for
their own transactions by default (the trade SQLite's intake and worker make), configurable,
and nothing else affected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice import api, create_app
from backoffice.config import ConfigError
from backoffice.extensions import db
from backoffice.services.dispatcher import Dispatcher, DispatchSettings
from dispatch.smpp_link import LinkConfig
from tests.backoffice.test_api import api_key, auth
from tests.backoffice.test_messaging import SIGNED, active_sender
from tests.conftest import app_config

SHOW = sa.text("SHOW synchronous_commit")


@pytest.mark.parametrize(("setting", "inside"), [(None, "off"), ("on", "on"), ("", "on")])
def test_the_intake_transaction_alone_commits_without_waiting_for_the_disk(
    app: Flask, monkeypatch: pytest.MonkeyPatch, setting: str | None, inside: str
) -> None:
    if setting is not None:
        app.config["INTAKE_PG_SYNCHRONOUS_COMMIT"] = setting
    secret = api_key(active_sender(app))
    seen: list[str] = []
    accept = api.accept_request

    def watching(*args: Any, **kwargs: Any) -> Any:
        seen.append(db.session.execute(SHOW).scalar_one())
        return accept(*args, **kwargs)

    monkeypatch.setattr(api, "accept_request", watching)
    client = app.test_client()
    response = client.post("/api/v1/messages", json={"to": "13800138000", "content": SIGNED}, headers=auth(secret))
    assert response.status_code == 202 and seen == [inside]
    with db.engine.connect() as connection:  # the pool's connections are back to the server's setting
        assert {connection.execute(SHOW).scalar_one() for _ in range(3)} == {"on"}
    assert client.get("/api/v1/balance", headers=auth(secret)).status_code == 200


@pytest.mark.parametrize(("level", "expected"), [("off", "off"), (None, "on"), ("local", "local")])
def test_the_dispatchers_connections_commit_at_the_configured_level(app: Flask, level: str | None, expected: str) -> None:
    dispatcher = Dispatcher(app, LinkConfig(port=1), "durability", settings=DispatchSettings(pg_synchronous_commit=level))
    try:
        assert dispatcher._session.execute(SHOW).scalar_one() == expected
        dispatcher._session.rollback()
    finally:
        dispatcher.close()
    with db.engine.connect() as connection:  # the web's engine is not touched
        assert connection.execute(SHOW).scalar_one() == "on"


def test_a_level_postgresql_does_not_know_stops_the_start(tmp_path: Path, signing_files: tuple, postgresql_url: str) -> None:
    config = app_config(tmp_path / "instance", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url, INTAKE_PG_SYNCHRONOUS_COMMIT="fast")
    with pytest.raises(ConfigError, match="INTAKE_PG_SYNCHRONOUS_COMMIT='fast'：PostgreSQL 没有 synchronous_commit 级别 'fast'"):
        create_app(config)
    with pytest.raises(ValueError, match="没有 synchronous_commit 级别 'maybe'"):
        DispatchSettings.from_config({"DISPATCH_PG_SYNCHRONOUS_COMMIT": "maybe"})


def test_the_levels_come_from_the_environment_and_the_urls_own_options_stay(
    tmp_path: Path, signing_files: tuple, postgresql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the two settings were documented as environment variables but never
    read from it; and the worker's engine replaced the libpq options a DATABASE_URL carries."""
    from backoffice.config import Config

    monkeypatch.setenv("DISPATCH_PG_SYNCHRONOUS_COMMIT", "local")
    monkeypatch.setenv("INTAKE_PG_SYNCHRONOUS_COMMIT", "on")
    config = Config()
    assert (config.DISPATCH_PG_SYNCHRONOUS_COMMIT, config.INTAKE_PG_SYNCHRONOUS_COMMIT) == ("local", "on")
    monkeypatch.setenv("INTAKE_PG_SYNCHRONOUS_COMMIT", "bogus")
    with pytest.raises(ConfigError, match="INTAKE_PG_SYNCHRONOUS_COMMIT='bogus'：只能是 on、off、local"):
        create_app(app_config(tmp_path / "bad", signing_files, SQLALCHEMY_DATABASE_URI=postgresql_url))
    monkeypatch.delenv("INTAKE_PG_SYNCHRONOUS_COMMIT")

    url = postgresql_url + "&options=-c%20application_name%3Dbackoffice-ops"
    app = create_app(app_config(tmp_path / "ok", signing_files, SQLALCHEMY_DATABASE_URI=url))
    settings = DispatchSettings.from_config(app.config)
    assert settings.pg_synchronous_commit == "local"
    dispatcher = Dispatcher(app, LinkConfig(port=1), "options", settings=settings)
    try:
        shown = dispatcher._session.execute(sa.text("SELECT current_setting('application_name'), current_setting('synchronous_commit')"))
        assert tuple(shown.one()) == ("backoffice-ops", "local")
        dispatcher._session.rollback()
    finally:
        dispatcher.close()
