"""The control plane's route table, for tests that go over every route."""

from __future__ import annotations

import os
from typing import Any

from control.app import create_app
from core.settings import Settings


def route_table() -> list[tuple[str, str, Any]]:
    """(method, path template, handler) of every route but the implicit HEADs."""
    app = create_app(Settings(key_encryption_key=os.urandom(32)))
    return [
        (route.method, route.resource.canonical, route.handler)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    ]
