"""Asking Anthropic whether a key works: one `models.list` call through the official SDK.

The call goes to the configured upstream (METRUX_UPSTREAM_URL), costs no tokens and is
answered for any working key. Only the verdict and Anthropic's error type leave this
module: never the key, and never an exception message (which could quote a response).
"""

from __future__ import annotations

from typing import Protocol

import structlog

from control.keys.health import CheckResult, Verdict

log = structlog.get_logger(__name__)
CHECK_TIMEOUT_S = 5.0


class KeyChecker(Protocol):
    async def check(self, api_key: str) -> CheckResult: ...


class AnthropicKeyChecker:
    def __init__(self, upstream_url: str, *, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self._upstream_url = upstream_url
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"<AnthropicKeyChecker {self._upstream_url}>"

    async def check(self, api_key: str) -> CheckResult:
        # Imported here: the SDK is large and only this path of the control plane needs it.
        import anthropic

        client = anthropic.AsyncAnthropic(
            # Explicit, so the SDK consults no ANTHROPIC_* credential in the environment;
            # sent as x-api-key, the form the proxy uses, and not as this SDK's Bearer.
            api_key=api_key,
            default_headers={"x-api-key": api_key, "Authorization": anthropic.omit},
            base_url=self._upstream_url,
            timeout=self._timeout_s,
            max_retries=0,  # the caller owns retries (backoff in the checker)
        )
        try:
            await client.models.list(limit=1)
        except anthropic.AuthenticationError:
            return CheckResult(Verdict.REJECTED, "authentication_error")
        except anthropic.PermissionDeniedError:
            return CheckResult(Verdict.REJECTED, "permission_error")
        except anthropic.APITimeoutError:
            return CheckResult(Verdict.UNREACHABLE, "timeout")
        except anthropic.APIConnectionError:
            return CheckResult(Verdict.UNREACHABLE, "connection_error")
        except anthropic.APIStatusError as exc:
            # 429, 5xx, 529 overloaded, or anything else that is no verdict on the key.
            log.warning("key_check_unanswered", status=exc.status_code)
            return CheckResult(Verdict.UNREACHABLE, f"http_{exc.status_code}")
        finally:
            await client.close()
        return CheckResult(Verdict.ACCEPTED, "ok")
