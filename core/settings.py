"""Settings: the one place that reads the process environment.

`Settings.from_env(os.environ)` parses and validates every variable once, at start-up; a bad
value raises `SettingsError` naming the variable (never echoing a secret's value). Everything
else receives a frozen `Settings` and never looks at `os.environ`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from core.ratelimit import Rate

DEFAULT_UPSTREAM_URL = "https://api.anthropic.com"

_E = TypeVar("_E", bound=StrEnum)


class SettingsError(ValueError):
    """A setting from the environment is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class KekProviderName(StrEnum):
    LOCAL = "local"
    AWS_KMS = "aws-kms"


class LogFormat(StrEnum):
    AUTO = "auto"  # JSON unless stderr is a terminal
    JSON = "json"
    CONSOLE = "console"


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RouteClass(StrEnum):
    """Control-plane routes are rate-limited by class (per client IP and per credential)."""

    TOKEN = "token"  # presents or trades a secret token: invites, attach, handoff, candidates
    WRITE = "write"  # member calls that change something
    READ = "read"  # member reads
    PROXY = "proxy"  # an attached proxy's usage records and signal stream


DEFAULT_RATE_LIMITS = {
    RouteClass.TOKEN: Rate(30, 60),
    RouteClass.WRITE: Rate(120, 60),
    RouteClass.READ: Rate(600, 60),
    # A proxy posts a batch at most every 50 ms and holds one signal stream.
    RouteClass.PROXY: Rate(3000, 60),
}


_UNSET: Any = object()


def parse_database_url(url: str) -> str:
    """Map a user-facing database URL to the async driver SQLAlchemy should use.

    `postgresql://…` and `postgres://…` become `postgresql+asyncpg://…`; `sqlite:///…` becomes
    `sqlite+aiosqlite:///…`. An explicit async driver is kept.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise SettingsError("DATABASE_URL", "must be a URL such as postgresql://user@host/db")
    dialect, _, driver = scheme.partition("+")
    if dialect in ("postgresql", "postgres"):
        if driver not in ("", "asyncpg"):
            raise SettingsError("DATABASE_URL", f"driver {driver!r} is not supported; use asyncpg")
        return f"postgresql+asyncpg://{rest}"
    if dialect == "sqlite":
        if driver not in ("", "aiosqlite"):
            raise SettingsError(
                "DATABASE_URL", f"driver {driver!r} is not supported; use aiosqlite"
            )
        return f"sqlite+aiosqlite://{rest}"
    raise SettingsError(
        "DATABASE_URL", f"unsupported database {dialect!r}; use postgresql or sqlite"
    )


def _url(variable: str, url: str, schemes: set[str]) -> str:
    """A URL with one of these schemes and a host, without a trailing slash."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SettingsError(variable, "is not a valid URL") from exc
    if parts.scheme not in schemes:
        raise SettingsError(variable, f"scheme must be one of {', '.join(sorted(schemes))}")
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(variable, "has no host")
    return url.rstrip("/")


