"""Signing members in through the identity provider, and out again, each audited."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor, subject_of
from control.identity import store
from control.identity.oidc import Identity
from control.identity.store import IssuedSession
from control.members import store as member_store
from control.members.schemas import normalise_email
from control.members.store import MemberRecord
from control.web.errors import ApiError, unauthenticated
from core.tokens import TokenKind, token_kind


def _only_membership(found: list[MemberRecord]) -> MemberRecord:
    if not found:
        raise ApiError(403, "permission_error", "this identity is not a member of any tenant")
    if len(found) > 1:
        raise ApiError(
            409,
            "conflict_error",
            "this identity belongs to several tenants: name one in tenant_id "
            f"({', '.join(sorted(member.tenant_id for member in found))})",
        )
    return found[0]


async def sign_in(
    engine: AsyncEngine,
    identity: Identity,
    actor: Actor,
    *,
    tenant_id: str | None,
    previous_cookie: str | None,
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> tuple[MemberRecord, IssuedSession]:
    """A new browser session for the member this verified identity is (in `tenant_id`, if
    it belongs to several tenants). `actor` is the request's; its id becomes the member's."""
    # An identity provider that does not say the email is verified has not verified it.
    if identity.email is None or identity.email_verified is not True:
        raise unauthenticated("identity token refused: it carries no verified email")
    email = normalise_email(identity.email)
    async with engine.begin() as conn:
        member = _only_membership(
            await member_store.find_active_by_email_anywhere(conn, email, tenant_id)
        )
        issued = await _new_session(
            conn, member, identity.subject, previous_cookie, lifetime=lifetime, now=now
        )
        await audit.record(
            conn,
            dataclasses.replace(actor, id=member.id),
            AuditAction.AUTH_HANDOFF,
            tenant_id=member.tenant_id,
            target_type="member",
            target_id=member.id,
            details={"expires_at": issued.expires_at.isoformat()},
            personal={"subject": identity.subject},
            subject=subject_of("member", member.id),
        )
    return member, issued


async def _new_session(
    conn: AsyncConnection,
    member: MemberRecord,
    subject: str | None,
    previous_cookie: str | None,
    *,
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> IssuedSession:
    """A new browser session for the member; a cookie from before is replaced, never
    extended (no session fixation)."""
    if previous_cookie:
        old = await store.find_live(conn, previous_cookie, now)
        if old is not None:
            await store.revoke(conn, old.token_hash, "replaced", now)
    return await store.issue(
        conn,
        member_id=member.id,
        tenant_id=member.tenant_id,
        role=member.role,
        subject=subject,
        lifetime=lifetime,
        now=now,
    )


async def sign_out(
    engine: AsyncEngine,
    actor: Actor,
    *,
    tenant_id: str,
    member_id: str | None,
    session_hash: str,
    now: dt.datetime,
) -> None:
    async with engine.begin() as conn:
        await store.revoke(conn, session_hash, "logout", now)
        await audit.record(
            conn,
            actor,
            AuditAction.AUTH_LOGOUT,
            tenant_id=tenant_id,
            target_type="member",
            target_id=member_id,
        )


LOGIN_LINK_LIFETIME = dt.timedelta(minutes=15)


@dataclasses.dataclass(frozen=True, slots=True)
class LoginLink:
    token: str = dataclasses.field(repr=False)
    member_id: str
    tenant_id: str
    expires_at: dt.datetime


async def issue_login_link(
    engine: AsyncEngine, actor: Actor, *, email: str, tenant_id: str | None, now: dt.datetime
) -> LoginLink:
    """A one-time, short-lived console sign-in link for the member with this email (in
    `tenant_id`, if the email belongs to several tenants), for sign-in without an identity
    provider. Audited; the token is stored only as a hash."""
    async with engine.begin() as conn:
        member = _only_membership(
            await member_store.find_active_by_email_anywhere(
                conn, normalise_email(email), tenant_id
            )
        )
        token, expires_at = await store.insert_login_link(
            conn,
            member_id=member.id,
            tenant_id=member.tenant_id,
            lifetime=LOGIN_LINK_LIFETIME,
            now=now,
        )
        await audit.record(
            conn,
            actor,
            AuditAction.AUTH_LOGIN_LINK,
            tenant_id=member.tenant_id,
            target_type="member",
            target_id=member.id,
            details={"expires_at": expires_at.isoformat()},
            now=now,
        )
    return LoginLink(token, member.id, member.tenant_id, expires_at)


async def sign_in_with_link(
    engine: AsyncEngine,
    token: str,
    actor: Actor,
    *,
    previous_cookie: str | None,
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> tuple[MemberRecord, IssuedSession]:
    """Spend a login link (once, before it expires) for a new browser session."""
    refused = unauthenticated(
        "this sign-in link is unknown, used or expired: ask for a new one", realm="metrux"
    )
    if token_kind(token) is not TokenKind.LOGIN_LINK:
        raise refused
    async with engine.begin() as conn:
        spent = await store.use_login_link(conn, token, now)
        if spent is None:
            raise refused
        member_id, tenant_id = spent
        record = await member_store.get_member(conn, tenant_id, member_id)
        active = (
            await member_store.find_active_by_email_anywhere(conn, record.email, tenant_id)
            if record is not None
            else []
        )
        member = next((m for m in active if m.id == member_id), None)
        if member is None:  # revoked, or the tenant closed, since the link was made
            raise refused
        issued = await _new_session(conn, member, None, previous_cookie, lifetime=lifetime, now=now)
        await audit.record(
            conn,
            dataclasses.replace(actor, id=member.id),
            AuditAction.AUTH_LOGIN,
            tenant_id=member.tenant_id,
            target_type="member",
            target_id=member.id,
            details={"via": "login_link", "expires_at": issued.expires_at.isoformat()},
            now=now,
        )
    return member, issued
