"""`metrux demo`: one candidate's whole journey, end to end, on this machine.

Starts a throwaway control plane (its own data directory), creates a tenant, uploads a key,
invites a candidate, accepts, runs `metrux sandbox run` with a workload that makes a few
Claude calls, ends the session, and prints its usage and audit trail. With --fake-upstream
the calls go to a clearly labelled local stand-in (sandbox/standin.py); without it they go
to the real Anthropic API with the key in $ANTHROPIC_API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import string
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

from core.redis_server import stop_embedded_redis

OWNER = "owner@demo.example"
EXPECTED_CALLS = 4  # count_tokens, two messages, one stream (sandbox/demo_workload.py)


def register(parts: Any) -> None:
    cmd = parts.add_parser("demo", help="run one candidate's journey end to end, locally")
    cmd.add_argument(
        "--fake-upstream",
        action="store_true",
        help="send Claude calls to a local stand-in instead of the real Anthropic API",
    )
    cmd.add_argument("--keep", action="store_true", help="keep the demo's data directory")
    cmd.add_argument(
        "--stay",
        action="store_true",
        help="afterwards, keep the control plane up and print a one-time sign-in link to the "
        "session's page in the console (Ctrl-C stops)",
    )
    cmd.set_defaults(handler=run_demo)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metrux() -> list[str]:
    return [sys.executable, "-m", "core.cli"]


def _test_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "sk-ant-api03-" + "".join(secrets.choice(alphabet) for _ in range(93)) + "AA"


async def _wait_http(url: str, seconds: float = 30) -> None:
    import aiohttp  # only here: `metrux proxy run` loads this module's register()

    async with aiohttp.ClientSession() as http:
        for _ in range(int(seconds * 10)):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw: Any
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, headers=headers, **kw) as response:
        body = await response.json()
        if response.status >= 400:
            raise RuntimeError(f"{method} {url}: {response.status} {body}")
        return body


def _print_usage(records: list[dict[str, Any]]) -> None:
    print("\nusage records (one per upstream call):")
    print(
        f"  {'endpoint':<28} {'actor':<9} {'status':>6} {'stream':>6} "
        f"{'in':>5} {'out':>5} {'ms':>7}"
    )
    for r in records:
        print(
            f"  {r['endpoint']:<28} {r['actor']:<9} {r['http_status']!s:>6} {r['stream']!s:>6} "
            f"{r['input_tokens'] or 0:>5} {r['output_tokens'] or 0:>5} {r['latency_ms'] or 0:>7.1f}"
        )


def _print_audit(events: list[dict[str, Any]]) -> None:
    print("\naudit trail (oldest first):")
    for e in reversed(events):
        print(f"  {e['occurred_at'][:19]}  {e['action']:<26} {e['outcome']:<8} {e['actor_type']}")


async def journey(
    control: str, owner: str, api_key: str, data_dir: Path, env: dict[str, str]
) -> tuple[int, str]:
    """Everything the customer and the candidate do, over HTTP and `metrux sandbox run`."""
    import aiohttp

    await _wait_http(f"{control}/healthz")
    async with aiohttp.ClientSession() as http:
        key = await _call(http, "POST", f"{control}/v1/keys", owner, json={"api_key": api_key})
        print(f"key …{key['last_four']} uploaded (stored wrapped)")
        invite = await _call(
            http, "POST", f"{control}/v1/invites", owner,
            json={"candidate_email": "candidate@demo.example", "assessment_name": "Demo"},
        )  # fmt: skip
        accepted = await _call(
            http, "POST", f"{control}/v1/invites/{invite['invite_token']}/accept"
        )
        print(f"invite accepted: session {accepted['session_id']} (the candidate holds only")
        print("  a sandbox token and a candidate token; neither can attach a proxy)")
        # The platform's part: it runs the sandbox, so it asks for the attach credential.
        attach = await _call(
            http,
            "POST",
            f"{control}/v1/sessions/{accepted['session_id']}/bootstrap-token",
            owner,
        )
        print("the platform got the proxy's single-use bootstrap token for the sandbox pod")
        credentials = data_dir / "session.json"
        credentials.write_text(
            json.dumps(
                {
                    "session_id": accepted["session_id"],
                    "control_url": control,
                    "bootstrap_token": attach["bootstrap_token"],
                    "sandbox_token": accepted["sandbox_token"],
                }
            )
        )
        credentials.chmod(0o600)
        print("running the sandbox: metrux sandbox run -- python -m sandbox.demo_workload\n")
        sandbox = await asyncio.create_subprocess_exec(
            # --same-user: everything runs on this one machine, as in development.
            *_metrux(), "sandbox", "run", "--session-credentials", str(credentials),
            "--same-user", "--", sys.executable, "-m", "sandbox.demo_workload", env=env,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        code = await sandbox.wait()
        print(f"\nsandbox exited with {code}; the proxy cleared the key and stopped")
        session_url = f"{control}/v1/sessions/{accepted['session_id']}"
        await _call(http, "POST", f"{session_url}/end", owner)
        records: list[dict[str, Any]] = []
        for _ in range(200):  # the ingester inside the control plane works batch by batch
            records = (await _call(http, "GET", f"{session_url}/usage", owner))["records"]
            if len(records) >= EXPECTED_CALLS:
                break
            await asyncio.sleep(0.1)
        _print_usage(records)
        summary = await _call(http, "GET", f"{session_url}/usage/summary", owner)
        print(f"\nsummary: {summary['calls']} calls, tokens {summary['tokens']}")
        _print_audit((await _call(http, "GET", f"{control}/v1/audit?limit=50", owner))["events"])
    return (0 if code == 0 and len(records) >= EXPECTED_CALLS else 1), accepted["session_id"]


def _stay(env: dict[str, str], control: Any, session_id: str) -> None:
    """Print a signed-in link to the session's page, and serve until Ctrl-C."""
    link = subprocess.run(
        [*_metrux(), "control", "login-link", OWNER, "--next", f"/console/sessions/{session_id}"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    print(f"\nsee it in the console: {link}")
    print("(the link signs you in once, within 15 minutes; Ctrl-C stops the demo)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        control.wait()


def _start(argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=log, stderr=log)


def run_demo(args: argparse.Namespace, settings: Any) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="mxdemo"))
    scrubbed = ("METRUX_", "DATABASE_URL", "REDIS_URL", "KEY_ENCRYPTION_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(scrubbed)}
    env.update(
        METRUX_DATA_DIR=str(data_dir),
        KEY_ENCRYPTION_KEY=base64.b64encode(os.urandom(32)).decode(),
        METRUX_LOG_FORMAT="json",
    )
    print(f"demo data directory: {data_dir}")
    processes: list[subprocess.Popen[bytes]] = []
    log = (data_dir / "demo.log").open("wb")
    try:
        if args.fake_upstream:
            port = _free_port()
            processes.append(_start([sys.executable, "-m", "sandbox.standin", str(port)], env, log))
            env["METRUX_UPSTREAM_URL"] = f"http://127.0.0.1:{port}"
            print(f"upstream: LOCAL STAND-IN at {env['METRUX_UPSTREAM_URL']} (not Claude)")
            api_key = _test_key()
        else:
            api_key = os.environ.get("ANTHROPIC_API_KEY", "")
            if not api_key:
                print(
                    "metrux demo: set ANTHROPIC_API_KEY, or pass --fake-upstream", file=sys.stderr
                )
                return 2
            print("upstream: the real Anthropic API")
        subprocess.run([*_metrux(), "control", "migrate"], env=env, check=True, capture_output=True)
        tenant = json.loads(
            subprocess.run(
                [*_metrux(), "control", "create-tenant", "Demo Co", "--owner-email", OWNER],
                env=env, check=True, capture_output=True,
            ).stdout
        )  # fmt: skip
        print(f"tenant {tenant['tenant_id']} created")
        control_port = _free_port()
        control = f"http://127.0.0.1:{control_port}"
        env["METRUX_PUBLIC_URL"] = control
        processes.append(
            _start([*_metrux(), "control", "serve", "--port", str(control_port)], env, log)
        )
        code, session_id = asyncio.run(
            journey(control, tenant["owner_token"], api_key, data_dir, env)
        )
        if args.stay:
            _stay(env, processes[-1], session_id)
        return code
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
        log.close()
        stop_embedded_redis(data_dir / "redis" / "redis.sock")
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
