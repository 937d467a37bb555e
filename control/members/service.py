"""Members: create (with a one-time API token), list, change role, revoke; role rules and
audit.

Rules: nobody grants a role above their own; nobody revokes or re-roles a member above
their own role; the last active owner can be neither revoked nor demoted (a tenant must
never be left without one).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.members import store
from control.members.store import MemberRecord
from control.web.endpoint import ROLE_RANK, Role
from control.web.errors import ApiError, not_found
from core.tokens import TokenKind, hash_token, new_token


@dataclasses.dataclass(frozen=True, slots=True)
class NewMember:
    member: MemberRecord
    token: str  # shown once; only its hash is stored

    def __repr__(self) -> str:
        return f"<NewMember {self.member.id}>"


async def add_member(
    conn: AsyncConnection,
    actor: Actor,
    *,
    tenant_id: str,
    email: str,
    role: Role,
    now: dt.datetime,
) -> NewMember:
    """Insert a member and its audit row on `conn` (the caller owns the transaction)."""
    token = new_token(TokenKind.MEMBER)
    try:
        member = await store.insert_member(
            conn,
            member_id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            email=email,
            role=role.value,
            token_hash=hash_token(token),
            created_by=actor.id,
            now=now,
        )
    except store.DuplicateMember:
        raise ApiError(409, "conflict_error", "an active member with this email exists") from None
    await audit.record(
        conn,
        actor,
        AuditAction.MEMBER_CREATE,
        tenant_id=tenant_id,
        target_type="member",
        target_id=member.id,
        details={"role": role.value},  # no email: audit rows are never anonymised
        now=now,
    )
    return NewMember(member=member, token=token)


async def create_member(
    engine: AsyncEngine,
    actor: Actor,
    actor_role: Role,
    *,
    tenant_id: str,
    email: str,
    role: Role,
    now: dt.datetime | None = None,
) -> NewMember:
    if ROLE_RANK[role] > ROLE_RANK[actor_role]:
        raise ApiError(403, "permission_error", f"a {actor_role.value} cannot grant {role.value}")
    async with engine.begin() as conn:
        return await add_member(
            conn, actor, tenant_id=tenant_id, email=email, role=role,
            now=now or dt.datetime.now(dt.UTC),
        )  # fmt: skip


async def revoke_member(
    engine: AsyncEngine,
    actor: Actor,
    actor_role: Role,
    *,
    tenant_id: str,
    member_id: str,
    now: dt.datetime | None = None,
) -> MemberRecord:
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        await store.lock_tenant(conn, tenant_id)  # serialises the last-owner check
        member = await store.get_member(conn, tenant_id, member_id)
        if member is None:
            raise not_found("member")
        if member.revoked_at is not None:
            return member
        if ROLE_RANK[Role(member.role)] > ROLE_RANK[actor_role]:
            raise ApiError(403, "permission_error", f"a {actor_role.value} cannot revoke an owner")
        if member.role == Role.OWNER and await store.count_active_owners(conn, tenant_id) <= 1:
            raise ApiError(409, "conflict_error", "cannot revoke the tenant's last owner")
        revoked = await store.revoke_member(conn, tenant_id, member_id, now=now)
        assert revoked is not None  # same transaction; the row was live just above
        await audit.record(
            conn,
            actor,
            AuditAction.MEMBER_REVOKE,
            tenant_id=tenant_id,
            target_type="member",
            target_id=member_id,
            details={"role": member.role},
            now=now,
        )
    return revoked


async def change_role(
    engine: AsyncEngine,
    actor: Actor,
    actor_role: Role,
    *,
    tenant_id: str,
    member_id: str,
    role: Role,
    now: dt.datetime | None = None,
) -> MemberRecord:
    """Give an active member another role. Their browser sessions are rotated at their next
    request (control/identity/middleware.py); their API token carries the new role at once."""
    now = now or dt.datetime.now(dt.UTC)
    if ROLE_RANK[role] > ROLE_RANK[actor_role]:
        raise ApiError(403, "permission_error", f"a {actor_role.value} cannot grant {role.value}")
    async with engine.begin() as conn:
        await store.lock_tenant(conn, tenant_id)  # serialises the last-owner check
        member = await store.get_member(conn, tenant_id, member_id)
        if member is None or member.revoked_at is not None:
            raise not_found("member")
        if ROLE_RANK[Role(member.role)] > ROLE_RANK[actor_role]:
            raise ApiError(
                403, "permission_error", f"a {actor_role.value} cannot change an {member.role}"
            )
        if member.role == role.value:
            return member
        if member.role == Role.OWNER and await store.count_active_owners(conn, tenant_id) <= 1:
            raise ApiError(409, "conflict_error", "cannot demote the tenant's last owner")
        changed = await store.set_role(conn, tenant_id, member_id, role.value)
        assert changed is not None  # same transaction; the row was live just above
        await audit.record(
            conn,
            actor,
            AuditAction.MEMBER_ROLE,
            tenant_id=tenant_id,
            target_type="member",
            target_id=member_id,
            details={"from": member.role, "to": role.value},
            now=now,
        )
    return changed


async def require_member(engine: AsyncEngine, tenant_id: str, member_id: str) -> MemberRecord:
    """The tenant's member with this id, or 404: checked before a request's body is, so
    another tenant's ids read as absent whatever the body holds."""
    async with engine.connect() as conn:
        member = await store.get_member(conn, tenant_id, member_id)
    if member is None:
        raise not_found("member")
    return member
