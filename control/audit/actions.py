"""The audit vocabulary: "subject:action" tags (one per kind of event)."""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    TENANT_CREATE = "tenant:create"
    MEMBER_CREATE = "member:create"
    MEMBER_REVOKE = "member:revoke"
    MEMBER_ROLE = "member:role"
    KEY_UPLOAD = "key:upload"
    KEY_REVOKE = "key:revoke"
    KEY_UNWRAP = "key:unwrap"
    KEY_STATUS = "key:status"
    KEY_DEFAULT = "key:default"
    KEY_REWRAP = "key:rewrap"
    KEY_REFLECTED = "key:reflected"  # an upstream answer held the key; the proxy scrubbed it
    SESSION_CREATE = "session:create"
    SESSION_END = "session:end"
    SESSION_GRADING_COMPLETE = "session:grading_complete"
    SESSION_REVOKE = "session:revoke"
    SESSION_EXPIRE = "session:expire"
    SESSION_SUBMIT = "session:submit"
    SESSION_RECONNECT = "session:reconnect"  # before 0.2: the candidate's reconnect
    SESSION_BOOTSTRAP_TOKEN = "session:bootstrap_token"
    SESSION_GRADER_TOKEN = "session:grader_token"
    SESSION_SEAL = "session:seal"
    SESSION_REPORT_LINK = "session:report_link"
    INVITE_CREATE = "invite:create"
    INVITE_ACCEPT = "invite:accept"
    CANDIDATE_DELETE_REQUEST = "candidate:delete_request"
    CANDIDATE_ERASE = "candidate:erase"
    CANDIDATE_DELETION_NOTICE = "candidate:deletion_notice"
    TENANT_CLOSE = "tenant:close"
    TENANT_ANONYMISE = "tenant:anonymise"
    RETENTION_SESSIONS_SOFT_DELETE = "retention:sessions_soft_delete"
    RETENTION_SESSIONS_HARD_DELETE = "retention:sessions_hard_delete"
    OPERATOR_READ = "operator:read"
    OPERATOR_CREATE = "operator:create"
    IP_BLOCK = "ip:block"
    IP_UNBLOCK = "ip:unblock"
    AUTH_HANDOFF = "auth:handoff"
    AUTH_LOGOUT = "auth:logout"
    AUTH_LOGIN_LINK = "auth:login_link"  # a one-time console sign-in link was issued
    AUTH_LOGIN = "auth:login"  # a member signed in to the console with a login link
    AUDIT_RETENTION_FLOOR = "audit:retention_floor"
    AUDIT_ARCHIVE = "audit:archive"  # older rows moved to the archive (control/audit/archival.py)
    API_READ = "api:read"  # an authenticated member or operator read (control/audit/access.py)
    API_WRITE = "api:write"  # an authenticated member request that asked to change something


class ActorType(StrEnum):
    MEMBER = "member"
    OPERATOR = "operator"  # `metrux control …` at a shell, or a platform operator's token
    SYSTEM = "system"  # the service itself (jobs, workers)
    PROXY = "proxy"
    CANDIDATE = "candidate"
