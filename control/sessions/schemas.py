"""Request and response bodies for /v1/sessions and the internal attach endpoint."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from control.members.schemas import normalise_email
from control.sessions.lifecycle import SessionState
from control.web.context import require_timezone

DEFAULT_DURATION = dt.timedelta(hours=3)
MAX_DURATION = dt.timedelta(days=14)


BETA_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
# Anthropic's server-side tools, which run at Anthropic and reach the internet from there.
ServerTool = Literal["web_search", "web_fetch", "code_execution", "mcp"]


class SessionLimits(BaseModel):
    """The limits a session runs under, as a session or an invite request sets them."""

    model_config = ConfigDict(extra="forbid")

    max_requests: int | None = Field(None, ge=1, le=1_000_000)
    max_output_tokens: int | None = Field(None, ge=1, le=1_000_000_000)
    allowed_models: list[str] | None = Field(None, min_length=1, max_length=50)
    allowed_betas: list[str] | None = Field(
        None,
        max_length=50,
        description="anthropic-beta values the proxy passes on (others are dropped); default: all",
    )
    allowed_server_tools: list[ServerTool] | None = Field(
        None,
        max_length=4,
        description="server-side tools a call may use (web_search, web_fetch, code_execution, "
        "mcp): they reach the internet from Anthropic, past the sandbox's egress rules. "
        "Default: all; [] allows none",
    )

    @field_validator("allowed_models")
    @classmethod
    def _model_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not 1 <= len(m) <= 200 for m in value):
            raise ValueError("model names are 1 to 200 characters")
        return value

    @field_validator("allowed_betas")
    @classmethod
    def _beta_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not BETA_NAME.fullmatch(b) for b in value):
            raise ValueError("beta names are 1 to 100 of a-z 0-9 . _ -")
        return value


class SessionCreate(SessionLimits):
    candidate_email: str = Field(max_length=320)
    api_key_id: str | None = Field(None, description="default: the tenant's default key")
    deadline: dt.datetime | None = Field(None, description="hard end (ISO 8601); default +3 h")

    _email = field_validator("candidate_email")(normalise_email)

    @field_validator("deadline")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a timezone, e.g. 2026-01-01T17:00:00Z")
        return value


class Limits(BaseModel):
    max_requests: int | None
    max_output_tokens: int | None
    allowed_models: list[str] | None
    allowed_betas: list[str] | None = None
    allowed_server_tools: list[str] | None = None


class SessionOut(BaseModel):
    id: str
    state: str
    candidate_id: str | None
    api_key_id: str | None
    deadline_at: dt.datetime
    limits: Limits
    created_at: dt.datetime
    updated_at: dt.datetime
    ended_at: dt.datetime | None
    proxy_online: bool | None = Field(None, description="a proxy for this session is running")


class NewSessionOut(SessionOut):
    sandbox_token: str = Field(description="mxs_…: the candidate's credential; shown once")
    bootstrap_token: str = Field(description="mxb_…: the proxy's single-use attach credential")
    grader_token: str = Field(
        description="mxg_…: for the customer's graders; works until grading is complete"
    )


class AttachRequest(BaseModel):
    """The public half of the proxy's ephemeral HPKE key pair: the data key is sealed to it."""

    model_config = ConfigDict(extra="forbid")

    suite: Literal["mlkem768x25519-hkdfsha256-aes256gcm", "x25519-hkdfsha256-aes256gcm"] = Field(
        description="the HPKE suite; the hybrid post-quantum one where available"
    )
    public_key: str = Field(max_length=4096, description="base64 raw public key")


class SealedKeyOut(BaseModel):
    suite: str
    sealed_data_key: str = Field(
        description="base64 HPKE ciphertext of the data key, sealed to the attach's public key "
        "with info binding session, tenant and key ids"
    )
    nonce: str = Field(description="base64, of the AES-256-GCM ciphertext")
    ciphertext: str = Field(description="base64 AES-256-GCM ciphertext of the API key")
    version: int


class BootstrapTokenOut(BaseModel):
    session_id: str
    bootstrap_token: str = Field(description="mxb_…: the next proxy's single-use attach token")


class SpentOut(BaseModel):
    requests: int = Field(description="generation calls (POST /v1/messages)")
    output_tokens: int = Field(
        description="output tokens, a call that did not complete counting its whole reservation"
    )


class ChainHeadOut(BaseModel):
    seq: int = Field(description="links so far")
    link: str = Field(description="the last link, hex SHA-256")


class AttachGrantOut(BaseModel):
    session_id: str
    tenant_id: str
    key_id: str
    state: str
    proxy_token: str = Field(
        description="mxp_… this proxy's credential for its usage records and signal stream; "
        "the next attach of the session replaces it"
    )
    epoch: int = Field(description="this attach's number; a later attach fences this proxy")
    deadline_at: dt.datetime
    session_token_sha256: str
    limits: Limits
    spent: SpentOut = Field(
        description="what the session's stored records already count against its budget: "
        "the proxy starts from here, so a reconnect brings no fresh budget"
    )
    chain_head: ChainHeadOut | None = Field(
        None, description="where a previous proxy of this session left the transcript chain"
    )
    sealed_key: SealedKeyOut


class SessionListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str | None = Field(None, description="comma-separated states, e.g. issued,active")
    candidate: str | None = Field(None, max_length=320, description="the candidate's email")
    since: dt.datetime | None = Field(None, description="created at or after (ISO 8601)")
    until: dt.datetime | None = Field(None, description="created before (ISO 8601)")
    limit: int = Field(100, ge=1, le=500)

    @field_validator("state")
    @classmethod
    def _states(cls, value: str | None) -> str | None:
        known = {s.value for s in SessionState}
        if value is not None and not set(value.split(",")) <= known:
            raise ValueError(f"states are {', '.join(sorted(known))}")
        return value

    @field_validator("candidate")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else normalise_email(value)

    _aware = field_validator("since", "until")(require_timezone)


class SessionListItem(SessionOut):
    candidate_email: str | None = Field(description="None once the candidate is erased")


class SessionList(BaseModel):
    sessions: list[SessionListItem]
