"""Signals from the control plane to a session's proxy, and the states that mean "stop"."""

from __future__ import annotations

from enum import StrEnum


class Signal(StrEnum):
    CLEAR = "clear"
    END = "end"
    REVOKE = "revoke"
    GRADING_COMPLETE = "grading_complete"
    SUBMIT = "submit"  # not a stop: the candidate's token is retired, the grader's works on
    GRADER = "grader"  # not a stop: a new grader token was issued; re-read its hash


# Session states in which a proxy may hold the key and forward calls.
LIVE_STATES = frozenset({"issued", "active", "submitted", "grading"})
# Live states in which only the grader's token is accepted.
GRADING_STATES = frozenset({"submitted", "grading"})
