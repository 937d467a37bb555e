"""The audit vocabulary: "subject:action" tags (one per kind of event)."""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    TENANT_CREATE = "tenant:create"
    MEMBER_CREATE = "member:create"
    MEMBER_REVOKE = "member:revoke"
    KEY_UPLOAD = "key:upload"
    KEY_REVOKE = "key:revoke"
    KEY_UNWRAP = "key:unwrap"
    KEY_STATUS = "key:status"
    KEY_DEFAULT = "key:default"
    SESSION_CREATE = "session:create"
    SESSION_END = "session:end"
    SESSION_GRADING_COMPLETE = "session:grading_complete"
    SESSION_REVOKE = "session:revoke"
    SESSION_EXPIRE = "session:expire"
    SESSION_SUBMIT = "session:submit"
    SESSION_RECONNECT = "session:reconnect"
    SESSION_GRADER_TOKEN = "session:grader_token"
    INVITE_CREATE = "invite:create"
    INVITE_ACCEPT = "invite:accept"


class ActorType(StrEnum):
    MEMBER = "member"
    OPERATOR = "operator"  # a person at a shell running `metrux control …`
    SYSTEM = "system"  # the service itself (jobs, workers)
    PROXY = "proxy"
    CANDIDATE = "candidate"
