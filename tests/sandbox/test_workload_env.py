"""The workload's environment carries the proxy URL and the sandbox token, and no secret."""

from __future__ import annotations

import json
from pathlib import Path

from core.tokens import TokenKind, new_token
from sandbox.home import prepare_home
from sandbox.workload_env import CLAUDE_CODE_SWITCHES, workload_env

PARENT = {
    "PATH": "/usr/bin",
    "LANG": "C.UTF-8",
    "TERM": "xterm",
    "HOME": "/root",
    "METRUX_BOOTSTRAP_TOKEN": "mxb_secret",
    "METRUX_DATA_DIR": "/srv/metrux",
    "KEY_ENCRYPTION_KEY": "a2V5",
    "REDIS_URL": "redis://:pw@cache",
    "DATABASE_URL": "postgresql://u:pw@db/x",
    "ANTHROPIC_API_KEY": "sk-ant-api03-real",
    "AWS_SECRET_ACCESS_KEY": "x",
    "GITHUB_TOKEN": "ghp_x",
    "OPENAI_API_KEY": "sk-x",
    "MY_SERVICE_PASSWORD": "x",
    "SENTRY_DSN": "https://k@sentry/1",
    "PGPASSWORD": "x",
    "SSH_AUTH_SOCK": "/tmp/agent",
}


def test_only_harmless_parent_variables_survive(tmp_path: Path) -> None:
    token = new_token(TokenKind.SESSION)
    env = workload_env(PARENT, proxy_url="http://127.0.0.1:5", sandbox_token=token, home=tmp_path)
    expected = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:5",
        "ANTHROPIC_API_KEY": token,
        "ANTHROPIC_AUTH_TOKEN": token,
        **CLAUDE_CODE_SWITCHES,
    }
    assert env == expected


def test_home_is_seeded_for_headless_claude_code(tmp_path: Path) -> None:
    token = new_token(TokenKind.SESSION)
    home = prepare_home(tmp_path / "home", token)
    state = json.loads((home / ".claude.json").read_text())
    assert state["hasCompletedOnboarding"] is True
    assert state["customApiKeyResponses"]["approved"] == [token[-20:]]
    assert (home / ".claude.json").stat().st_mode & 0o777 == 0o600
