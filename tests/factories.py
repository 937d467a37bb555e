"""Builders for test data. Fake keys are generated at run time, never committed."""

from __future__ import annotations

import dataclasses
import secrets
import string

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit.actions import ActorType
from control.audit.store import Actor
from control.tenants.service import create_tenant

_KEY_ALPHABET = string.ascii_letters + string.digits + "_-"
OPERATOR = Actor(type=ActorType.OPERATOR, id="cli:test")


def fake_anthropic_key() -> str:
    """A random string shaped like a real Anthropic API key."""
    return "sk-ant-api03-" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(93)) + "AA"


@dataclasses.dataclass(frozen=True)
class TenantFixture:
    tenant_id: str
    owner_id: str
    owner_token: str
    owner_email: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.owner_token}"}


async def make_tenant(
    engine: AsyncEngine, name: str = "Acme", email: str | None = None
) -> TenantFixture:
    email = email or f"owner-{secrets.token_hex(4)}@example.com"
    created = await create_tenant(engine, OPERATOR, name=name, owner_email=email)
    return TenantFixture(created.tenant.id, created.owner.member.id, created.owner.token, email)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class FakeSecret:
    """Stands in for proxy.keyring.SessionKey where a test builds a head with a key."""

    def __init__(self, value: bytes | bytearray) -> None:
        self.value = value

    @property
    def size(self) -> int:
        return len(self.value)

    def copy_into(self, target: memoryview) -> None:
        target[:] = self.value


class Clock:
    """A monotonic clock the test moves (`clock.now += 30`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The scraper's token every test app is given (Settings.metrics_token).
METRICS_TOKEN = "metrics-scraper-token-for-the-tests-0123456789"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
