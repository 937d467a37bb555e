"""Request and response bodies for /v1/invites."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator

from control.members.schemas import normalise_email
from control.sessions.schemas import BETA_NAME


class InviteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate_email: str = Field(max_length=320)
    assessment_name: str = Field(min_length=1, max_length=200)
    expires_in_hours: int = Field(168, ge=1, le=24 * 30, description="default 7 days")
    session_minutes: int = Field(180, ge=5, le=24 * 60, description="session length once accepted")
    max_requests: int | None = Field(None, ge=1, le=1_000_000)
    max_output_tokens: int | None = Field(None, ge=1, le=1_000_000_000)
    allowed_models: list[str] | None = Field(None, min_length=1, max_length=50)
    allowed_betas: list[str] | None = Field(
        None,
        max_length=50,
        description="anthropic-beta values the proxy passes on (others are dropped); default: all",
    )

    _email = field_validator("candidate_email")(normalise_email)

    @field_validator("allowed_betas")
    @classmethod
    def _beta_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not BETA_NAME.fullmatch(b) for b in value):
            raise ValueError("beta names are 1 to 100 of a-z 0-9 . _ -")
        return value


class InviteOut(BaseModel):
    id: str
    candidate_email: str
    assessment_name: str
    expires_at: dt.datetime
    created_at: dt.datetime
    accepted_at: dt.datetime | None
    session_id: str | None


class NewInviteOut(InviteOut):
    invite_token: str = Field(description="mxi_…: shown once; also sent to the candidate")
    invite_url: str
    email_sent: bool
    email_error: str | None = None


class InviteLookup(BaseModel):
    assessment_name: str
    company: str
    expires_at: dt.datetime


class AcceptedInvite(BaseModel):
    session_id: str
    control_url: str
    sandbox_token: str = Field(description="mxs_…: the candidate's credential, shown once")
    candidate_token: str = Field(
        description="mxc_…: the candidate's own token for /v1/auth/me (export, deletion)"
    )
    deadline_at: dt.datetime
