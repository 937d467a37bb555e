"""Request and response bodies for /v1/members."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from control.web.endpoint import Role

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{2,63}$")


def normalise_email(value: str) -> str:
    value = value.strip().lower()
    if not _EMAIL.match(value):
        raise ValueError("must be an email address")
    return value


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320)
    role: Role = Field(description="owner, admin or reviewer")

    _email = field_validator("email")(normalise_email)


class MemberRoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role = Field(description="owner, admin or reviewer")


class MemberOut(BaseModel):
    id: str
    email: str
    role: Role
    created_at: dt.datetime
    created_by: str | None
    revoked_at: dt.datetime | None


class NewMemberOut(MemberOut):
    token: str = Field(description="the member's API token (mxk_…); shown once, store it now")


class MemberList(BaseModel):
    members: list[MemberOut]
