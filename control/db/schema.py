"""Every table of the control plane, in one MetaData (SQLAlchemy Core).

The Alembic revisions under control/migrations create these tables; a test checks that the
migrated database and this module agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

ROLES = ("owner", "admin", "reviewer")
KEY_STATUSES = ("valid", "unverified", "invalid", "revoked")
SESSION_STATES = (
    "issued",
    "active",
    "submitted",
    "grading",
    "graded",
    "ended",
    "expired",
    "revoked",
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both dialects (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _id(name: str = "id", *args: Any, **kwargs: Any) -> Column[str]:
    return Column(name, String(36), *args, **kwargs)


def _role_check(column: str) -> CheckConstraint:
    return CheckConstraint(
        f"{column} IN ({', '.join(repr(r) for r in ROLES)})", name=f"{column}_valid"
    )


tenants = Table(
    "tenants",
    metadata,
    _id(primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),
    Column("anonymised_at", UTCDateTime),
)

members = Table(
    "members",
    metadata,
    _id(primary_key=True),
    _id("tenant_id", ForeignKey("tenants.id"), nullable=False, index=True),
    Column("email", String(320), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(100)),
    Column("revoked_at", UTCDateTime),
    _role_check("role"),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id(primary_key=True),
    _id("tenant_id", ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(100)),
    # The wrapped blob (core.crypto.envelope.WrappedKey); NULL once revoked (crypto-shredded).
    Column("kek_id", String(200)),
    Column("encrypted_data_key", LargeBinary),
    Column("nonce", LargeBinary),
    Column("ciphertext", LargeBinary),
    Column("format_version", Integer, nullable=False),
    Column("last_four", String(4), nullable=False),
    Column("fingerprint", String(80), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(100)),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", String(100)),
    # Health, as Anthropic last answered (control/keys/health.py).
    Column("status", String(16), nullable=False, server_default="unverified"),
    Column("status_reason", String(64)),
    Column("last_checked_at", UTCDateTime),
    Column("next_check_at", UTCDateTime, index=True),
    Column("check_attempts", Integer, nullable=False, server_default="0"),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    # Enforced on Postgres only: SQLite cannot add a CHECK to an existing table without
    # rebuilding it, and api_keys is referenced by sessions.
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in KEY_STATUSES)})", name="status_valid"),
    # At most one default key per tenant.
    Index(
        "uq_api_keys_default",
        "tenant_id",
        unique=True,
        sqlite_where=text("is_default"),
        postgresql_where=text("is_default"),
    ),
    # One live copy of a key per tenant.
    Index(
        "uq_api_keys_live_fingerprint",
        "tenant_id",
        "fingerprint",
        unique=True,
        sqlite_where=text("revoked_at IS NULL"),
        postgresql_where=text("revoked_at IS NULL"),
    ),
)

candidates = Table(
    "candidates",
    metadata,
    _id(primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    # Last sign-in or invite: the start of the 2-year inactivity clock (control/retention).
    Column("last_active_at", UTCDateTime),
    Column("token_hash", String(64)),  # mxc_: the candidate's own API token
    # Seals this candidate's IP and user agent in audit rows; deleted with the candidate,
    # which leaves those sealed values unreadable (the rows themselves never change).
    Column("erasure_key", LargeBinary),
    Column("deletion_notice_at", UTCDateTime),
    Index("uq_candidates_token_hash", "token_hash", unique=True),
)

sessions = Table(
    "sessions",
    metadata,
    _id(primary_key=True),
    _id("tenant_id", ForeignKey("tenants.id"), nullable=False, index=True),
    _id("candidate_id", ForeignKey("candidates.id", ondelete="SET NULL"), index=True),
    _id("api_key_id", ForeignKey("api_keys.id"), index=True),
    Column("state", String(16), nullable=False),
    Column("token_hash", String(64), unique=True),
    Column("grader_token_hash", String(64)),
    Column("bootstrap_token_hash", String(64), unique=True),
    Column("bootstrap_used_at", UTCDateTime),
    # The number of the latest attach; its proxy_credentials row is the live one.
    Column("proxy_epoch", Integer, nullable=False, server_default="0"),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("max_requests", Integer),
    Column("max_output_tokens", Integer),
    Column("allowed_models", JSON),
    Column("allowed_betas", JSON),  # anthropic-beta values the proxy passes; NULL: all
    Column("allowed_server_tools", JSON),  # server-side tools a call may use; NULL: all
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(100)),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, index=True),
    Column("soft_deleted_at", UTCDateTime),  # hidden from the API; hard-deleted later
    CheckConstraint(f"state IN ({', '.join(repr(s) for s in SESSION_STATES)})", name="state_valid"),
    Index("uq_sessions_grader_token_hash", "grader_token_hash", unique=True),
)

# An attached proxy's credential (mxp_, hashed), one per attach. The next attach fences it:
# a fenced proxy is told to stop and may only deliver records of calls started before.
proxy_credentials = Table(
    "proxy_credentials",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    _id("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("epoch", Integer, nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("fenced_at", UTCDateTime),
)

# Append-only: database triggers (migration 0002) refuse UPDATE and DELETE, except the
# ON DELETE SET NULL of session_id / candidate_id when that session or candidate is
# hard-deleted; the *_text columns keep the ids.
audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("occurred_at", UTCDateTime, nullable=False),
    _id("tenant_id"),
    Column("actor_type", String(20), nullable=False),
    Column("actor_id", String(100)),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("target_type", String(32)),
    Column("target_id", String(100)),
    _id("session_id", ForeignKey("sessions.id", ondelete="SET NULL")),
    _id("session_id_text"),
    _id("candidate_id", ForeignKey("candidates.id", ondelete="SET NULL")),
    _id("candidate_id_text"),
    Column("ip", String(64)),
    Column("user_agent", String(512)),
    # A candidate's own IP and user agent, sealed under their erasure key (never in ip).
    Column("ip_sealed", LargeBinary),
    Column("user_agent_sealed", LargeBinary),
    Column("request_id", String(64)),
    Column("details", Text, nullable=False),
    # Personal data, sealed under its data subject's key (control/audit/sealing.py): the
    # actor's IP and user agent, and the personal fields of details.
    Column("actor_subject", String(80)),
    Column("actor_sealed", LargeBinary),
    Column("details_subject", String(80)),
    Column("details_sealed", LargeBinary),
    # The row's place in its tenant's hash chain (control/audit/chain.py).
    Column("chain", String(36)),
    Column("chain_seq", BigInteger),
    Column("prev_hash", String(64)),
    Column("row_hash", String(64)),
    # Backstop behind redaction: no Anthropic key shape ever lands in an audit row.
    CheckConstraint("details NOT LIKE '%sk-ant-%'", name="details_no_anthropic_key"),
    Index("ix_audit_events_tenant_id_id", "tenant_id", "id"),
    Index("uq_audit_events_chain_seq", "chain", "chain_seq", unique=True),
)

# One-time sign-in links for the console (`metrux control login-link`): the token's hash,
# whose link it is, and when it was used (once) or expires (minutes after it is made).
login_links = Table(
    "login_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    _id("member_id", ForeignKey("members.id", ondelete="CASCADE"), nullable=False, index=True),
    _id("tenant_id", nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)

# Each data subject's key for the personal fields of audit rows: `candidate:<id>`,
# `member:<id>`, `tenant:<id>`, `operator:<id>`. Erasing the subject deletes the key, and
# their fields in rows that never change become unreadable (crypto-shredding).
subject_keys = Table(
    "subject_keys",
    metadata,
    Column("subject", String(80), primary_key=True),
    Column("key", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# The audit retention floor in days: rows older than this, once archived, are the only ones
# the database lets anyone delete (migration 0015). It only rises, short of the owner.
audit_policy = Table(
    "audit_policy",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("retention_days", Integer, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("retention_days >= 1", name="positive_days"),
)

# Each audit chain's head: its newest row's seq and hash, taken (row-locked) by every
# append, and where the chain starts once older rows are archived.
audit_chains = Table(
    "audit_chains",
    metadata,
    Column("chain", String(36), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("base_seq", BigInteger, nullable=False),
    Column("base_hash", String(64), nullable=False),
)

# One row per upstream call (core.usage.UsageRecord), ingested idempotently by record_id.
usage_records = Table(
    "usage_records",
    metadata,
    Column("record_id", String(64), primary_key=True),
    Column("session_id", String(36), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", String(36), nullable=False),
    Column("actor", String(16), nullable=False),
    Column("method", String(8), nullable=False),
    Column("endpoint", String(200), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("http_status", Integer),
    Column("complete", Boolean, nullable=False),
    Column("model_requested", String(200)),
    Column("model_served", String(200)),
    Column("upstream_request_id", String(200)),
    Column("stop_reason", String(64)),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("cache_creation_input_tokens", Integer),
    Column("cache_read_input_tokens", Integer),
    Column("reserved_output_tokens", Integer),  # the proxy's reservation (max_tokens)
    Column("usage", JSON),
    Column("ttfb_ms", Float),
    Column("latency_ms", Float),
    Column("bytes_in", BigInteger, nullable=False),
    Column("bytes_out", BigInteger, nullable=False),
    Column("request_sha256", String(64)),
    Column("system_sha256", String(64)),
    Column("message_sha256s", JSON),
    Column("response_sha256", String(64)),
    Column("response_content_sha256", String(64)),
    Column("error_type", String(64)),
    Column("ingested_at", UTCDateTime, nullable=False),
    # The transcript digest chain (core/transcript.py).
    Column("chain_seq", Integer),
    Column("chain_prev", String(64)),
    Column("chain_link", String(64)),
    Index("ix_usage_records_session_id_started_at", "session_id", "started_at"),
    Index("ix_usage_records_session_id_chain_seq", "session_id", "chain_seq"),
)

# Single-use invitations: accepting one creates (or reuses) the candidate and issues a session.
invites = Table(
    "invites",
    metadata,
    _id(primary_key=True),
    _id("tenant_id", ForeignKey("tenants.id"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("candidate_email", String(320), nullable=False),
    Column("assessment_name", String(200), nullable=False),
    Column("session_minutes", Integer, nullable=False),
    Column("max_requests", Integer),
    Column("max_output_tokens", Integer),
    Column("allowed_models", JSON),
    Column("allowed_betas", JSON),
    Column("allowed_server_tools", JSON),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(100)),
    Column("accepted_at", UTCDateTime),
    _id("session_id", ForeignKey("sessions.id", ondelete="SET NULL")),
    # Set when retention erased the address of an invite nobody accepted.
    Column("email_erased_at", UTCDateTime),
)

# Usage records the database would not take, each with why: the rest of its batch is
# stored, and an operator reads these with `metrux control usage dead-letters`. The payload
# is the record as queued (counts, timings, ids, digests; never prompt text), bounded.
usage_dead_letters = Table(
    "usage_dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("stream_entry_id", String(64), nullable=False),
    Column("record_id", String(64)),
    _id("session_id"),
    _id("tenant_id"),
    Column("reason", String(500), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
)

# Emails waiting for an operator to deliver them, when no email provider is configured.
email_outbox = Table(
    "email_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _id("tenant_id"),
    Column("to_email", String(320), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Set when `metrux control outbox` printed it: its links are then stored as hashes.
    Column("delivered_at", UTCDateTime),
)

deletion_requests = Table(
    "deletion_requests",
    metadata,
    _id(primary_key=True),
    _id("candidate_id", ForeignKey("candidates.id", ondelete="SET NULL"), index=True),
    _id("candidate_id_text", nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
)

# Platform operators: read any tenant's data, each read audited in that tenant's log.
operators = Table(
    "operators",
    metadata,
    _id(primary_key=True),
    Column("email", String(320), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# Short-lived links to a session's HTML report (the token is in the URL once, then a cookie).
report_links = Table(
    "report_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    _id("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    _id("tenant_id", nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(100)),
)

# Browser sessions of members who signed in through the identity provider (OIDC handoff).
# Only hashes of the cookie and CSRF tokens are stored; revoking is setting revoked_at.
member_sessions = Table(
    "member_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    _id("member_id", ForeignKey("members.id", ondelete="CASCADE"), nullable=False, index=True),
    _id("tenant_id", nullable=False),
    Column("csrf_hash", String(64), nullable=False),
    Column("role", String(16), nullable=False),  # the role it was issued for
    Column("subject", String(255)),  # the identity provider's `sub`
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revoked_reason", String(32)),
)
