"""The console in a real browser (issue 19): Playwright drives Debian's Chromium (no browser
download) against the control plane. A customer signs in with a one-time link, uploads a
key (checked with a local Anthropic stand-in), makes it default, checks it, revokes it after
confirming, and finds it all on the audit page; a reviewer sees no actions; another
tenant's key is a 404 page. Every page is scanned with axe-core (no serious or critical
violation), no page asks another origin for anything, and a screenshot of each is kept
under var/console/."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from control.audit.actions import ActorType
from control.audit.store import Actor
from control.console.middleware import CSP
from control.identity.service import issue_login_link
from core.settings import Settings
from sandbox.standin import FakeAnthropic
from tests.conftest import service_missing
from tests.control.test_identity import ISSUER, FakeIdentityProvider
from tests.e2e.processes import free_port
from tests.factories import TenantFixture, fake_anthropic_key, make_tenant

pytestmark = pytest.mark.process  # starts a browser

ROOT = Path(__file__).parents[2]
CHROMIUM = os.environ.get("METRUX_TEST_CHROMIUM") or shutil.which("chromium")
AXE = Path(
    os.environ.get("METRUX_TEST_AXE")
    or ROOT / ".ci" / "axe-core" / "node_modules" / "axe-core" / "axe.min.js"
)
SHOTS = ROOT / "var" / "console"
CLI = Actor(ActorType.OPERATOR, "cli:test")


CLIENT_ID = "metrux-console"


class OidcProvider(FakeIdentityProvider):
    """A local OpenID Connect provider: an authorization endpoint that signs in `email` at
    once, a token endpoint that checks the PKCE verifier, and the JWKS."""

    def __init__(self) -> None:
        super().__init__()
        self.email = ""
        self.flights: dict[str, tuple[str, str, str]] = {}
        self.app.router.add_get("/authorize", self._authorize)
        self.app.router.add_post("/token", self._token)

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        assert (query["response_type"], query["code_challenge_method"]) == ("code", "S256")
        assert query["client_id"] == CLIENT_ID
        code = secrets.token_urlsafe(16)
        self.flights[code] = (query["nonce"], query["code_challenge"], query["redirect_uri"])
        back = urlencode({"code": code, "state": query["state"]})
        return web.Response(status=302, headers={"Location": f"{query['redirect_uri']}?{back}"})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        nonce, challenge, redirect_uri = self.flights.pop(str(form["code"]))
        if (
            create_s256_code_challenge(str(form["code_verifier"])) != challenge
            or form["redirect_uri"] != redirect_uri
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response(
            {"id_token": self.token(self.email, nonce=nonce, aud=CLIENT_ID), "token_type": "Bearer"}
        )


@dataclasses.dataclass
class Console:
    base: str
    engine: AsyncEngine
    api_key: str
    page: Any
    foreign: list[str]  # requests the browser made to another origin
    idp: OidcProvider

    async def api(self, path: str, tenant: TenantFixture, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the JSON API as the tenant's owner (setting up what a test needs);
        the answer must be 201."""
        async with (
            aiohttp.ClientSession(self.base) as http,
            http.post(path, json=body, headers=tenant.auth) as r,
        ):
            assert r.status == 201, await r.text()
            return dict(await r.json())

    async def sign_in(self, email: str) -> None:
        link = await issue_login_link(
            self.engine, CLI, email=email, tenant_id=None, now=dt.datetime.now(dt.UTC)
        )
        await self.page.goto(f"{self.base}/console/signin?token={link.token}")
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_url(f"{self.base}/console/")

    async def check(self, name: str) -> None:
        """An axe-core scan of the page (no serious or critical violation) and a screenshot."""
        # The CSP allows no inline script or style; the context bypasses it only to inject
        # axe, so check the page holds none itself.
        assert await self.page.locator("script:not([src]), [style], style").count() == 0
        await self.page.add_script_tag(content=_read(AXE))
        result = await self.page.evaluate("async () => await axe.run(document)")
        bad = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert bad == [], f"{name}: {bad}"
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
async def console(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> AsyncIterator[Console]:
    if CHROMIUM is None:
        service_missing("Chromium", "install Debian's chromium package")
    if not _exists(AXE):
        service_missing("axe-core", "npm install --prefix .ci/axe-core axe-core (.ci/run does)")
    from playwright.async_api import async_playwright

    api_key = fake_anthropic_key()
    fake = await aiohttp_server(FakeAnthropic(api_key).app)
    idp = OidcProvider()
    idp_base = str((await aiohttp_server(idp.app)).make_url("")).rstrip("/")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    configured = dataclasses.replace(
        settings,
        public_url=base,
        upstream_url=str(fake.make_url("")).rstrip("/"),
        oidc_authorize_url=f"{idp_base}/authorize",
        oidc_token_url=f"{idp_base}/token",
        oidc_client_id=CLIENT_ID,
        oidc_jwks_url=f"{idp_base}/.well-known/jwks.json",
        oidc_issuer=ISSUER,
        oidc_audience=CLIENT_ID,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await aiohttp_server(create_app(configured), port=port)
    foreign: list[str] = []
    policies: list[str | None] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        context = await browser.new_context(
            viewport={"width": 1280, "height": 900}, bypass_csp=True, accept_downloads=True
        )
        page = await context.new_page()
        # Only the sign-in through the identity provider may leave for its origin.
        own = (base, f"{idp_base}/authorize")
        page.on(
            "request",
            lambda request: None if request.url.startswith(own) else foreign.append(request.url),
        )
        page.on("response", lambda response: policies.append(_policy(response, base)))
        try:
            yield Console(base, engine, api_key, page, foreign, idp)
        finally:
            await browser.close()
    assert foreign == []  # no page asked another origin for anything
    assert set(policies) <= {CSP}  # every console response carries the CSP


def _policy(response: Any, base: str) -> str | None:
    if not response.url.startswith((f"{base}/console", f"{base}/invite/", f"{base}/me")):
        return CSP
    found = response.headers.get("content-security-policy")
    return found if found == CSP else f"{response.url}: {found}"


def _read(path: Path) -> str:
    return path.read_text()


def _exists(path: Path) -> bool:
    return path.exists()


async def test_a_customer_manages_keys_and_finds_it_in_the_audit_log(
    console: Console, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    page = console.page
    await console.sign_in(tenant.owner_email)
    await page.get_by_text("There is no default key").wait_for()
    await console.check("overview-no-key")

    await page.get_by_role("link", name="Keys").click()
    await console.check("keys-empty")
    await page.get_by_label("Anthropic API key").fill("sk-ant-api03-too-short")
    await page.get_by_role("button", name="Upload and check").click()
    await page.get_by_role("alert").wait_for()
    assert "sk-ant-api03-too-short" not in await page.content()  # never echoed
    assert await page.get_by_label("Anthropic API key").input_value() == ""

    await page.get_by_label("Anthropic API key").fill(console.api_key)
    await page.get_by_label("Name (optional)").fill("Hiring 2027")
    await page.get_by_role("button", name="Upload and check").click()
    await page.get_by_text("Key uploaded and checked with Anthropic.").wait_for()
    row = page.get_by_role("row").filter(has_text=f"…{console.api_key[-4:]}")
    assert "valid" in await row.inner_text()
    assert "(default)" in await row.inner_text()  # the first key is the default
    assert console.api_key not in await page.content()
    await console.check("keys")

    await page.get_by_role("button", name=f"Check now …{console.api_key[-4:]}").click()
    await page.get_by_text("Key checked with Anthropic.").wait_for()
    await page.get_by_role("link", name=f"Revoke …{console.api_key[-4:]}").click()
    await page.get_by_role("heading", name=f"Revoke key …{console.api_key[-4:]}?").wait_for()
    await console.check("keys-revoke-confirm")
    await page.get_by_role("button", name=f"Revoke key …{console.api_key[-4:]}").click()
    await page.get_by_text("Key revoked").wait_for()
    assert "revoked" in await row.inner_text()

    await page.get_by_role("link", name="Audit").click()
    for action in ("key:upload", "key:revoke", "auth:login"):
        await page.get_by_role("cell", name=action, exact=True).first.wait_for()
    await console.check("audit")
    await page.get_by_label("Action").select_option("key:revoke")
    await page.get_by_role("button", name="Filter").click()
    assert await page.get_by_role("cell", name="key:upload", exact=True).count() == 0
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download as CSV").click()
    csv = _read(Path(await (await download.value).path()))
    assert csv.splitlines()[0].startswith("id,occurred_at,actor_type")
    assert [line for line in csv.splitlines()[1:] if ",key:revoke," in line]
    assert ",key:upload," not in csv

    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_text("You are signed out.").wait_for()
    await page.goto(f"{console.base}/console/keys")
    await page.get_by_role("heading", name="Sign in to continue").wait_for()
    await console.check("signed-out")


async def test_a_reviewer_sees_no_actions_and_another_tenants_key_is_not_found(
    console: Console, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    other = await make_tenant(engine, "Other")
    await console.api("/v1/members", tenant, {"email": "rev@example.com", "role": "reviewer"})
    foreign_key = (await console.api("/v1/keys", other, {"api_key": console.api_key}))["id"]
    await console.api("/v1/keys", tenant, {"api_key": console.api_key})
    page = console.page
    await console.sign_in("rev@example.com")
    await page.get_by_role("link", name="Keys").click()
    await page.get_by_role("table").wait_for()
    await console.check("keys-reviewer")
    for action in ("Check now", "Make default", "Upload and check"):
        assert await page.get_by_role("button", name=action).count() == 0
    assert await page.get_by_role("link", name="Audit").count() == 0
    await page.goto(f"{console.base}/console/audit")
    await page.get_by_role("heading", name="Not allowed").wait_for()
    # The owner names another tenant's key: a 404 page, as if it did not exist.
    await page.context.clear_cookies()
    await console.sign_in(tenant.owner_email)
    await page.goto(f"{console.base}/console/keys/{foreign_key}/revoke")
    await page.get_by_role("heading", name="Not found").wait_for()
    await console.check("not-found")


async def test_a_used_or_unknown_sign_in_link_is_refused(
    console: Console, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    link = await issue_login_link(
        engine, CLI, email=tenant.owner_email, tenant_id=None, now=dt.datetime.now(dt.UTC)
    )
    page = console.page
    await page.goto(f"{console.base}/console/signin?token={link.token}")
    await console.check("signin")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{console.base}/console/")
    await page.context.clear_cookies()
    await page.goto(f"{console.base}/console/signin?token={link.token}")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Sign in to continue").wait_for()
    assert "unknown, used or expired" in await page.content()
    await page.goto(f"{console.base}/console/no-such-page")
    await page.get_by_role("heading", name="Not found").wait_for()


async def test_an_owner_adds_re_roles_and_revokes_a_member(
    console: Console, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    page = console.page
    await console.sign_in(tenant.owner_email)
    await page.get_by_role("link", name="Members").click()
    await console.check("members")
    await page.get_by_label("Email", exact=True).fill("new.reviewer@example.com")
    await page.get_by_label("Role", exact=True).select_option("reviewer")
    await page.get_by_role("button", name="Add member").click()
    token = await page.locator("code.token").inner_text()
    assert token.startswith("mxk_")
    await console.check("members-added")
    await page.goto(f"{console.base}/console/members")
    assert token not in await page.content()  # shown once
    await page.get_by_label("New role for new.reviewer@example.com").select_option("admin")
    await page.get_by_role("button", name="Change role of new.reviewer@example.com").click()
    await page.get_by_text("Role changed.").wait_for()
    row = page.get_by_role("row").filter(has_text="new.reviewer@example.com")
    assert "admin" in await row.inner_text()
    await page.get_by_role("link", name="Revoke new.reviewer@example.com").click()
    await console.check("members-revoke-confirm")
    await page.get_by_role("button", name="Revoke new.reviewer@example.com").click()
    await page.get_by_text("Member revoked").wait_for()
    assert "revoked" in await row.inner_text()
    # The last owner cannot be demoted: there is no form for oneself, and the API says 409.
    assert await page.get_by_label(f"New role for {tenant.owner_email}").count() == 0
    await page.get_by_role("link", name="Audit").click()
    for action in ("member:create", "member:role", "member:revoke"):
        await page.get_by_role("cell", name=action, exact=True).first.wait_for()


async def test_a_candidate_accepts_in_the_browser_and_downloads_their_data(
    console: Console, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine, "Harbour Labs")
    page = console.page
    # Accepting needs a key to run the session on: without one, a page says to wait.
    await console.sign_in(tenant.owner_email)
    await page.get_by_role("link", name="Invites").click()
    await console.check("invites")
    await page.get_by_label("Candidate's email").fill("ada@example.com")
    await page.get_by_label("Assessment", exact=True).fill("Backend take-home")
    await page.get_by_label("Most calls to Claude (optional)").fill("50")
    await page.get_by_role("button", name="Send invite").click()
    link = await page.locator("code.token").inner_text()
    assert link.startswith(f"{console.base}/invite/mxi_")
    await console.check("invites-sent")
    row = page.get_by_role("row").filter(has_text="ada@example.com").first
    assert "sent" in await row.inner_text()
    # Local mode: the invitation waits in the outbox, not yet handed over.
    queued = page.get_by_role("row").filter(has_text="invites you to an assessment")
    assert "not yet" in await queued.inner_text()

    # The candidate, in a browser of their own.
    await page.context.clear_cookies()
    await page.goto(link)
    await page.get_by_role("button", name="Accept the invitation").click()
    await page.get_by_role("heading", name="That cannot be done now").wait_for()
    assert "setup is not complete" in await page.content()
    await console.api("/v1/keys", tenant, {"api_key": console.api_key})
    await page.goto(link)
    await page.get_by_role("heading", name="Harbour Labs invites you to an assessment").wait_for()
    assert "No prompt text is kept after the session" in await page.content()
    await console.check("invite-landing")
    await page.get_by_role("button", name="Accept the invitation").click()
    await page.get_by_text("You accepted the invitation.").wait_for()
    await page.get_by_role("heading", name="Next steps").wait_for()
    content = await page.content()
    for credential in ("mxs_", "mxc_", "mxb_", "mxp_"):  # nothing that attaches a proxy
        assert credential not in content
    await console.check("me")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download my data (JSON)").click()
    exported = json.loads(_read(Path(await (await download.value).path())))
    assert exported["candidate"]["email"] == "ada@example.com"
    assert [s["company"] for s in exported["sessions"]] == ["Harbour Labs"]
    await page.get_by_role("link", name="Ask for my data to be deleted").click()
    await console.check("me-delete-confirm")
    await page.get_by_role("button", name="Yes, delete my data").click()
    await page.get_by_text("Your deletion request is recorded.").wait_for()
    assert "your data will be erased by" in await page.content()

    # The same link again, or a made-up one: one neutral page.
    for url in (link, f"{console.base}/invite/mxi_{'x' * 43}"):
        await page.goto(url)
        await page.get_by_role("heading", name="This invitation link does not work").wait_for()
    await console.check("invite-invalid")


async def test_a_session_page_shows_calls_as_they_arrive_and_ends_the_session(
    console: Console, engine: AsyncEngine
) -> None:
    from control.usage import store as usage_store
    from tests.control.test_usage_ingest import record

    tenant = await make_tenant(engine)
    await console.api("/v1/keys", tenant, {"api_key": console.api_key})
    created = await console.api(
        "/v1/sessions", tenant, {"candidate_email": "grace@example.com", "max_requests": 10}
    )
    session_id = created["id"]
    page = console.page
    await console.sign_in(tenant.owner_email)
    await page.get_by_role("link", name="Sessions").click()
    await page.get_by_label("State").select_option("issued")
    await page.get_by_role("button", name="Filter").click()
    await console.check("sessions")
    await page.get_by_role("link", name="session of grace@example.com").click()
    await page.get_by_role("heading", name=f"Session {session_id[:8]}").wait_for()
    await page.get_by_role("cell", name="No calls yet.").wait_for()
    await console.check("session-live")

    # Calls arrive (as the proxy's records, ingested): the page shows them without a reload.
    async with engine.begin() as conn:
        await usage_store.insert_records(
            conn,
            [
                record(
                    session_id, output_tokens=out, usage={"input_tokens": 10, "output_tokens": out}
                )
                for out in (7, 9)
            ],
            now=dt.datetime.now(dt.UTC),
        )
    await page.get_by_text("2 call(s), 0 failed, 0 retried").wait_for()
    assert await page.locator("#usage-chart").count() == 1  # the token and cost chart
    # Priced from the price table: 20 input and 16 output tokens of claude-haiku-4-5.
    await page.get_by_text("20 input, 16 output").wait_for()
    await page.get_by_text("cost 0.000100 USD").wait_for()
    assert "Calls: 2 of 10" not in await page.content()  # the limits block is not polled
    await page.reload()
    await page.get_by_text("Calls: 2 of 10").wait_for()
    await page.get_by_text("Output tokens: 16 of no limit").wait_for()
    await page.get_by_text("Not sealed yet").wait_for()

    await page.get_by_role("link", name="Overview").click()
    figures = await page.locator("dl.figures").inner_text()
    assert "Calls\n2" in figures
    assert "Tokens\n42" in figures  # 10 + 7 + 2 + 1 and 10 + 9 + 2 + 1
    assert "Live sessions\n1" in figures
    live_row = page.get_by_role("row").filter(has_text="grace@example.com")
    assert "offline" in await live_row.inner_text()  # no proxy attached
    await console.check("overview")
    await live_row.get_by_role("link").click()
    await page.get_by_role("button", name="Issue a grader token").click()
    grader = await page.locator("code.token").inner_text()
    assert grader.startswith("mxg_")
    await page.get_by_role("link", name="End the session").click()
    await console.check("session-end-confirm")
    await page.get_by_role("button", name="End the session").click()
    await page.get_by_text("Session ended").wait_for()
    await page.get_by_text("session:end (success)").wait_for()
    assert await page.get_by_role("button", name="Issue a grader token").count() == 0
    await console.check("session-ended")


async def test_a_member_signs_in_through_the_identity_provider(
    console: Console, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    console.idp.email = tenant.owner_email
    page = console.page
    await page.goto(f"{console.base}/console/signin?next=/console/keys")
    await page.get_by_role("link", name="Sign in with your company's identity provider").click()
    await page.wait_for_url(f"{console.base}/console/keys")  # PKCE, nonce, then the page
    await page.get_by_role("heading", name="Anthropic keys").wait_for()
    await page.get_by_role("link", name="Audit").click()
    await page.get_by_role("cell", name="auth:handoff", exact=True).first.wait_for()

    # A callback this browser did not start, or one replayed: refused.
    await page.goto(f"{console.base}/console/signin/oidc/callback?code=x&state=forged")
    await page.get_by_role("heading", name="Sign in to continue").wait_for()
    assert "did not start in this browser" in await page.content()
