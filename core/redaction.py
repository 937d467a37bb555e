"""Secret redaction: pure functions over strings and nested values.

Used as the last structlog processor before rendering (see core.logging) and by anything that
persists or returns free text (audit details, error messages). Over-redaction is acceptable;
a leak is not.

Design (SECURITY-CHECKS.md A3.3):
- loose prefix patterns rather than exact lengths, so truncated secrets are still caught;
- every quantifier is bounded or linear and each field is capped, so crafted input cannot
  stall the event loop (E7);
- a value is also checked after percent-decoding and unescaping (`\\uXXXX`, `\\"`), because
  those forms slip past plain patterns (A3.2); when the decoded form holds a secret, the
  redacted decoded form is what comes out;
- values under header-like keys (authorization, x-api-key, cookie, password, …) are replaced
  whatever they hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote

MAX_FIELD_CHARS = 64 * 1024
REDACTED = "[redacted]"

# Field names whose values are secrets whatever they look like.
_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "proxy_authorization",
        "x-api-key",
        "x_api_key",
        "api_key",
        "api-key",
        "apikey",
        "cookie",
        "set-cookie",
        "set_cookie",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "key_encryption_key",
        "bootstrap_token",
    }
)
_SENSITIVE_SUFFIXES = ("_token", "-token", "_password", "_secret", "_api_key")

# A value following one of these names, in `name: value`, `name=value`, `"name": "value"`
# (optionally JSON-escaped), is a secret.
_HEADER_NAMES = r"authorization|proxy-authorization|x-api-key|cookie|set-cookie"
_ASSIGNED_NAMES = r"passw(?:or)?d|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token"
_QUOTE = r"\\{0,3}['\"]?"
_ASSIGN = rf"{_QUOTE}\s{{0,5}}[:=]\s{{0,5}}{_QUOTE}"


def _whole(kind: str) -> Callable[[re.Match[str]], str]:
    label = f"[redacted:{kind}]"
    return lambda match: label


def _keep_prefix(match: re.Match[str]) -> str:
    # The pattern's first group is the non-secret prefix (a field name and its operator).
    return f"{match.group(1)}{REDACTED}"


_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    # Private key blocks first, so the base64 body goes with the header.
    (
        re.compile(r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY-----[A-Za-z0-9+/=\s\\]{0,16384}"),
        _whole("private_key"),
    ),
    # Anthropic (api03, admin01, future types; also truncated).
    (re.compile(r"sk-ant-[A-Za-z0-9]{2,16}-[A-Za-z0-9_-]{8,}"), _whole("anthropic_key")),
    # OpenAI project/service keys, then any other sk- key long enough to be one.
    (
        re.compile(r"\bsk-(?:proj|svcacct|admin|service)-[A-Za-z0-9_-]{16,}"),
        _whole("openai_key"),
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), _whole("secret_key")),
    # GitHub tokens.
    (
        re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{22,}"),
        _whole("github_token"),
    ),
    # AWS access key ids.
    (
        re.compile(r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"),
        _whole("aws_access_key_id"),
    ),
    # AWS secret access keys near an "aws … secret/key" context.
    (
        re.compile(
            r"(?i:(aws.{0,20}?(?:secret|key).{0,20}?[\s'\"=:]))[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
        ),
        _keep_prefix,
    ),
    # JWTs.
    (
        re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"),
        _whole("jwt"),
    ),
    # This project's own tokens: mxk_ (member), mxs_ (session), mxb_ (bootstrap), mxi_ (invite)…
    (re.compile(r"\bmx[a-z]_[A-Za-z0-9_-]{16,}"), _whole("metrux_token")),
    # Header lines and header dict reprs: the whole value goes.
    (
        re.compile(rf"(?i:(\b(?:{_HEADER_NAMES})\b{_ASSIGN}))[^\r\n'\"\\]{{1,4096}}"),
        _keep_prefix,
    ),
    # Bearer credentials anywhere (RFC 6750 b64token charset).
    (re.compile(r"(?i:(\bbearer\s{1,5}))[A-Za-z0-9\-._~+/]{8,}=*"), _keep_prefix),
    # Password-like assignments: k=v, k: v, "k": "v", ?k=v&…, also JSON-escaped.
    (
        re.compile(
            rf"(?i:((?<![\w.-])[\w.-]{{0,40}}(?:{_ASSIGNED_NAMES})[\w.-]{{0,40}}{_ASSIGN}))"
            r"[^\s'\",;&\\]{4,256}"
        ),
        _keep_prefix,
    ),
    # Credentials in URLs: scheme://user:password@host.
    (re.compile(r"(://[^/\s:@]{1,128}:)[^/\s@]{1,256}(?=@)"), _keep_prefix),
]

_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_BACKSLASH_ESCAPE = re.compile(r"\\([\\\"'/])")


def _substitute(text: str) -> str:
    for pattern, replace in _PATTERNS:
        text = pattern.sub(replace, text)
    return text


def decode_layers(text: str) -> str:
    """Undo the encodings that hide secrets from plain patterns, nested up to three deep."""
    for _ in range(3):
        decoded = text
        if "%" in decoded:
            decoded = unquote(decoded)
        if "\\" in decoded:
            decoded = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), decoded)
            decoded = _BACKSLASH_ESCAPE.sub(r"\1", decoded)
        if decoded == text:
            break
        text = decoded
    return text


def redact_text(text: str) -> str:
    """Return `text` with every secret-looking value replaced by a `[redacted…]` marker."""
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + "…[truncated]"
    redacted = _substitute(text)
    if "%" in text or "\\" in text:
        decoded = decode_layers(text)
        if decoded != text:
            decoded_redacted = _substitute(decoded)
            if decoded_redacted != decoded:
                return decoded_redacted
    return redacted


def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SENSITIVE_KEYS or lowered.endswith(_SENSITIVE_SUFFIXES)


def redact_value(value: Any) -> Any:
    """Redact every string inside a nested structure of dicts, lists and scalars.

    Values of unknown types become their redacted `repr`, so nothing reaches a renderer
    without passing through `redact_text`.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            str(key): (REDACTED if is_sensitive_key(str(key)) else redact_value(item))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return redact_text(repr(bytes(value)))
    return redact_text(repr(value))


# Email addresses in log lines: a candidate's erasure cannot reach logs, so none go there.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")


def _without_emails(value: Any) -> Any:
    if isinstance(value, str):
        return _EMAIL.sub("[redacted:email]", value) if "@" in value else value
    if isinstance(value, dict):
        return {k: _without_emails(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_emails(v) for v in value]
    return value


def redact_personal(value: Any) -> Any:
    """Secrets redacted and email addresses masked, for what is stored where a deletion
    request cannot reach (audit details) as much as for log lines."""
    return _without_emails(redact_value(value))


def redact_event(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    """structlog processor: redact every field of the event, email addresses included (log
    lines only: they are personal data no deletion request can reach); run it last before
    rendering."""
    redacted: dict[str, Any] = _without_emails(redact_value(event_dict))
    return redacted
