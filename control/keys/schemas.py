"""Request and response bodies for /v1/keys."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# sk-ant-api03- followed by the key body ([A-Za-z0-9_-], 95 characters today). The bounds
# leave room for format changes without accepting arbitrary strings.
_API_KEY = re.compile(r"^sk-ant-api\d{2}-[A-Za-z0-9_-]{40,200}$")
_ADMIN_KEY = re.compile(r"^sk-ant-admin\d{2}-")


class KeyUpload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    api_key: str = Field(max_length=256, description="an Anthropic API key, sk-ant-api03-…")
    name: str | None = Field(None, min_length=1, max_length=100, description="a label")
    make_default: bool = Field(
        False, description="new sessions use this key (the tenant's first key always does)"
    )

    @field_validator("api_key")
    @classmethod
    def _anthropic_api_key(cls, value: str) -> str:
        # Messages name the expected shape and never echo the value.
        value = value.strip()
        if _ADMIN_KEY.match(value):
            raise ValueError("an Admin API key cannot call the Messages API; upload an API key")
        if not _API_KEY.match(value):
            raise ValueError("must be an Anthropic API key (sk-ant-api03-…)")
        return value


class KeyOut(BaseModel):
    id: str
    name: str | None
    last_four: str
    fingerprint: str = Field(description='"sha256:" + hex SHA-256 of the key')
    created_at: dt.datetime
    created_by: str | None
    revoked_at: dt.datetime | None
    status: Literal["valid", "unverified", "invalid", "revoked"] = Field(
        description="valid: Anthropic accepted it at the last check; unverified: Anthropic "
        "could not be asked yet (re-checked in the background); invalid: Anthropic refused "
        "it, new sessions on it are refused; revoked: revoked here"
    )
    status_reason: str | None = Field(
        description="Anthropic's error type for invalid, what blocked the check for unverified"
    )
    last_checked_at: dt.datetime | None
    last_used_at: dt.datetime | None = Field(None, description="the last call proxied with it")
    live_sessions: int = Field(0, description="sessions not yet ended that use it")
    is_default: bool = Field(description="sessions that name no key use this one")


class KeyList(BaseModel):
    keys: list[KeyOut]
