"""Sending email: Resend's HTTP API when RESEND_API_KEY is set, else the operator's outbox.

The outbox is a table an operator reads with `metrux control outbox` and delivers by hand;
it is meant for development and closed betas. Messages in it include invite links, so it is
readable only through that command.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Protocol

import aiohttp
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.store import Actor
from control.email import store
from core.settings import Settings

log = structlog.get_logger(__name__)


class EmailError(Exception):
    """The provider refused or could not be reached."""


@dataclasses.dataclass(frozen=True, slots=True)
class Email:
    to: str
    subject: str
    body: str
    tenant_id: str | None = None

    def __repr__(self) -> str:  # the body may hold an invite link
        return f"<Email to={self.to} subject={self.subject!r}>"


class EmailSender(Protocol):
    async def send(self, email: Email) -> None: ...


class OutboxSender:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def send(self, email: Email) -> None:
        async with self._engine.begin() as conn:
            await store.insert_message(
                conn,
                tenant_id=email.tenant_id,
                to=email.to,
                subject=email.subject,
                body=email.body,
                now=dt.datetime.now(dt.UTC),
            )
        # No address or subject in the logs: an erasure request cannot reach log lines.
        log.info("email_queued_in_outbox", tenant_id=email.tenant_id)


class ResendSender:
    def __init__(self, api_key: str, base_url: str, sender: str) -> None:
        self._api_key = api_key
        self._url = f"{base_url}/emails"
        self._from = sender

    def __repr__(self) -> str:
        return f"<ResendSender {self._url}>"

    async def send(self, email: Email) -> None:
        payload = {
            "from": self._from,
            "to": [email.to],
            "subject": email.subject,
            "text": email.body,
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
                http.post(
                    self._url, json=payload, headers={"Authorization": f"Bearer {self._api_key}"}
                ) as response,
            ):
                if response.status >= 300:
                    raise EmailError(f"email provider answered {response.status}")
        except aiohttp.ClientError as exc:
            raise EmailError(f"email provider unreachable ({type(exc).__name__})") from None
        log.info("email_sent", tenant_id=email.tenant_id)


def make_sender(settings: Settings, engine: AsyncEngine) -> EmailSender:
    if settings.resend_api_key:
        return ResendSender(settings.resend_api_key, settings.resend_url, settings.email_from)
    return OutboxSender(engine)


async def read_outbox(engine: AsyncEngine, actor: Actor) -> list[dict[str, object]]:
    """Every message waiting in the outbox, all tenants'. The read is audited: the
    messages hold candidates' addresses and invite links."""
    async with engine.begin() as conn:
        messages = await store.list_messages(conn)
        await audit.record_operator_read(
            conn, actor, command="outbox", target_type="email_outbox", rows=len(messages)
        )
    return messages
