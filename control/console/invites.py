"""The invites page: invite a candidate (email, assessment, deadline, limits, allowed
models) and the list with each invite's status (sent, accepted, expired)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from control import appkeys
from control.audit.actors import request_actor
from control.console.page import render
from control.email import store as email_store
from control.invites import service
from control.invites.schemas import InviteCreate
from control.web.endpoint import ADMINS, endpoint
from control.web.errors import ApiError, validation_error
from control.web.principal import current_principal

routes = web.RouteTableDef()
_NUMBERS = ("expires_in_hours", "session_minutes", "max_requests", "max_output_tokens")


def status_of(invite: dict[str, Any], now: dt.datetime) -> str:
    if invite["accepted_at"] is not None:
        return "accepted"
    return "expired" if invite["expires_at"] <= now else "sent"


async def _page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    tenant_id = current_principal(request).tenant_id
    invites = await service.list_invites(request.app[appkeys.engine], tenant_id)
    outbox = None
    if request.app[appkeys.settings].resend_api_key is None:  # local mode: no provider
        async with request.app[appkeys.engine].connect() as conn:
            outbox = await email_store.list_of_tenant(conn, tenant_id)
    now = dt.datetime.now(dt.UTC)
    return render(
        request,
        "invites.html",
        {
            "invites": [{**i, "status": status_of(i, now)} for i in invites],
            "outbox": outbox,
            "error": None,
            "created": None,
            "form": {},
            **extra,
        },
        status=status,
    )


@routes.get("/console/invites")
@endpoint("The invites page", access=ADMINS, tag="console")
async def invites_page(request: web.Request) -> web.Response:
    return await _page(request)


def _parse(form: Any) -> dict[str, Any]:
    """The form as the API's InviteCreate takes it: blank optional fields left out."""
    values: dict[str, Any] = {
        "candidate_email": str(form.get("candidate_email", "")),
        "assessment_name": str(form.get("assessment_name", "")).strip(),
    }
    for name in _NUMBERS:
        text = str(form.get(name, "")).strip()
        if text:
            values[name] = int(text) if text.isascii() and text.isdigit() else text
    models = [m.strip() for m in str(form.get("allowed_models", "")).split(",") if m.strip()]
    if models:
        values["allowed_models"] = models
    return values


@routes.post("/console/invites")
@endpoint("Invite a candidate from the console", access=ADMINS, tag="console")
async def create(request: web.Request) -> web.Response:
    form = await request.post()
    shown = {k: str(form.get(k, "")) for k in ("candidate_email", "assessment_name",
                                               "allowed_models", *_NUMBERS)}  # fmt: skip
    try:
        body = InviteCreate.model_validate(_parse(form))
    except ValidationError as exc:
        return await _page(request, status=422, error=validation_error(exc).message, form=shown)
    settings = request.app[appkeys.settings]
    try:
        created = await service.create_invite(
            request.app[appkeys.engine],
            request.app[appkeys.email],
            request_actor(request),
            tenant_id=current_principal(request).tenant_id,
            request=body,
            public_url=settings.public_url,
        )
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return await _page(request, status=exc.status, error=exc.message, form=shown)
    # The link is shown on this response only: the invite keeps only its hash.
    return await _page(
        request,
        status=201,
        created={
            "email": body.candidate_email,
            "url": f"{settings.public_url}/invite/{created.token}",
            "email_sent": created.email_error is None,
            "email_error": created.email_error,
        },
    )