def _choice(variable: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingsError(variable, f"must be one of {', '.join(choices)}")
    return value


def _redis_prefix(variable: str, value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9:_.-]{1,64}", value):
        raise SettingsError(variable, "use 1-64 of A-Z a-z 0-9 : _ . -")
    return value


def _parse_algorithms(variable: str, value: str) -> tuple[str, ...]:
    algorithms = tuple(a.strip() for a in value.split(",") if a.strip())
    if not algorithms or not set(algorithms) <= _SIGNING_ALGORITHMS:
        raise SettingsError(
            variable,
            f"use asymmetric algorithms among {', '.join(sorted(_SIGNING_ALGORITHMS))}",
        )
    return algorithms


def _enum(variable: str, value: str, enum: type[_E]) -> _E:
    try:
        return enum(value.lower())
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise SettingsError(variable, f"must be one of {choices}") from None


def _positive(variable: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(variable, "must be a whole number") from None
    if number <= 0:
        raise SettingsError(variable, "must be positive")
    return number


_SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _parse_rate_limits(variable: str, value: str) -> dict[RouteClass, Rate]:
    """'token=30/60,write=120/1m': classes not named keep their defaults."""
    limits = dict(DEFAULT_RATE_LIMITS)
    for part in value.split(","):
        if not part.strip():
            continue
        name, sep, rate = part.partition("=")
        try:
            route_class = RouteClass(name.strip().lower())
        except ValueError:
            choices = ", ".join(c.value for c in RouteClass)
            raise SettingsError(
                variable, f"unknown class {name.strip()!r}; use {choices}"
            ) from None
        try:
            limits[route_class] = Rate.parse(rate) if sep else Rate.parse("")
        except ValueError as exc:
            raise SettingsError(variable, str(exc)) from None
    return limits


def _parse_networks(variable: str, value: str) -> tuple[Network, ...]:
    networks = []
    for part in value.split(","):
        if not part.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise SettingsError(
                variable, f"{part.strip()!r} is not an IP address or CIDR"
            ) from None
    return tuple(networks)


def _parse_kek(variable: str, value: str) -> bytes:
    # The value is a secret: the error says what is wrong, never what it was.
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(value)
        except (binascii.Error, ValueError):
            raise SettingsError(variable, "must be 32 bytes, base64-encoded") from None
    if len(raw) != 32:
        raise SettingsError(variable, f"must decode to 32 bytes (got {len(raw)})")
    return raw


def _path(_variable: str, value: str) -> Path:
    return Path(value)


def _database_url(variable: str, value: str) -> str:
    parse_database_url(value)  # raises SettingsError naming DATABASE_URL
    return value


def _redis_url(variable: str, value: str) -> str:
    return _url(variable, value, {"redis", "rediss", "unix"})


def _http_url(variable: str, value: str) -> str:
    return _url(variable, value, {"http", "https"})


def _kek_provider(variable: str, value: str) -> KekProviderName:
    return _enum(variable, value, KekProviderName)


def _log_format(variable: str, value: str) -> LogFormat:
    return _enum(variable, value, LogFormat)


def _log_level(variable: str, value: str) -> str:
    return _choice(variable, value.lower(), LOG_LEVELS)


def _positive_float(variable: str, value: str) -> float:
    return float(_positive(variable, value))


def _metrics_token(variable: str, value: str) -> str:
    if len(value) < 32:
        raise SettingsError(variable, "use at least 32 random characters")
    return value


def _archive_url(variable: str, value: str) -> str:
    if value.startswith("s3://"):
        bucket = value.removeprefix("s3://").split("/", 1)[0]
        if not bucket:
            raise SettingsError(variable, "name the bucket: s3://bucket/prefix")
        return value
    if "://" in value:
        raise SettingsError(variable, "give s3://bucket/prefix or a directory path")
    return value


def _text(_variable: str, value: str) -> str:
    return value


def setting(
    variable: str,
    default: Any = _UNSET,
    parse: Callable[[str, str], Any] | None = None,
    *,
    help: str,
    shown: str | None = None,
    secret: bool = False,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """One row of the settings table: the environment variable, its default, how a value is
    parsed and checked (`parse(variable, text)` raises SettingsError), and the help the
    README's table shows (`shown` when the default reads better in words). A secret is
    kept out of repr."""
    metadata = {"variable": variable, "parse": parse or _text, "help": help, "shown": shown}
    if default_factory is not None:
        return dataclasses.field(
            default_factory=default_factory, repr=not secret, metadata=metadata
        )
    return dataclasses.field(default=default, repr=not secret, metadata=metadata)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, declared once: `from_env` reads them and `render_markdown` renders the
    README's table from the same declarations."""

    data_dir: Path = setting(
        "METRUX_DATA_DIR",
        Path("var"),
        _path,
        shown="`./var`",
        help="data directory: SQLite file, embedded Redis socket, local KEK file",
    )
    database_url: str | None = setting(
        "DATABASE_URL",
        None,
        _database_url,
        shown="SQLite in the data directory",
        help="`postgresql://user@host/db` (asyncpg) or `sqlite:///path`",
    )
    redis_url: str | None = setting(
        "REDIS_URL",
        None,
        _redis_url,
        shown="embedded server on `DATA_DIR/redis/redis.sock`",
        help="`redis://…`, `rediss://…` or `unix://…`",
    )
    kek_provider: KekProviderName = setting(
        "METRUX_KEK_PROVIDER",
        KekProviderName.LOCAL,
        _kek_provider,
        help="`local`, or `aws-kms` (install the `aws` extra: `pip install 'metrux[aws]'`)",
    )
    key_encryption_key: bytes | None = setting(
        "KEY_ENCRYPTION_KEY",
        None,
        _parse_kek,
        secret=True,
        shown="generated `DATA_DIR/kek.key` (0600, with a warning)",
        help="32 bytes, base64, for the `local` provider",
    )
    kms_key_id: str | None = setting(
        "METRUX_KMS_KEY_ID",
        None,
        help="KMS key id, ARN or alias (required with `aws-kms`)",
    )
    kms_region: str | None = setting(
        "METRUX_KMS_REGION",
        None,
        shown="the AWS SDK's (`AWS_REGION`, instance metadata)",
        help="region of KMS; credentials come from the AWS chain",
    )
    kms_endpoint_url: str | None = setting(
        "METRUX_KMS_ENDPOINT_URL",
        None,
        _http_url,
        shown="the AWS SDK's",
        help="a KMS-compatible endpoint: a VPC endpoint, or a local KMS for tests",
    )
    previous_key_encryption_key: bytes | None = setting(
        "KEY_ENCRYPTION_KEY_PREVIOUS",
        None,
        _parse_kek,
        secret=True,
        help="a previous local KEK, read but never used to wrap, while "
        "`metrux control rewrap` moves keys off it",
    )
    upstream_url: str = setting(
        "METRUX_UPSTREAM_URL",
        DEFAULT_UPSTREAM_URL,
        _http_url,
        help="where proxies send Claude calls",
    )
    key_check_timeout_s: float = setting(
        "METRUX_KEY_CHECK_TIMEOUT_S",
        5.0,
        _positive_float,
        shown="5",
        help="how long Anthropic has to answer the check of an uploaded key (or the key "
        "monitor's) before the key is stored `unverified` and checked again later",
    )
    sentry_dsn: str | None = setting(
        "SENTRY_DSN",
        None,
        secret=True,
        help="report errors to Sentry, scrubbed like log lines (install the `sentry` extra)",
    )
    resend_api_key: str | None = setting(
        "RESEND_API_KEY",
        None,
        secret=True,
        help="send invite emails through Resend's API; unset: `metrux control outbox`",
    )
    log_level: str = setting(
        "METRUX_LOG_LEVEL",
        "info",
        _log_level,
        help=", ".join(f"`{level}`" for level in LOG_LEVELS),
    )
    log_format: LogFormat = setting(
        "METRUX_LOG_FORMAT",
        LogFormat.AUTO,
        _log_format,
        help="`json`, `console`, or `auto` (console on a terminal, JSON otherwise)",
    )
    redis_prefix: str = setting(
        "METRUX_REDIS_PREFIX",
        "metrux:",
        _redis_prefix,
        help="prefix of every Redis key, channel and stream",
    )
    # The proxy's single-use attach credential; never from argv.
    bootstrap_token: str | None = setting(
        "METRUX_BOOTSTRAP_TOKEN",
        None,
        secret=True,
        help="the proxy's single-use attach token (or `--bootstrap-token-file`)",
    )
    proxy_max_body_bytes: int = setting(
        "METRUX_PROXY_MAX_BODY_BYTES",
        32 * 1024 * 1024,
        _positive,
        shown="33554432 (32 MiB)",
        help="larger request bodies get a 413 from the proxy",
    )
    proxy_rate_per_s: float = setting(
        "METRUX_PROXY_RATE_PER_S",
        10.0,
        _positive_float,
        shown="10",
        help="per-session request rate at the proxy: sustained calls per second",
    )
    proxy_burst: int = setting(
        "METRUX_PROXY_BURST",
        100,
        _positive,
        help="per-session request rate at the proxy: burst size",
    )
    proxy_control_grace_s: float = setting(
        "METRUX_PROXY_CONTROL_GRACE_S",
        60.0,
        _positive_float,
        shown="60",
        help="a proxy that cannot reach the control plane this long clears its key",
    )
    public_url: str = setting(
        "METRUX_PUBLIC_URL",
        "http://127.0.0.1:8700",
        _http_url,
        help="where candidates reach the control plane (invite links)",
    )
    resend_url: str = setting(
        "METRUX_RESEND_URL",
        "https://api.resend.com",
        _http_url,
        help="the email provider's base URL",
    )
    email_from: str = setting(
        "METRUX_EMAIL_FROM", "Metrux <invites@metrux.invalid>", help="the sender of emails"
    )
    prices_file: Path | None = setting(
        "METRUX_PRICES_FILE",
        None,
        _path,
        shown="the shipped `control/usage/prices.json`",
        help="price table (JSON, per million tokens) that turns usage into cost in reports",
    )
    # Guard layer (control/guard): rate limits per route class, trusted reverse proxies,
    # and when repeated failed credential checks block an address.
    rate_limits: Mapping[RouteClass, Rate] = setting(
        "METRUX_RATE_LIMITS", default_factory=lambda: dict(DEFAULT_RATE_LIMITS),
        parse=_parse_rate_limits,
        shown="`" + ",".join(f"{c.value}={r.count}/{r.period_s:g}"
                             for c, r in DEFAULT_RATE_LIMITS.items()) + "`",
        help="requests per period (seconds, or `1m`, `1h`) per client address and per "
        "credential, by route class ([security](docs/security.md)); classes not named keep "
        "their defaults",
    )  # fmt: skip
    trusted_proxies: tuple[Network, ...] = setting(
        "METRUX_TRUSTED_PROXIES",
        (),
        _parse_networks,
        shown="none",
        help="comma-separated addresses or CIDRs of reverse proxies whose `X-Forwarded-For` "
        "is believed",
    )
    block_allowlist: tuple[Network, ...] = setting(
        "METRUX_BLOCK_ALLOWLIST",
        (),
        _parse_networks,
        shown="none",
        help="addresses or CIDRs that are never blocked",
    )
    block_after: int = setting(
        "METRUX_BLOCK_AFTER",
        20,
        _positive,
        help="failed credential checks from one address within the window that block it",
    )
    block_target_after: int = setting(
        "METRUX_BLOCK_TARGET_AFTER",
        10,
        _positive,
        help="failed credential checks against one session within the window that block "
        "the address",
    )
    block_window_s: int = setting(
        "METRUX_BLOCK_WINDOW_S",
        600,
        _positive,
        help="the window those failures are counted in, in seconds",
    )
    block_for_s: int = setting(
        "METRUX_BLOCK_FOR_S",
        900,
        _positive,
        help="first block length in seconds, doubled per repeat offence up to the cap",
    )
    block_max_s: int = setting(
        "METRUX_BLOCK_MAX_S",
        7 * 24 * 3600,
        _positive,
        help="the cap on a block's length, in seconds",
    )
    # OIDC handoff (POST /v1/auth/handoff): None disables it.
    oidc_jwks_url: str | None = setting(
        "METRUX_OIDC_JWKS_URL",
        None,
        _http_url,
        shown="none (handoff off)",
        help="the identity provider's JWKS URL, for `POST /v1/auth/handoff` "
        "(Clerk: `https://<your-domain>/.well-known/jwks.json`)",
    )
    oidc_issuer: str | None = setting(
        "METRUX_OIDC_ISSUER",
        None,
        help="the identity provider's issuer (required with the JWKS URL)",
    )
    oidc_audience: str | None = setting(
        "METRUX_OIDC_AUDIENCE", None, shown="none (not checked)", help="expected `aud`"
    )
    oidc_algorithms: tuple[str, ...] = setting(
        "METRUX_OIDC_ALGORITHMS",
        ("RS256",),
        _parse_algorithms,
        shown="`RS256`",
        help="accepted signing algorithms, comma-separated (asymmetric only)",
    )
    # The console's sign-in through the identity provider (authorization code with PKCE).
    oidc_authorize_url: str | None = setting(
        "METRUX_OIDC_AUTHORIZE_URL",
        None,
        _http_url,
        shown="none (console sign-in by login link only)",
        help="the identity provider's authorization endpoint, for the console's sign-in "
        "(needs the token URL, client id, JWKS URL and issuer)",
    )
    oidc_token_url: str | None = setting(
        "METRUX_OIDC_TOKEN_URL", None, _http_url, help="the identity provider's token endpoint"
    )
    oidc_client_id: str | None = setting(
        "METRUX_OIDC_CLIENT_ID",
        None,
        help="the console's client id at the identity provider (a public client: PKCE, no secret)",
    )
    ready_max_backlog_s: int = setting(
        "METRUX_READY_MAX_BACKLOG_S",
        300,
        _positive,
        help="`/readyz` fails while the oldest usage record waiting to be stored is older "
        "than this, in seconds",
    )
    metrics_token: str | None = setting(
        "METRUX_METRICS_TOKEN",
        None,
        _metrics_token,
        secret=True,
        shown="unset: `/metrics` is off (404)",
        help="bearer token a scraper sends to `GET /metrics` (at least 32 characters)",
    )
    audit_retention_days: int = setting(
        "METRUX_AUDIT_RETENTION_DAYS",
        730,
        _positive,
        help="audit rows older than this are archived, then removed from the database (the "
        "database's own floor, 730 days at first, wins if it is longer: docs/audit.md)",
    )
    audit_archive_url: str | None = setting(
        "METRUX_AUDIT_ARCHIVE_URL",
        None,
        _archive_url,
        shown="`DATA_DIR/audit-archive`",
        help="where archived audit rows go: `s3://bucket/prefix` (install the `aws` extra) "
        "or a directory",
    )
    audit_archive_endpoint_url: str | None = setting(
        "METRUX_AUDIT_ARCHIVE_ENDPOINT_URL",
        None,
        _http_url,
        shown="AWS S3",
        help="an S3-compatible endpoint for the archive (MinIO, Ceph, a test server)",
    )
    member_session_hours: int = setting(
        "METRUX_MEMBER_SESSION_HOURS",
        12,
        _positive,
        help="lifetime of a member's browser session cookie",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise SettingsError on a bad value.
        An unset or blank variable takes its default."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            variable = field.metadata["variable"]
            raw = environ.get(variable, "").strip()
            if raw:
                values[field.name] = field.metadata["parse"](variable, raw)
        settings = cls(**values)
        _check_together(settings)
        return settings

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy async URL to connect to (SQLite in the data directory by default)."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'metrux.db').resolve()}"
        return parse_database_url(self.database_url)

    @property
    def embedded_redis_socket(self) -> Path:
        return (self.data_dir / "redis" / "redis.sock").resolve()


def _check_together(settings: Settings) -> None:
    """The rules that span settings."""
    if settings.kek_provider is KekProviderName.AWS_KMS and settings.kms_key_id is None:
        raise SettingsError("METRUX_KMS_KEY_ID", "required when METRUX_KEK_PROVIDER=aws-kms")
    if settings.oidc_authorize_url is not None and (
        settings.oidc_token_url is None
        or settings.oidc_client_id is None
        or settings.oidc_jwks_url is None
    ):
        raise SettingsError(
            "METRUX_OIDC_AUTHORIZE_URL",
            "needs METRUX_OIDC_TOKEN_URL, METRUX_OIDC_CLIENT_ID and METRUX_OIDC_JWKS_URL",
        )
    if settings.oidc_jwks_url is not None and settings.oidc_issuer is None:
        raise SettingsError("METRUX_OIDC_ISSUER", "required with METRUX_OIDC_JWKS_URL")


def render_markdown() -> str:
    """The README's settings table (between its markers), from the declarations above."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(Settings):
        meta = field.metadata
        lines.append(
            f"| `{meta['variable']}` | {meta['shown'] or _shown(field)} | {meta['help']} |"
        )
    return "\n".join(lines) + "\n"


def _shown(field: dataclasses.Field[Any]) -> str:
    default = field.default
    if default is None:
        return "none"
    if isinstance(default, StrEnum | str):
        return f"`{default}`"
    return str(default)


if __name__ == "__main__":  # python -m core.settings: the README's settings table
    print(render_markdown(), end="")
