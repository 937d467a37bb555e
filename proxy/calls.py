"""What the proxy does with each request from the sandbox.

Every relayed call: lockout → authenticate → key still armed → rate → body → limits →
upstream head (with the key) → forward → settle. The meter, the metrics, the transcript
chain and the publisher observe the call through its record; none of them sits between the
upstream and the client.
"""

from __future__ import annotations

import json

import structlog

from core.usage import UsageRecord
from proxy.auth import identify, presented_tokens
from proxy.errors import ProxyError, not_found, unauthorized
from proxy.forward import forward
from proxy.headers import request_head
from proxy.http.messages import response_head
from proxy.http.request import Refusal, Request
from proxy.keepalive import KeepaliveWatchdog
from proxy.keyring import KeyCleared
from proxy.limits import too_many
from proxy.meter.digest import RequestFacts, request_facts
from proxy.meter.recorder import CallRecorder
from proxy.metrics import ProxyMetrics
from proxy.publisher import UsagePublisher
from proxy.routes import Kind, Route, match, plain_path
from proxy.session import ProxySession
from proxy.transport import ClientGone, Downstream, Upstream

log = structlog.get_logger(__name__)


def _key_cleared() -> ProxyError:
    return ProxyError(403, "permission_error", "this session has ended; its key is cleared")


def _ok(payload: dict[str, str], *, keep_alive: bool) -> bytes:
    body = json.dumps(payload).encode()
    head = response_head(
        200,
        b"OK",
        [(b"content-type", b"application/json")],
        content_length=len(body),
        keep_alive=keep_alive,
    )
    return head + body


def _route(request: Request) -> Route:
    """The request's route: only a path that reads one way is matched, and only the API
    surface is routed."""
    if not plain_path(request.path):
        raise ProxyError(
            400,
            "invalid_request_error",
            "the request path must read one way: no percent-escapes, no . or .. or empty "
            "segments, no backslashes",
        )
    route = match(request.method, request.path)
    if route is None:
        raise not_found(request.method.decode("latin-1"), request.path.decode("latin-1"))
    return route


def _refuse_encoded(request: Request) -> None:
    """A compressed body is one the limits cannot read: refused (the clients send none)."""
    if any(
        len(name) == 16
        and name.lower() == b"content-encoding"
        and value.strip().lower() not in (b"", b"identity")
        for name, value in request.headers
    ):
        raise ProxyError(
            400, "invalid_request_error", "send the request body uncompressed (no content-encoding)"
        )


def _refuse_ambiguous(facts: RequestFacts, route: Route) -> None:
    """A body the proxy would read otherwise than Anthropic might does not leave: a field
    named twice, or a generation whose max_tokens (what it reserves) is not a whole number."""
    if facts.duplicate is not None:
        raise ProxyError(
            400, "invalid_request_error", f"the body names the field {facts.duplicate!r} twice"
        )
    if route.generation and not facts.max_tokens_valid:
        message = (
            "max_tokens: a positive integer is required"
            if facts.parsed
            else "the body must be a JSON object"
        )
        raise ProxyError(400, "invalid_request_error", message)


def _check_server_tools(facts: RequestFacts, allowed: frozenset[str] | None) -> None:
    """Server-side tools reach the internet from Anthropic, past the sandbox's egress
    rules: a session may allow only some (or none)."""
    if allowed is None or facts.server_tools <= allowed:
        return
    refused = ", ".join(sorted(facts.server_tools - allowed))
    raise ProxyError(
        403, "permission_error", f"server tool(s) not allowed in this session: {refused}"
    )


