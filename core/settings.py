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
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TypeVar
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


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("var")
    database_url: str | None = None  # None: SQLite file in data_dir
    redis_url: str | None = None  # None: embedded redis-server on a socket in data_dir
    kek_provider: KekProviderName = KekProviderName.LOCAL
    # 32 raw bytes; excluded from repr so a logged Settings never carries it.
    key_encryption_key: bytes | None = dataclasses.field(default=None, repr=False)
    kms_key_id: str | None = None
    kms_region: str | None = None  # None: the AWS SDK's own (AWS_REGION, instance metadata)
    kms_endpoint_url: str | None = None  # a KMS-compatible endpoint, for tests and VPC endpoints
    # A previous local KEK, readable (never used to wrap) while `metrux control rewrap` runs.
    previous_key_encryption_key: bytes | None = dataclasses.field(default=None, repr=False)
    upstream_url: str = DEFAULT_UPSTREAM_URL
    sentry_dsn: str | None = dataclasses.field(default=None, repr=False)
    resend_api_key: str | None = dataclasses.field(default=None, repr=False)
    log_level: str = "info"
    log_format: LogFormat = LogFormat.AUTO
    redis_prefix: str = "metrux:"
    # The proxy's single-use attach credential (METRUX_BOOTSTRAP_TOKEN); never from argv.
    bootstrap_token: str | None = dataclasses.field(default=None, repr=False)
    proxy_max_body_bytes: int = 32 * 1024 * 1024
    # Per-session request rate at the proxy: sustained calls per second and burst size.
    proxy_rate_per_s: float = 10.0
    proxy_burst: int = 100
    # A proxy that cannot reach the control plane for this long clears its key.
    proxy_control_grace_s: float = 60.0
    # Where candidates reach the control plane (invite links), and how invites are sent.
    public_url: str = "http://127.0.0.1:8700"
    resend_url: str = "https://api.resend.com"
    email_from: str = "Metrux <invites@metrux.invalid>"
    prices_file: Path | None = None  # None: the price table shipped with the service
    # Guard layer (control/guard): rate limits per route class, trusted reverse proxies,
    # and when repeated failed credential checks block an address.
    rate_limits: Mapping[RouteClass, Rate] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS)
    )
    trusted_proxies: tuple[Network, ...] = ()
    block_allowlist: tuple[Network, ...] = ()
    block_after: int = 20
    block_target_after: int = 10
    block_window_s: int = 600
    block_for_s: int = 900
    block_max_s: int = 7 * 24 * 3600
    # OIDC handoff (POST /v1/auth/handoff): None disables it.
    oidc_jwks_url: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_algorithms: tuple[str, ...] = ("RS256",)
    member_session_hours: int = 12

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise SettingsError on a bad value."""

        def get(name: str) -> str | None:
            value = environ.get(name)
            if value is None or value.strip() == "":
                return None
            return value.strip()

        data_dir = Path(get("METRUX_DATA_DIR") or "var")
        database_url = get("DATABASE_URL")
        if database_url is not None:
            parse_database_url(database_url)  # validates, raises SettingsError
        redis_url = get("REDIS_URL")
        if redis_url is not None:
            _check_url("REDIS_URL", redis_url, {"redis", "rediss", "unix"})
        kek_provider = _parse_enum(
            "METRUX_KEK_PROVIDER", get("METRUX_KEK_PROVIDER"), KekProviderName
        )
        kek = get("KEY_ENCRYPTION_KEY")
        key_encryption_key = _parse_kek("KEY_ENCRYPTION_KEY", kek) if kek is not None else None
        kms_key_id = get("METRUX_KMS_KEY_ID")
        kms_endpoint_url = get("METRUX_KMS_ENDPOINT_URL")
        if kms_endpoint_url is not None:
            _check_url("METRUX_KMS_ENDPOINT_URL", kms_endpoint_url, {"http", "https"})
        previous = get("KEY_ENCRYPTION_KEY_PREVIOUS")
        if kek_provider is KekProviderName.AWS_KMS and kms_key_id is None:
            raise SettingsError("METRUX_KMS_KEY_ID", "required when METRUX_KEK_PROVIDER=aws-kms")
        upstream_url = get("METRUX_UPSTREAM_URL") or DEFAULT_UPSTREAM_URL
        _check_url("METRUX_UPSTREAM_URL", upstream_url, {"http", "https"})
        redis_prefix = get("METRUX_REDIS_PREFIX") or "metrux:"
        if not re.fullmatch(r"[A-Za-z0-9:_.-]{1,64}", redis_prefix):
            raise SettingsError("METRUX_REDIS_PREFIX", "use 1-64 of A-Z a-z 0-9 : _ . -")
        max_body = _parse_int("METRUX_PROXY_MAX_BODY_BYTES", get("METRUX_PROXY_MAX_BODY_BYTES"))
        rate = _parse_int("METRUX_PROXY_RATE_PER_S", get("METRUX_PROXY_RATE_PER_S"))
        burst = _parse_int("METRUX_PROXY_BURST", get("METRUX_PROXY_BURST"))
        grace = _parse_int("METRUX_PROXY_CONTROL_GRACE_S", get("METRUX_PROXY_CONTROL_GRACE_S"))
        public_url = get("METRUX_PUBLIC_URL") or "http://127.0.0.1:8700"
        _check_url("METRUX_PUBLIC_URL", public_url, {"http", "https"})
        resend_url = get("METRUX_RESEND_URL") or "https://api.resend.com"
        _check_url("METRUX_RESEND_URL", resend_url, {"http", "https"})
        jwks_url = get("METRUX_OIDC_JWKS_URL")
        if jwks_url is not None:
            _check_url("METRUX_OIDC_JWKS_URL", jwks_url, {"http", "https"})
            if get("METRUX_OIDC_ISSUER") is None:
                raise SettingsError("METRUX_OIDC_ISSUER", "required with METRUX_OIDC_JWKS_URL")
        algorithms = tuple(
            a.strip() for a in (get("METRUX_OIDC_ALGORITHMS") or "RS256").split(",") if a.strip()
        )
        if not algorithms or not set(algorithms) <= _SIGNING_ALGORITHMS:
            raise SettingsError(
                "METRUX_OIDC_ALGORITHMS",
                f"use asymmetric algorithms among {', '.join(sorted(_SIGNING_ALGORITHMS))}",
            )
        log_level = (get("METRUX_LOG_LEVEL") or "info").lower()
        if log_level not in LOG_LEVELS:
            raise SettingsError("METRUX_LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}")
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            redis_url=redis_url,
            kek_provider=kek_provider or KekProviderName.LOCAL,
            key_encryption_key=key_encryption_key,
            kms_key_id=kms_key_id,
            kms_region=get("METRUX_KMS_REGION"),
            kms_endpoint_url=kms_endpoint_url,
            previous_key_encryption_key=(
                _parse_kek("KEY_ENCRYPTION_KEY_PREVIOUS", previous) if previous else None
            ),
            upstream_url=upstream_url.rstrip("/"),
            sentry_dsn=get("SENTRY_DSN"),
            resend_api_key=get("RESEND_API_KEY"),
            log_level=log_level,
            log_format=_parse_enum("METRUX_LOG_FORMAT", get("METRUX_LOG_FORMAT"), LogFormat)
            or LogFormat.AUTO,
            redis_prefix=redis_prefix,
            bootstrap_token=get("METRUX_BOOTSTRAP_TOKEN"),
            proxy_max_body_bytes=max_body or 32 * 1024 * 1024,
            proxy_rate_per_s=float(rate or 10),
            proxy_burst=burst or 100,
            proxy_control_grace_s=float(grace or 60),
            public_url=public_url.rstrip("/"),
            resend_url=resend_url.rstrip("/"),
            email_from=get("METRUX_EMAIL_FROM") or "Metrux <invites@metrux.invalid>",
            prices_file=Path(prices) if (prices := get("METRUX_PRICES_FILE")) else None,
            rate_limits=_parse_rate_limits(get("METRUX_RATE_LIMITS")),
            trusted_proxies=_parse_networks(
                "METRUX_TRUSTED_PROXIES", get("METRUX_TRUSTED_PROXIES")
            ),
            block_allowlist=_parse_networks(
                "METRUX_BLOCK_ALLOWLIST", get("METRUX_BLOCK_ALLOWLIST")
            ),
            block_after=_parse_int("METRUX_BLOCK_AFTER", get("METRUX_BLOCK_AFTER")) or 20,
            block_target_after=_parse_int(
                "METRUX_BLOCK_TARGET_AFTER", get("METRUX_BLOCK_TARGET_AFTER")
            )
            or 10,
            block_window_s=_parse_int("METRUX_BLOCK_WINDOW_S", get("METRUX_BLOCK_WINDOW_S")) or 600,
            block_for_s=_parse_int("METRUX_BLOCK_FOR_S", get("METRUX_BLOCK_FOR_S")) or 900,
            block_max_s=_parse_int("METRUX_BLOCK_MAX_S", get("METRUX_BLOCK_MAX_S"))
            or 7 * 24 * 3600,
            oidc_jwks_url=jwks_url,
            oidc_issuer=get("METRUX_OIDC_ISSUER"),
            oidc_audience=get("METRUX_OIDC_AUDIENCE"),
            oidc_algorithms=algorithms,
            member_session_hours=_parse_int(
                "METRUX_MEMBER_SESSION_HOURS", get("METRUX_MEMBER_SESSION_HOURS")
            )
            or 12,
        )

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy async URL to connect to (SQLite in the data directory by default)."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'metrux.db').resolve()}"
        return parse_database_url(self.database_url)

    @property
    def embedded_redis_socket(self) -> Path:
        return (self.data_dir / "redis" / "redis.sock").resolve()


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


def _check_url(variable: str, url: str, schemes: set[str]) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SettingsError(variable, "is not a valid URL") from exc
    if parts.scheme not in schemes:
        raise SettingsError(variable, f"scheme must be one of {', '.join(sorted(schemes))}")
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(variable, "has no host")


def _parse_enum(variable: str, value: str | None, enum: type[_E]) -> _E | None:
    if value is None:
        return None
    try:
        return enum(value.lower())
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise SettingsError(variable, f"must be one of {choices}") from None


def _parse_int(variable: str, value: str | None) -> int | None:
    if value is None:
        return None
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


def _parse_rate_limits(value: str | None) -> dict[RouteClass, Rate]:
    """'token=30/60,write=120/1m': classes not named keep their defaults."""
    limits = dict(DEFAULT_RATE_LIMITS)
    for part in (value or "").split(","):
        if not part.strip():
            continue
        name, sep, rate = part.partition("=")
        try:
            route_class = RouteClass(name.strip().lower())
        except ValueError:
            choices = ", ".join(c.value for c in RouteClass)
            raise SettingsError(
                "METRUX_RATE_LIMITS", f"unknown class {name.strip()!r}; use {choices}"
            ) from None
        try:
            limits[route_class] = Rate.parse(rate) if sep else Rate.parse("")
        except ValueError as exc:
            raise SettingsError("METRUX_RATE_LIMITS", str(exc)) from None
    return limits


def _parse_networks(variable: str, value: str | None) -> tuple[Network, ...]:
    networks = []
    for part in (value or "").split(","):
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
