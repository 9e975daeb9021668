"""Settings: defaults, normalisation, and one clear sentence naming a bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenkeep.config import is_loopback_url, load_settings
from tokenkeep.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TOKENKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TOKENKEEP_DATA_DIR", str(tmp_path))


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8400
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path / 'tokenkeep.db'}"
    assert settings.is_sqlite
    assert settings.allow_insecure_loopback is False
    assert settings.base_url == "http://127.0.0.1:8400"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKENKEEP_PORT", "abc"),
        ("TOKENKEEP_PORT", "70000"),
        ("TOKENKEEP_LOG_FORMAT", "xml"),
        ("TOKENKEEP_LOG_LEVEL", "chatty"),
        ("TOKENKEEP_DATABASE_URL", "mysql://db/x"),
        ("TOKENKEEP_ALLOW_INSECURE_LOOPBACK", "perhaps"),
        ("TOKENKEEP_MAX_BODY_BYTES", "10"),
        ("TOKENKEEP_EGRESS_ADDRESS", "not-an-ip"),
    ],
)
def test_invalid_setting_is_one_sentence_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{name} is invalid: ")
    assert message.endswith(".")
    assert "\n" not in message


def test_database_url_schemes_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEEP_DATABASE_URL", "postgresql://postgres@127.0.0.1/tk")
    assert load_settings().db_url == "postgresql+psycopg://postgres@127.0.0.1/tk"
    monkeypatch.setenv("TOKENKEEP_DATABASE_URL", "sqlite:////tmp/x.db")
    assert load_settings().db_url == "sqlite+aiosqlite:////tmp/x.db"


def test_case_insensitive_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEEP_LOG_LEVEL", "debug")
    monkeypatch.setenv("TOKENKEEP_LOG_FORMAT", "JSON")
    settings = load_settings()
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"


def test_secret_settings_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEEP_SECRET_KEY", "tk_supersecretvalue_123456")
    settings = load_settings()
    assert "supersecretvalue" not in repr(settings)
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "tk_supersecretvalue_123456"


def test_database_password_does_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEEP_DATABASE_URL", "postgresql://tk:dbpassw0rdvalue@db.internal/tk")
    settings = load_settings()
    assert "dbpassw0rdvalue" not in repr(settings)
    assert settings.db_url == "postgresql+psycopg://tk:dbpassw0rdvalue@db.internal/tk"


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8501", True),
        ("http://127.4.5.6", True),
        ("http://localhost:9000/x", True),
        ("http://[::1]:80", True),
        ("https://na1.my.salesforce.com", False),
        ("http://10.0.0.1", False),
        ("http://127.0.0.1.evil.example", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
