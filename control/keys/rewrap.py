"""Key-encryption-key rotation: re-wrap every stored data key under a new KEK.

Only the data keys change: each is unwrapped with the KEK that wrapped it and wrapped
again under the target, and the customer key's ciphertext stays as it is. The services
keep running meanwhile: they hold a KekRing that reads both KEKs, and each row moves in
one conditional UPDATE, so an attach reads either the old blob or the new one, never a
mix. Rows already under the target are skipped, so an interrupted run just runs again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.keys import store
from core.crypto.envelope import KeyContext
from core.crypto.provider import KekProvider


@dataclasses.dataclass
class RewrapReport:
    rewrapped: int = 0
    already_current: int = 0
    changed_meanwhile: int = 0  # revoked or re-wrapped by someone else during the run


async def rewrap_all(
    engine: AsyncEngine, kek: KekProvider, actor: Actor, *, batch: int = 100
) -> RewrapReport:
    """Move every live key's data key under `kek`'s primary KEK (`kek` must also be able
    to read the KEKs the keys are under now)."""
    report = RewrapReport()
    after = ""
    while True:
        async with engine.connect() as conn:
            rows = await store.live_data_keys(conn, after=after, limit=batch)
        if not rows:
            return report
        after = rows[-1].id
        for row in rows:
            if await kek.is_current(row.kek_id):
                report.already_current += 1
                continue
            context = KeyContext(
                tenant_id=row.tenant_id, key_id=row.id, version=row.format_version
            ).as_dict()
            data_key = await kek.decrypt_data_key(row.encrypted_data_key, context, row.kek_id)
            try:
                encrypted = await kek.encrypt_data_key(data_key, context)
            finally:
                data_key[:] = bytes(len(data_key))
            new_kek_id = kek.kek_id
            now = dt.datetime.now(dt.UTC)
            async with engine.begin() as conn:
                moved = await store.replace_data_key(
                    conn, row, kek_id=new_kek_id, encrypted_data_key=encrypted
                )
                if not moved:
                    report.changed_meanwhile += 1
                    continue
                await audit.record(
                    conn,
                    actor,
                    AuditAction.KEY_REWRAP,
                    tenant_id=row.tenant_id,
                    target_type="api_key",
                    target_id=row.id,
                    details={"from": row.kek_id, "to": new_kek_id},
                    now=now,
                )
            report.rewrapped += 1
