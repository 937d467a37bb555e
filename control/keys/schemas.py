"""Request and response bodies for /v1/keys."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

# sk-ant-api03- followed by the key body ([A-Za-z0-9_-], 95 characters today). The bounds
# leave room for format changes without accepting arbitrary strings.
_API_KEY = re.compile(r"^sk-ant-api\d{2}-[A-Za-z0-9_-]{40,200}$")
_ADMIN_KEY = re.compile(r"^sk-ant-admin\d{2}-")


class KeyUpload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    api_key: str = Field(max_length=256, description="an Anthropic API key, sk-ant-api03-…")
    name: str | None = Field(None, min_length=1, max_length=100, description="a label")

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


class KeyList(BaseModel):
    keys: list[KeyOut]
