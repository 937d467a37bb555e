"""The session state machine, as a pure transition table.

issued → active (first attach) → submitted (the candidate's submit) → graded (an owner or
admin's grading-complete), or ended / expired / revoked from any live state. Grading
completes only a submitted (or grading) session: a live session that was never submitted
is ended, not graded, and an ended one stays ended. Terminal states accept nothing.
"""

from __future__ import annotations

from enum import StrEnum

from core.signals import LIVE_STATES, Signal


class SessionState(StrEnum):
    ISSUED = "issued"
    ACTIVE = "active"
    SUBMITTED = "submitted"
    GRADING = "grading"
    GRADED = "graded"
    ENDED = "ended"
    EXPIRED = "expired"
    REVOKED = "revoked"


class SessionEvent(StrEnum):
    ATTACH = "attach"
    END = "end"
    GRADING_COMPLETE = "grading_complete"
    REVOKE = "revoke"
    EXPIRE = "expire"
    SUBMIT = "submit"


class InvalidTransition(Exception):
    def __init__(self, state: SessionState, event: SessionEvent) -> None:
        super().__init__(f"a session that is {state.value} cannot {event.value.replace('_', ' ')}")
        self.state = state
        self.event = event


_LIVE = frozenset(SessionState(s) for s in LIVE_STATES)

_TRANSITIONS: dict[SessionEvent, tuple[frozenset[SessionState], SessionState | None]] = {
    # ATTACH keeps a submitted/grading session's state (a grader's proxy attaches there).
    SessionEvent.ATTACH: (_LIVE, None),
    SessionEvent.END: (_LIVE, SessionState.ENDED),
    SessionEvent.GRADING_COMPLETE: (
        frozenset({SessionState.SUBMITTED, SessionState.GRADING}),
        SessionState.GRADED,
    ),
    SessionEvent.REVOKE: (_LIVE, SessionState.REVOKED),
    SessionEvent.EXPIRE: (_LIVE, SessionState.EXPIRED),
    SessionEvent.SUBMIT: (
        frozenset({SessionState.ISSUED, SessionState.ACTIVE}),
        SessionState.SUBMITTED,
    ),
}

# The signal a proxy must obey after each event, if any.
SIGNALS = {
    SessionEvent.END: Signal.END,
    SessionEvent.GRADING_COMPLETE: Signal.GRADING_COMPLETE,
    SessionEvent.REVOKE: Signal.REVOKE,
    SessionEvent.EXPIRE: Signal.END,
    SessionEvent.SUBMIT: Signal.SUBMIT,
}


def is_live(state: SessionState) -> bool:
    return state in _LIVE


def next_state(state: SessionState, event: SessionEvent) -> SessionState:
    allowed, target = _TRANSITIONS[event]
    if state not in allowed:
        raise InvalidTransition(state, event)
    if target is None:
        return SessionState.ACTIVE if state is SessionState.ISSUED else state
    return target
