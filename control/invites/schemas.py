"""Request and response bodies for /v1/invites."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, field_validator

from control.members.schemas import normalise_email
from control.sessions.schemas import SessionLimits


class InviteCreate(SessionLimits):
    candidate_email: str = Field(max_length=320)
    assessment_name: str = Field(min_length=1, max_length=200)
    expires_in_hours: int = Field(168, ge=1, le=24 * 30, description="default 7 days")
    session_minutes: int = Field(180, ge=5, le=24 * 60, description="session length once accepted")

    _email = field_validator("candidate_email")(normalise_email)


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
