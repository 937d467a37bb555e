"""The signed-in candidate a request carries (set by control/identity/middleware.py)."""

from __future__ import annotations

from aiohttp import web

from control.candidates.store import Candidate

candidate_key = web.RequestKey("candidate", Candidate)


def current_candidate(request: web.Request) -> Candidate:
    return request[candidate_key]
