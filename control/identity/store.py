"""Members' browser sessions: issued by the identity handoff, carried in an HttpOnly
cookie, checked on every request, rotated when the member's role changes, revoked on
logout or when the member is revoked.

Each session has a CSRF token too (synchronizer pattern): cookie-authenticated requests
that change something must send it back in `X-CSRF-Token`. Only SHA-256 hashes of both
tokens are stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.schema import login_links, member_sessions, members, tenants
from core.tokens import TokenKind, hash_token, new_token, tokens_match


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedSession:
    token: str = dataclasses.field(repr=False)
    csrf_token: str = dataclasses.field(repr=False)
    expires_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class LiveSession:
    token_hash: str
    member_id: str
    tenant_id: str
    issued_role: str
    current_role: str
    csrf_hash: str
    expires_at: dt.datetime

    def csrf_matches(self, presented: str | None) -> bool:
        return bool(presented) and tokens_match(presented or "", self.csrf_hash)


async def issue(
    conn: AsyncConnection,
    *,
    member_id: str,
    tenant_id: str,
    role: str,
    subject: str | None,
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> IssuedSession:
    token, csrf = new_token(TokenKind.MEMBER_SESSION), new_token(TokenKind.CSRF)
    expires_at = now + lifetime
    await conn.execute(
        member_sessions.insert().values(
            token_hash=hash_token(token),
            member_id=member_id,
            tenant_id=tenant_id,
            csrf_hash=hash_token(csrf),
            role=role,
            subject=subject,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return IssuedSession(token, csrf, expires_at)


async def find_live(conn: AsyncConnection, token: str, now: dt.datetime) -> LiveSession | None:
    """The live session for a cookie value: not revoked, not expired, its member and
    tenant still active."""
    row = (
        await conn.execute(
            select(
                member_sessions.c.token_hash,
                member_sessions.c.member_id,
                member_sessions.c.tenant_id,
                member_sessions.c.role,
                member_sessions.c.csrf_hash,
                member_sessions.c.expires_at,
                members.c.role.label("current_role"),
            )
            .join(members, members.c.id == member_sessions.c.member_id)
            .join(tenants, tenants.c.id == member_sessions.c.tenant_id)
            .where(
                member_sessions.c.token_hash == hash_token(token),
                member_sessions.c.revoked_at.is_(None),
                member_sessions.c.expires_at > now,
                members.c.revoked_at.is_(None),
                tenants.c.closed_at.is_(None),
            )
        )
    ).first()
    if row is None:
        return None
    return LiveSession(
        token_hash=row.token_hash,
        member_id=row.member_id,
        tenant_id=row.tenant_id,
        issued_role=row.role,
        current_role=row.current_role,
        csrf_hash=row.csrf_hash,
        expires_at=row.expires_at,
    )


async def revoke(conn: AsyncConnection, token_hash: str, reason: str, now: dt.datetime) -> bool:
    result = await conn.execute(
        update(member_sessions)
        .where(member_sessions.c.token_hash == token_hash, member_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    return result.rowcount == 1


async def revoke_all_for_member(conn: AsyncConnection, member_id: str, now: dt.datetime) -> int:
    result = await conn.execute(
        update(member_sessions)
        .where(member_sessions.c.member_id == member_id, member_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="member_revoked")
    )
    return result.rowcount


# --- one-time sign-in links (`metrux control login-link`) ---------------------------------


async def insert_login_link(
    conn: AsyncConnection,
    *,
    member_id: str,
    tenant_id: str,
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> tuple[str, dt.datetime]:
    token = new_token(TokenKind.LOGIN_LINK)
    expires_at = now + lifetime
    await conn.execute(
        login_links.insert().values(
            token_hash=hash_token(token),
            member_id=member_id,
            tenant_id=tenant_id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return token, expires_at


async def use_login_link(
    conn: AsyncConnection, token: str, now: dt.datetime
) -> tuple[str, str] | None:
    """Spend a link: (member id, tenant id) once, while it is unexpired; None otherwise."""
    used = await conn.execute(
        update(login_links)
        .where(
            login_links.c.token_hash == hash_token(token),
            login_links.c.used_at.is_(None),
            login_links.c.expires_at > now,
        )
        .values(used_at=now)
        .returning(login_links.c.member_id, login_links.c.tenant_id)
    )
    row = used.first()
    return None if row is None else (row.member_id, row.tenant_id)
