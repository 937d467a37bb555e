"""Sending email: Resend's HTTP API when RESEND_API_KEY is set, else the operator's outbox.

The outbox is a table an operator reads with `metrux control outbox` and delivers by hand;
it is meant for development and closed betas. Messages in it include invite links, so it is
readable only through that command, which hands each message over once: after printing, the
stored copy keeps its links only as hashes, and the retention worker purges it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Protocol

import aiohttp
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.store import Actor
from control.db.engine import flush_deleted
from control.email import store
from core.settings import Settings
from core.tokens import hash_token

log = structlog.get_logger(__name__)


class EmailError(Exception):
    """The provider refused or could not be reached."""


@dataclasses.dataclass(frozen=True, slots=True)
class Email:
    to: str
    subject: str
    body: str
    tenant_id: str | None = None
    # When it was written, on the writer's clock (the retention worker's run time); now if unset.
    at: dt.datetime | None = None

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
                now=email.at or dt.datetime.now(dt.UTC),
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


# Our tokens (core/tokens.py) as they appear in links: `mxi_…` in an invite.
_TOKEN_IN_TEXT = re.compile(r"\bmx[a-z]_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def hash_links(body: str) -> str:
    """The body with every token in it replaced by its hash: what the outbox keeps once
    the message was handed over, so it can never print a usable link again."""
    return _TOKEN_IN_TEXT.sub(lambda m: f"[link sent; sha256 {hash_token(m[0])[:16]}]", body)


async def read_outbox(engine: AsyncEngine, actor: Actor) -> list[dict[str, object]]:
    """Every message waiting for delivery, all tenants', handed over once: printed, then
    marked delivered with its links kept only as hashes (the retention worker purges it).
    The read is audited: the messages hold candidates' addresses and invite links."""
    now = dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        messages = await store.list_undelivered(conn)
        for message in messages:
            body = str(message["body"])
            await store.mark_delivered(
                conn, int(str(message["id"])), body=hash_links(body), now=now
            )
        await audit.record_operator_read(
            conn, actor, command="outbox", target_type="email_outbox", rows=len(messages)
        )
    if messages:
        await flush_deleted(engine)  # no earlier copy of a link left in SQLite's log
    return messages
