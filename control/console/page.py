"""Rendering a console page: the template, and what every page needs (who is signed in,
what their role may do, the CSRF token for its forms)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from control.web.endpoint import ADMINS, ROLE_RANK, Role
from control.web.principal import Principal, principal_key

TEMPLATES = Path(__file__).with_name("templates")
# The session's CSRF token, for the console's forms: an HttpOnly cookie set at sign-in
# beside the session cookie (the server reads it to render forms; scripts never can).
CSRF_COOKIE = "metrux_csrf"
# Messages a redirect may ask a page to show: fixed texts, never text from the request.
NOTICES = {
    "key_uploaded": "Key uploaded and checked with Anthropic.",
    "key_default": "Default key changed.",
    "key_checked": "Key checked with Anthropic.",
    "key_revoked": "Key revoked: its blob is destroyed and its live sessions are revoked.",
    "signed_out": "You are signed out.",
    "member_role": "Role changed. Their browser sessions pick it up at their next request.",
    "member_revoked": "Member revoked: their token and sessions stop working.",
    "session_ended": "Session ended: its proxy clears the key and exits.",
}


def setup_templates(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )


def can_admin(principal: Principal | None) -> bool:
    return principal is not None and principal.role in ADMINS and principal.operator_id is None


def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    principal = request.get(principal_key)
    notice = NOTICES.get(request.query.get("notice", ""))
    return aiohttp_jinja2.render_template(
        template,
        request,
        {
            "principal": principal,
            "role": principal.role.value if principal else None,
            "can_admin": can_admin(principal),
            "rank": ROLE_RANK.get(principal.role, 0) if principal else 0,
            "csrf": request.cookies.get(CSRF_COOKIE, ""),
            "notice": notice,
            "path": request.path,
            "owner": Role.OWNER,
            **context,
        },
        status=status,
    )


def redirect(location: str) -> web.Response:
    """303 See Other: after a form post, the browser GETs the page (no resubmission)."""
    return web.Response(status=303, headers={"Location": location})


def _day(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC) if value else None
    except ValueError:  # not a date: no filter, and nothing echoed
        return None


def day_range(query: Mapping[str, str]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """A filter form's `since` and `until` dates as [since, the day after until)."""
    until = _day(query.get("until", ""))
    return _day(query.get("since", "")), until + dt.timedelta(days=1) if until else None
