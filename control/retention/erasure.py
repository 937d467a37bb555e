"""Erasing a candidate and anonymising a tenant, each audited on the caller's connection.

Both run inside a retention batch (control/retention/worker.py); each domain's store does
its own part.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncConnection

from control.audit import store as audit
from control.audit.actions import ActorType, AuditAction
from control.audit.store import Actor, subject_of
from control.candidates import store as candidate_store
from control.email import store as email_store
from control.invites import store as invite_store
from control.members import store as member_store
from control.sessions import store as session_store
from control.tenants import store as tenant_store

SYSTEM = Actor(ActorType.SYSTEM, "retention")


async def erase_candidate(
    conn: AsyncConnection,
    candidate_id: str,
    *,
    reason: str,
    now: dt.datetime,
    noticed_before: dt.datetime | None = None,
) -> bool:
    """Delete a candidate and every trace of their email; False if there was nothing to do
    (already erased, or, with `noticed_before`, they signed in since their notice)."""
    email = await candidate_store.email_of(conn, candidate_id)
    if email is None:
        return False
    tenant_ids = await session_store.tenants_of_candidate(conn, candidate_id)
    # The candidate row goes first: if it is no longer due, nothing else changes. Its
    # erasure key goes with it, leaving the sealed IPs in audit rows unreadable.
    if not await candidate_store.delete_candidate(
        conn, candidate_id, noticed_before=noticed_before
    ):
        return False
    # Their subject key too: their address and browser in audit rows become unreadable.
    await audit.erase_subjects(conn, [subject_of("candidate", candidate_id)])
    await invite_store.erase_candidate_email(conn, email)
    await email_store.delete_to(conn, email)
    for tenant_id in [*sorted(tenant_ids), None]:  # chain heads in one order: no deadlock
        await audit.record(
            conn,
            SYSTEM,
            AuditAction.CANDIDATE_ERASE,
            tenant_id=tenant_id,
            target_type="candidate",
            target_id=candidate_id,
            details={"reason": reason},
            now=now,
        )
    return True


async def anonymise_tenant(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    now: dt.datetime,
    closed_before: dt.datetime | None = None,
) -> bool:
    """Replace the tenant's name, erase its members' and invitees' emails, destroy the
    tenant's and its members' subject keys and drop its outbox; False if it is not (or no
    longer) due."""
    if not await tenant_store.anonymise_tenant(
        conn, tenant_id, now=now, closed_before=closed_before
    ):
        return False
    # The keys of the tenant (its name) and of its members (their addresses, browsers and
    # identity-provider ids) go: those fields in its audit rows become unreadable.
    member_ids = await member_store.member_ids_of(conn, tenant_id)
    await audit.erase_subjects(
        conn,
        [subject_of("tenant", tenant_id), *(subject_of("member", m) for m in member_ids)],
    )
    members = await member_store.anonymise_members(conn, tenant_id, now=now)
    invited = await invite_store.erase_emails_of_tenant(conn, tenant_id)
    await email_store.delete_of_tenant(conn, tenant_id)
    await audit.record(
        conn,
        SYSTEM,
        AuditAction.TENANT_ANONYMISE,
        tenant_id=tenant_id,
        target_type="tenant",
        target_id=tenant_id,
        details={"members": members, "invites": invited},
        now=now,
    )
    return True