class Calls:
    """The handler for every sandbox request of the proxy's one session."""

    def __init__(
        self,
        session: ProxySession,
        upstream: Upstream,
        publisher: UsagePublisher,
        metrics: ProxyMetrics,
        watchdog: KeepaliveWatchdog | None = None,
    ) -> None:
        self.session = session
        self.upstream = upstream
        self._publisher = publisher
        self._metrics = metrics
        self._watchdog = watchdog
        self._empty_facts = RequestFacts(b"")

    async def __call__(self, call: Downstream) -> None:
        session = self.session
        session.call_started()
        try:
            try:
                request = call.request
                route = _route(request)
                if route.kind is Kind.RELAY:
                    await self._relay(call, route)
                else:
                    self._own(call, route)
            except Refusal as refusal:
                raise ProxyError(refusal.status, refusal.type, refusal.message) from None
        except ClientGone:
            pass
        except ProxyError as exc:
            if call.started:
                call.abort()
            else:
                call.write(exc.render(keep_alive=call.will_keep_alive()))
        except Exception:
            log.exception("proxy_unhandled_error", path=call.request.path.decode("latin-1"))
            if call.started:
                call.abort()
            else:
                error = ProxyError(500, "api_error", "internal proxy error")
                call.write(error.render(keep_alive=call.will_keep_alive()))
        finally:
            session.call_finished()

    def _authenticate(self, call: Downstream) -> str:
        """The caller's actor ("candidate" or "grader"), or a 401/429/403."""
        session = self.session
        request = call.request
        tokens = presented_tokens(request.header(b"x-api-key"), request.header(b"authorization"))
        actor = identify(tokens, session.info.token_sha256, session.grader_sha256)
        if actor == "candidate" and not session.candidate_enabled:
            raise ProxyError(
                403,
                "permission_error",
                "the candidate has submitted; only the grader token works now",
            )
        if actor is not None:
            return actor
        source = call.peer
        session.lockout.record_failure(source)
        locked = session.lockout.retry_after(source)
        if locked is not None:
            raise too_many("too many invalid session tokens from this address", locked)
        raise unauthorized()

    def _admit(self, call: Downstream) -> str:
        """Checks before any body is read; returns the actor."""
        session = self.session
        actor = self._authenticate(call)
        if not session.key.armed:
            raise _key_cleared()
        wait = session.rate.take()
        if wait is not None:
            raise too_many("session request rate exceeded", wait)
        return actor

    def _own(self, call: Downstream, route: Route) -> None:
        """The launcher's calls: disconnect clears the key now; keepalive is its heartbeat."""
        self._authenticate(call)
        if route.kind is Kind.DISCONNECT:
            self.session.clear("sandbox_disconnect")
            payload = {"status": "cleared"}
        else:
            if self._watchdog is not None:
                self._watchdog.beat()
            payload = {"status": "ok"}
        call.write(_ok(payload, keep_alive=call.will_keep_alive()))

    def _publish(self, record: UsageRecord) -> None:
        self._metrics.observe(record)
        self._publisher.publish(record)

    async def _relay(self, call: Downstream, route: Route) -> None:
        session = self.session
        request = call.request
        actor = self._admit(call)
        _refuse_encoded(request)
        body = await call.body()
        facts = request_facts(body) if body else self._empty_facts
        _refuse_ambiguous(facts, route)
        if route.endpoint.startswith("/v1/messages"):
            session.budget.check_model(facts.model)
            _check_server_tools(facts, session.info.allowed_server_tools)
        reservation = session.budget.admit(facts.max_tokens) if route.generation else None
        recorder: CallRecorder | None = None
        try:
            try:
                # Taken only once the body is in: a slow upload holds no copy of the key.
                head = request_head(
                    request.method,
                    self.upstream.prefix + request.target,
                    self.upstream.host_header,
                    request.headers,
                    len(body),
                    session.key,
                    session.info.allowed_betas,
                )
            except KeyCleared:
                raise _key_cleared() from None
            recorder = CallRecorder(
                session_id=session.info.session_id,
                tenant_id=session.info.tenant_id,
                actor=actor,
                method=request.method.decode("latin-1"),
                endpoint=route.endpoint,
                facts=facts,
                bytes_in=len(body),
                publish=self._publish,
                reserved_output_tokens=reservation.output_tokens if reservation else None,
                chain=session.next_link,
            )
            await forward(
                call,
                self.upstream,
                head,
                body,
                stream=facts.stream,
                recorder=recorder,
                key=session.key,
            )
        finally:
            if reservation is not None:
                session.budget.settle(reservation, recorder.record if recorder else None)
