"""Settings come from the environment once, with errors that name the bad variable."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from core.settings import KekProviderName, LogFormat, Settings, SettingsError


def test_defaults_use_the_var_data_directory() -> None:
    """With nothing set: ./var, SQLite inside it, embedded Redis, local KEK."""
    settings = Settings.from_env({})
    assert settings.data_dir == Path("var")
    assert (
        settings.effective_database_url == f"sqlite+aiosqlite:///{Path('var').resolve()}/metrux.db"
    )
    assert settings.redis_url is None
    assert settings.kek_provider is KekProviderName.LOCAL
    assert settings.upstream_url == "https://api.anthropic.com"
    assert settings.log_format is LogFormat.AUTO


def test_values_are_parsed() -> None:
    """Every documented variable is read and normalised."""
    kek = os.urandom(32)
    settings = Settings.from_env(
        {
            "METRUX_DATA_DIR": "/srv/metrux",
            "DATABASE_URL": "postgresql://app@db:5432/metrux",
            "REDIS_URL": "redis://cache:6379/1",
            "KEY_ENCRYPTION_KEY": base64.b64encode(kek).decode(),
            "METRUX_UPSTREAM_URL": "http://127.0.0.1:9999/",
            "METRUX_LOG_LEVEL": "WARNING",
            "METRUX_LOG_FORMAT": "console",
        }
    )
    assert settings.data_dir == Path("/srv/metrux")
    assert settings.effective_database_url == "postgresql+asyncpg://app@db:5432/metrux"
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.key_encryption_key == kek
    assert settings.upstream_url == "http://127.0.0.1:9999"
    assert settings.log_level == "warning"
    assert settings.log_format is LogFormat.CONSOLE


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://x@y/z"),
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "postgresql+psycopg2://x@y/z"),
        ("REDIS_URL", "http://cache"),
        ("METRUX_KEK_PROVIDER", "vault"),
        ("KEY_ENCRYPTION_KEY", "too-short"),
        ("KEY_ENCRYPTION_KEY", base64.b64encode(b"x" * 16).decode()),
        ("METRUX_UPSTREAM_URL", "ftp://api.anthropic.com"),
        ("METRUX_LOG_LEVEL", "loud"),
        ("METRUX_LOG_FORMAT", "xml"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str) -> None:
    """A bad value raises SettingsError whose message starts with the variable's name."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_kek_errors_never_echo_the_value() -> None:
    """The key-encryption key is secret: a malformed one is described, not repeated."""
    value = base64.b64encode(b"s3cr3t-material!").decode()
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"KEY_ENCRYPTION_KEY": value})
    assert value not in str(caught.value)


def test_aws_kms_needs_a_key_id() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"METRUX_KEK_PROVIDER": "aws-kms"})
    assert caught.value.variable == "METRUX_KMS_KEY_ID"


def test_secrets_stay_out_of_repr() -> None:
    """A logged Settings object does not carry the KEK or API keys."""
    kek = os.urandom(32)
    settings = Settings(key_encryption_key=kek, resend_api_key="re_secret_value")
    assert repr(kek) not in repr(settings)
    assert "re_secret_value" not in repr(settings)
