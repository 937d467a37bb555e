"""The candidate workload's environment. Pure: a parent environment in, a new one out.

Nothing that holds or leads to the customer's key or the bootstrap token survives: the
service's own settings, cloud and database credentials, and any variable whose name says
key, token, secret or password are dropped. What is set: the proxy URL and the sandbox
token (as both ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN), a private HOME, and Claude
Code's switches that keep it from reaching anything but the proxy (CLIENTS.md §7-8).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_DROP_PREFIXES = (
    "METRUX_",
    "ANTHROPIC_",
    "CLAUDE_",
    "AWS_",
    "SENTRY_",
    "RESEND_",
    "REDIS_",
    "DATABASE_",
    "PG",
    "KEY_ENCRYPTION",
)
_SECRET_WORDS = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|DSN|AUTH|COOKIE|SESSION", re.I)

CLAUDE_CODE_SWITCHES = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
}


def is_dropped(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(_DROP_PREFIXES) or bool(_SECRET_WORDS.search(upper))


def workload_env(
    parent: Mapping[str, str], *, proxy_url: str, sandbox_token: str, home: Path
) -> dict[str, str]:
    env = {name: value for name, value in parent.items() if not is_dropped(name)}
    env.update(CLAUDE_CODE_SWITCHES)
    env["HOME"] = str(home)
    env["ANTHROPIC_BASE_URL"] = proxy_url
    env["ANTHROPIC_API_KEY"] = sandbox_token
    env["ANTHROPIC_AUTH_TOKEN"] = sandbox_token
    return env
