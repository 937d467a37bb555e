"""A private HOME for the workload, seeded so Claude Code runs headless against a gateway.

Without `hasCompletedOnboarding`, an interactive first run checks connectivity against
Anthropic's own hosts, ignoring ANTHROPIC_BASE_URL (CLIENTS.md §7).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def prepare_home(home: Path, sandbox_token: str) -> Path:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    state = {
        "hasCompletedOnboarding": True,
        # Claude Code remembers approved keys by their last 20 characters.
        "customApiKeyResponses": {"approved": [sandbox_token[-20:]], "rejected": []},
        "projects": {os.getcwd(): {"hasTrustDialogAccepted": True}},
    }
    path = home / ".claude.json"
    path.write_text(json.dumps(state))
    path.chmod(0o600)
    return home
