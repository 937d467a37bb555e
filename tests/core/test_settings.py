"""Settings come from the environment once, with errors that name the bad variable."""

from __future__ import annotations

import base64
import dataclasses
import os
from pathlib import Path

import pytest

from core.settings import KekProviderName, LogFormat, Settings, SettingsError, render_markdown


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


def test_the_readme_settings_table_is_rendered_from_the_declarations() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("<!-- settings: generated from core/settings.py")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- end of settings -->", start)
    assert readme[start:end] == render_markdown(), (
        "run `python -m core.settings` and paste its table into README.md"
    )


def test_console_sign_in_through_the_provider_needs_its_companions() -> None:
    with pytest.raises(SettingsError, match="METRUX_OIDC_TOKEN_URL"):
        Settings.from_env({"METRUX_OIDC_AUTHORIZE_URL": "https://idp.example/authorize"})


def test_every_setting_is_read_from_its_variable() -> None:
    """Each declared row is parsed from its own variable: one set to a distinct valid value
    changes exactly that field."""
    samples = {
        "METRUX_DATA_DIR": "elsewhere",
        "DATABASE_URL": "postgresql://u@h/db",
        "REDIS_URL": "redis://h:1/0",
        "METRUX_KEK_PROVIDER": "aws-kms",
        "KEY_ENCRYPTION_KEY": base64.b64encode(bytes(range(32))).decode(),
        "METRUX_KMS_KEY_ID": "alias/x",
        "METRUX_KMS_REGION": "eu-west-1",
        "METRUX_KMS_ENDPOINT_URL": "http://kms.local:4566",
        "KEY_ENCRYPTION_KEY_PREVIOUS": base64.b64encode(bytes(32)).decode(),
        "METRUX_UPSTREAM_URL": "http://up.local:9",
        "SENTRY_DSN": "https://k@sentry.local/1",
        "RESEND_API_KEY": "re_test",
        "METRUX_LOG_LEVEL": "debug",
        "METRUX_LOG_FORMAT": "json",
        "METRUX_REDIS_PREFIX": "other:",
        "METRUX_BOOTSTRAP_TOKEN": "mxb_test",
        "METRUX_PROXY_MAX_BODY_BYTES": "1024",
        "METRUX_PROXY_RATE_PER_S": "3",
        "METRUX_PROXY_BURST": "4",
        "METRUX_PROXY_CONTROL_GRACE_S": "5",
        "METRUX_PUBLIC_URL": "https://metrux.example",
        "METRUX_RESEND_URL": "https://mail.example",
        "METRUX_EMAIL_FROM": "X <x@example.com>",
        "METRUX_PRICES_FILE": "prices.json",
        "METRUX_RATE_LIMITS": "token=1/1",
        "METRUX_TRUSTED_PROXIES": "10.0.0.1",
        "METRUX_BLOCK_ALLOWLIST": "10.0.0.2",
        "METRUX_BLOCK_AFTER": "2",
        "METRUX_BLOCK_TARGET_AFTER": "3",
        "METRUX_BLOCK_WINDOW_S": "4",
        "METRUX_BLOCK_FOR_S": "5",
        "METRUX_BLOCK_MAX_S": "6",
        "METRUX_OIDC_JWKS_URL": "https://idp.example/jwks",
        "METRUX_OIDC_ISSUER": "https://idp.example",
        "METRUX_OIDC_AUDIENCE": "metrux",
        "METRUX_OIDC_ALGORITHMS": "ES256",
        "METRUX_MEMBER_SESSION_HOURS": "2",
        "METRUX_READY_MAX_BACKLOG_S": "30",
        "METRUX_KEY_CHECK_TIMEOUT_S": "9",
        "METRUX_METRICS_TOKEN": "m" * 32,
        "METRUX_AUDIT_RETENTION_DAYS": "400",
        "METRUX_AUDIT_ARCHIVE_URL": "s3://audit-bucket/metrux",
        "METRUX_AUDIT_ARCHIVE_ENDPOINT_URL": "http://s3.local:9000",
        "METRUX_OIDC_AUTHORIZE_URL": "https://idp.example/authorize",
        "METRUX_OIDC_TOKEN_URL": "https://idp.example/token",
        "METRUX_OIDC_CLIENT_ID": "metrux-console",
    }
    fields = dataclasses.fields(Settings)
    assert {f.metadata["variable"] for f in fields} == set(samples)
    # Companions a value needs to be valid (KMS needs a key id; a JWKS URL an issuer).
    needs = {
        "METRUX_KEK_PROVIDER": ("METRUX_KMS_KEY_ID",),
        "METRUX_OIDC_JWKS_URL": ("METRUX_OIDC_ISSUER",),
        "METRUX_OIDC_AUTHORIZE_URL": (
            "METRUX_OIDC_TOKEN_URL",
            "METRUX_OIDC_CLIENT_ID",
            "METRUX_OIDC_JWKS_URL",
            "METRUX_OIDC_ISSUER",
        ),
    }
    base = Settings()
    for field in fields:
        variable = field.metadata["variable"]
        environ = {variable: samples[variable]}
        for companion in needs.get(variable, ()):
            environ[companion] = samples[companion]
        parsed = Settings.from_env(environ)
        changed = {f.name for f in fields if getattr(parsed, f.name) != getattr(base, f.name)}
        assert field.name in changed, variable
        assert changed <= {field.name} | {
            f.name for f in fields if f.metadata["variable"] in environ
        }, variable
