"""Settings from the environment (found by a review of what an operator sets): a value that
cannot work stops the process with its name and what it should be, not a traceback; an empty
one is the default; every process of one host shares one session key."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backoffice import _secret_key
from backoffice.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SMTP_PORT", "abc", "1 到 65535 之间的整数"),
        ("SMSC_PORT", "99999", "1 到 65535 之间的整数"),  # a socket would have taken it as 34463
        ("FOUR_EYES_THRESHOLD", "50,000.00", "不带千位分隔符"),
        ("LEDGER_BALANCE_ASSERTIONS", "fortnightly", "daily、weekly、monthly"),
        ("SMTP_SECURITY", "tls", "ssl、starttls、none"),
        ("RECEIVING_BANK", "招商银行", "银行代码"),
        ("DISPATCH_WINDOW", "0", "不小于 1 的整数"),
        ("SESSION_HOURS", "nan", "不小于 0 的数"),
        ("DISPATCH_TEMPORARY_STATUSES", "0x08,sysfail", "“sysfail” 不是 SMPP 错误码"),
        ("DISPATCH_TEMPORARY_STATUSES", "0x08,0", "是 ESME_ROK"),
        ("DISPATCH_TEMPORARY_RETRY_MAX_SECONDS", "-60", "不小于 0 的数"),
        # Found by a review: these were read by the dispatcher alone (a worker restarting every
        # 5 s on a traceback for a wrong SQLite level) or not checked (a typo left cookies unsecured).
        ("SMSC_RECEIPT_ID_FORMAT", "hexadecimal", "auto、same、decimal、hex"),
        ("DISPATCH_SQLITE_SYNCHRONOUS", "normall", "off、normal、full、extra"),
        ("DISPATCH_PG_SYNCHRONOUS_COMMIT", "of", "on、off、local"),
        ("INTAKE_PG_SYNCHRONOUS_COMMIT", "always", "on、off、local"),
        ("SESSION_COOKIE_SECURE", "maybe", "1、true、yes、on、0、false"),
        # Notices from the shared address took the replies of a customer that texted the number there
        ("SMSC_NOTICE_SOURCE", "10690000", "SMSC_DEFAULT_SOURCE='10690000'"),
        ("SMSC_NOTICE_SOURCE", "1069000", "相同或互为开头部分"),
        ("SMSC_NOTICE_SOURCE", "106900001", "相同或互为开头部分"),
    ],
)
def test_a_setting_that_cannot_work_is_named_with_what_it_should_be(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        Config(INSTANCE_PATH=tmp_path)
    assert str(refused.value).startswith(f"{name}={value!r}") and fragment in str(refused.value)


def test_empty_settings_are_the_defaults_and_spellings_are_forgiven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SMTP_PORT", "SMSC_PORT", "FOUR_EYES_THRESHOLD", "DISPATCH_WINDOW", "SESSION_HOURS"):
        monkeypatch.setenv(name, "")  # as an EnvironmentFile writes an unset value
    monkeypatch.setenv("LEDGER_BALANCE_ASSERTIONS", "Weekly")
    monkeypatch.setenv("RECEIVING_BANK", "icbc")
    monkeypatch.setenv("DATABASE_URL", "postgres://sms@db/backoffice")
    monkeypatch.setenv("VOUCHER_MAX_BYTES", str(20 * 1024 * 1024))
    config = Config(INSTANCE_PATH=tmp_path)
    assert (config.SMTP_PORT, config.SMSC_PORT, str(config.FOUR_EYES_THRESHOLD), config.DISPATCH_WINDOW) == (25, 2775, "50000.00", 10)
    assert (config.LEDGER_BALANCE_ASSERTIONS, config.RECEIVING_BANK) == ("weekly", "ICBC")
    assert config.SQLALCHEMY_DATABASE_URI == "postgresql://sms@db/backoffice"  # SQLAlchemy refuses postgres://
    assert config.MAX_CONTENT_LENGTH > 20 * 1024 * 1024  # a voucher the setting allows is not refused as too large


def test_the_temporary_smsc_statuses_read_as_hex_decimal_or_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dispatch.smpp_link import ESME_RMSGQFUL, ESME_RSYSERR, ESME_RX_T_APPN

    def statuses() -> frozenset[int]:
        found: frozenset[int] = Config(INSTANCE_PATH=tmp_path).DISPATCH_TEMPORARY_STATUSES
        return found

    assert statuses() == {ESME_RSYSERR, ESME_RMSGQFUL, ESME_RX_T_APPN}
    monkeypatch.setenv("DISPATCH_TEMPORARY_STATUSES", " 0x08, 20,ESME_RX_T_APPN , rsyserr")
    assert statuses() == {ESME_RSYSERR, ESME_RMSGQFUL, ESME_RX_T_APPN}
    monkeypatch.setenv("DISPATCH_TEMPORARY_STATUSES", "none")  # every error refunds, as before
    assert statuses() == set()


def test_a_process_with_a_bad_setting_says_which_and_shows_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "BACKOFFICE_INSTANCE_PATH": str(tmp_path), "SMTP_PORT": "25x"}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "配置有误：SMTP_PORT='25x'" in done.stderr and "Traceback" not in done.stderr


def test_processes_without_secret_key_share_the_one_the_first_made(tmp_path: Path) -> None:
    """Found by a review: each gunicorn worker without SECRET_KEY used a key of its own, and most
    logins failed (one worker's session cookie and CSRF token were refused by the other)."""
    keys: list[str] = []
    start = threading.Barrier(8)

    def take() -> None:
        start.wait()
        keys.append(_secret_key(tmp_path))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    stored = tmp_path / "secret_key"
    assert stored.read_text().strip() == keys[0] and stored.stat().st_mode & 0o777 == 0o600
    assert _secret_key(tmp_path) == keys[0]  # a restart keeps the sessions


def test_an_empty_stored_key_is_named_and_no_key_is_ever_read_half_written(tmp_path: Path) -> None:
    """A second review: the key file was created empty and then written, so a process that died
    in between left a file that stopped every start with a traceback. The key is now written to a
    file of its own and linked into place whole; an empty file (made by hand) is named."""
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(ConfigError, match="是空文件：删除它"):
        _secret_key(tmp_path)
    (tmp_path / "secret_key").unlink()
    key = _secret_key(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret_key"]  # no temporary file left
    assert (tmp_path / "secret_key").read_text().strip() == key


def test_gunicorn_stops_on_a_bad_setting_instead_of_booting_workers_for_ever(tmp_path: Path) -> None:
    """A second review: exit code 1 from a worker made gunicorn boot new ones for ever; 4 is its
    'the application failed to load', on which it stops."""
    env = {**os.environ, "BACKOFFICE_INSTANCE_PATH": str(tmp_path), "SMTP_PORT": "25x", "SECRET_KEY": "x"}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    done = subprocess.run(
        [str(gunicorn), "--bind", "127.0.0.1:0", "--workers", "1", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4 and "配置有误：SMTP_PORT='25x'" in done.stderr and done.stderr.count("Booting worker") == 1
