"""The retention table: how long each kind of data is kept, in one place.

The worker (control/retention/worker.py) reads its periods from here, and
`metrux control retention doc` renders this table into docs/retention.md, which a test keeps
equal to the rendering, so the document cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

DAY = dt.timedelta(days=1)

SESSION_SOFT_DELETE = 180 * DAY  # after the session completes
SESSION_HARD_DELETE = SESSION_SOFT_DELETE + 30 * DAY  # 30 days after the soft delete
CANDIDATE_INACTIVITY = 730 * DAY  # 2 years without sign-in or invite
CANDIDATE_NOTICE = 30 * DAY  # from the pre-deletion notice to the deletion
DELETION_REQUEST_WINDOW = 30 * DAY  # a self-serve request is carried out within this
TENANT_GRACE = 30 * DAY  # after closure, then anonymised
USAGE_DEAD_LETTERS = 30 * DAY  # usage records the database refused, kept for diagnosis
INVITE_EMAIL = 30 * DAY  # after an unaccepted invite expires, its address is erased
OUTBOX_UNDELIVERED = 30 * DAY  # an outbox message nobody handed over is purged
AUDIT_TARGET = 730 * DAY  # in the primary database (METRUX_AUDIT_RETENTION_DAYS), then archived


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    data: str
    keep: str
    then: str
    enforced_by: str


def _days(period: dt.timedelta) -> str:
    return f"{period.days} days"


RULES: tuple[Rule, ...] = (
    Rule(
        data="Session data: the session row, its usage records (counts, timings, SHA-256 "
        "digests) and its lifecycle state",
        keep=f"until {_days(SESSION_SOFT_DELETE)} after the session completes (ended, "
        "expired, revoked or graded)",
        then=f"soft-deleted (no longer returned by the API); hard-deleted "
        f"{_days(SESSION_HARD_DELETE - SESSION_SOFT_DELETE)} later, "
        f"{_days(SESSION_HARD_DELETE)} after completion",
        enforced_by="retention worker: `retention:sessions_soft_delete`, "
        "`retention:sessions_hard_delete`",
    ),
    Rule(
        data="Candidate profile: email, candidate token, erasure key",
        keep=f"while active; inactive means {_days(CANDIDATE_INACTIVITY)} without a sign-in "
        "(any use of the candidate token) or an invite",
        then=f"a pre-deletion notice by email (none to a candidate who already asked to be "
        f"deleted); without a sign-in within {_days(CANDIDATE_NOTICE)}, the candidate is "
        "deleted. A sign-in or a new invite cancels the notice",
        enforced_by="retention worker: `candidate:deletion_notice`, `candidate:erase`",
    ),
    Rule(
        data="Self-serve deletion (`POST /v1/auth/me/delete-request`)",
        keep=f"the request is answered with a due date {_days(DELETION_REQUEST_WINDOW)} ahead",
        then="carried out at the worker's next run: the candidate row, token and erasure key "
        "are deleted (their sealed IPs and user agents in audit rows become unreadable), "
        "their email is removed from invites and the email outbox, sessions keep "
        "de-identified counts",
        enforced_by="retention worker: `candidate:erase` (reason `deletion_request`)",
    ),
    Rule(
        data="Company (tenant) data: name, members, invites, email outbox",
        keep=f"for the contract, plus {_days(TENANT_GRACE)} after closure",
        then="anonymised: name and member emails replaced, member tokens unusable, invite "
        "emails removed, outbox rows deleted",
        enforced_by="retention worker: `tenant:anonymise`",
    ),
    Rule(
        data="Invites nobody accepted: the invitee's email address",
        keep=f"until {_days(INVITE_EMAIL)} after the invite expires",
        then="the address is erased (the invite keeps its assessment, dates and limits); an "
        "accepted invite's address goes with the candidate",
        enforced_by="retention worker (counted as `invite_emails_erased`)",
    ),
    Rule(
        data="Email outbox (no email provider set): address, subject, body with links",
        keep="until `metrux control outbox` hands it over; then its links are kept only as "
        f"hashes. Undelivered: {_days(OUTBOX_UNDELIVERED)}",
        then="deleted: delivered messages at the worker's next run, undelivered ones "
        f"{_days(OUTBOX_UNDELIVERED)} after they were queued",
        enforced_by="retention worker (counted as `outbox_delivered_deleted`, "
        "`outbox_undelivered_deleted`)",
    ),
    Rule(
        data="Customer's wrapped Anthropic keys",
        keep="while the tenant is open and the key is not revoked",
        then="destroyed (the wrapped blob is deleted) at revocation or at tenant closure",
        enforced_by="`metrux control close-tenant` (`key:revoke`); the retention worker "
        "destroys any left on a closed tenant",
    ),
    Rule(
        data="Usage records the database refused (`metrux control usage dead-letters`): "
        "counts, timings, ids and digests, with the reason",
        keep=f"{_days(USAGE_DEAD_LETTERS)}",
        then="deleted",
        enforced_by="retention worker (counted as `usage_dead_letters_deleted`)",
    ),
    Rule(
        data="Audit events",
        keep=f"in the database for {_days(AUDIT_TARGET)} (`METRUX_AUDIT_RETENTION_DAYS`, never "
        "less than the database's own floor, `metrux control audit retention-floor`); never "
        "updated, and deleted only by the archival path",
        then="archived to object storage (S3-compatible, Object Lock where the bucket has "
        "it; the data directory by default) as compressed JSON lines carrying their hash "
        "chain, then removed; `metrux control audit verify` still verifies from the first "
        "row. When a session or candidate is hard-deleted, their rows keep the id as text",
        enforced_by="retention worker (counted as `audit_rows_archived`; `audit:archive` "
        "rows); database triggers (migrations 0002, 0015)",
    ),
)


def render_markdown() -> str:
    lines = [
        "# Retention",
        "",
        "<!-- Generated from control/retention/rules.py by "
        "`metrux control retention doc`; do not edit. -->",
        "",
        "What the service keeps, for how long, and what happens then. The retention worker",
        "(`metrux control retention run`, scheduled hourly inside `metrux control serve` and",
        "`metrux up`) enforces every rule; each of its actions is audited with counts.",
        "",
        "| data | kept | then | enforced by |",
        "|---|---|---|---|",
    ]
    for rule in RULES:
        lines.append(f"| {rule.data} | {rule.keep} | {rule.then} | {rule.enforced_by} |")
    lines += [
        "",
        "Application logs and backups age out on the deployment's own schedule; they are not",
        "in the primary database.",
        "",
    ]
    return "\n".join(lines)
