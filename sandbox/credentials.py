"""The session credentials file a sandbox is provisioned with.

JSON: {"session_id", "control_url", "bootstrap_token": "mxb_…", "sandbox_token": "mxs_…"}.
The bootstrap token goes only to the proxy; the workload only ever sees the sandbox token.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from core.tokens import TokenKind, token_kind


class CredentialsError(ValueError):
    """The credentials file is missing, unreadable or malformed; the message says which."""


@dataclasses.dataclass(frozen=True, slots=True)
class SessionCredentials:
    session_id: str
    control_url: str
    bootstrap_token: str = dataclasses.field(repr=False)
    sandbox_token: str = dataclasses.field(repr=False)


def load_credentials(path: Path) -> SessionCredentials:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise CredentialsError(f"{path}: not JSON") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path}: expected a JSON object")
    missing = [
        k
        for k in ("session_id", "control_url", "bootstrap_token", "sandbox_token")
        if not isinstance(data.get(k), str)
    ]
    if missing:
        raise CredentialsError(f"{path}: missing or not a string: {', '.join(missing)}")
    if token_kind(data["bootstrap_token"]) is not TokenKind.BOOTSTRAP:
        raise CredentialsError(f"{path}: bootstrap_token is not an mxb_ token")
    if token_kind(data["sandbox_token"]) is not TokenKind.SESSION:
        raise CredentialsError(f"{path}: sandbox_token is not an mxs_ token")
    return SessionCredentials(
        session_id=data["session_id"],
        control_url=data["control_url"].rstrip("/"),
        bootstrap_token=data["bootstrap_token"],
        sandbox_token=data["sandbox_token"],
    )
