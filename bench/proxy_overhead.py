"""What the proxy costs: the same load straight to the upstream, through two pass-throughs
and through the proxy, in one run.

Starts, on loopback: the fake Anthropic upstream, a control plane (SQLite and an embedded
Redis in a temporary data directory, or REDIS_URL), a session, `metrux proxy run` attached
to it (armed, metering, hashing, posting its records to the control plane), a bare aiohttp
pass-through (bench/bare_passthrough.py: no auth, no metering) and the floor, a raw
asyncio + httptools + uvloop pass-through (bench/raw_passthrough.py). The proxy and the
pass-throughs are pinned to CPU 1; the upstream, the control plane and this load generator
share CPU 0 (so the control plane's work on the proxy's records slows the load generator
while the proxy is measured: the throughput ratio to direct counts it). What the control
plane spends on the records is reported too, over the whole run once it has stored every
record. Every figure is
measured for each target in the same run, interleaved. Absolute times on shared
machines swing 2x from day to day, so the figures that matter are the ratios, printed last
with the targets they are held to.

Run from the repository root: scripts/bench [--calls N] (it runs the control plane and the
proxy from a venv holding only the runtime dependencies, as deployed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp

METRUX = str(Path(sys.executable).with_name("metrux"))
BODY = json.dumps(
    {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()
STREAM_BODY = json.dumps(
    {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()
# Issue 15's targets: (figure, how it is computed, bound, "max" or "min").
TARGETS = (
    ("CPU per call, c=32, proxy / bare aiohttp", "cpu_vs_bare", 0.4, "max"),
    ("throughput, c=32, proxy / direct", "throughput_vs_direct", 0.9, "min"),
    ("added latency p50, c=1 (ms)", "proxy added latency p50, c=1 (ms)", 0.2, "max"),
    ("added stream TTFB p50 (ms)", "proxy added stream TTFB p50 (ms)", 0.3, "max"),
    ("peak RSS (MB)", "proxy peak RSS (MB)", 35.0, "max"),
    ("start to ready (ms)", "proxy start to ready (ms)", 300.0, "max"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> Callable[[], None]:
    cpus = os.sched_getaffinity(0)
    chosen = {cpu} if cpu in cpus else cpus
    return lambda: os.sched_setaffinity(0, chosen)


def wait_quiet(pid: int, quiet_s: float = 1.0, timeout: float = 120.0) -> None:
    """Wait until `pid` has used no CPU for `quiet_s` (the control plane has stored what
    the proxy sent it)."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = cpu_seconds(pid)
        if now - before < 0.01:
            return
        before = now


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def http_json(method: str, url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())  # type: ignore[no-any-return]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Target:
    def __init__(self, name: str, url: str, headers: dict[str, str]) -> None:
        self.name = name
        self.url = url
        self.headers = {
            "content-type": "application/json",
            "anthropic-version": "2023-06-01",
            **headers,
        }


async def one_call(http: aiohttp.ClientSession, target: Target, body: bytes) -> float:
    start = time.perf_counter()
    async with http.post(
        target.url + "/v1/messages", data=body, headers=target.headers
    ) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}")
    return (time.perf_counter() - start) * 1000


async def one_stream_ttfb(http: aiohttp.ClientSession, target: Target) -> float:
    start = time.perf_counter()
    async with http.post(
        target.url + "/v1/messages", data=STREAM_BODY, headers=target.headers
    ) as response:
        await response.content.readany()
        ttfb = (time.perf_counter() - start) * 1000
        await response.read()
    return ttfb


async def interleaved(
    targets: list[Target], calls: int, run: Callable[[Target], Awaitable[float]]
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    block = 100
    for _ in range(0, calls, block):
        for target in targets:
            for _ in range(block):
                samples[target.name].append(await run(target))
    return samples


async def throughput(
    http: aiohttp.ClientSession, target: Target, calls: int, concurrency: int
) -> float:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one_call(http, target, BODY)

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return calls / (time.perf_counter() - start)


async def measure(
    direct: Target,
    relays: list[tuple[Target, int]],
    args: argparse.Namespace,
    control_pid: int | None = None,
) -> dict[str, float]:
    """`relays`: the targets in front of the upstream (the bare pass-through, the proxy),
    each with the pid whose CPU and memory it costs. `control_pid`: the control plane, whose
    CPU per proxied call (taking the proxy's records) is reported too."""
    results: dict[str, float] = {}
    targets = [direct, *(target for target, _ in relays)]
    control_start = cpu_seconds(control_pid) if control_pid else 0.0
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        for target in targets:  # warm up connections and code paths
            for _ in range(200):
                await one_call(http, target, BODY)
                await one_stream_ttfb(http, target)

        latency = await interleaved(targets, args.calls, lambda t: one_call(http, t, BODY))
        for name, values in latency.items():
            results[f"{name} latency p50, c=1 (ms)"] = statistics.median(values)
            results[f"{name} latency p99, c=1 (ms)"] = percentile(values, 99)

        for target in targets:
            pid = dict((t.name, p) for t, p in relays).get(target.name)
            before = cpu_seconds(pid) if pid else 0.0
            calls = args.calls * 2
            rate = await throughput(http, target, calls, args.concurrency)
            results[f"{target.name} throughput, c={args.concurrency} (calls/s)"] = rate
            if pid:
                results[f"{target.name} CPU per call (ms)"] = (
                    (cpu_seconds(pid) - before) / calls * 1000
                )

        ttfb = await interleaved(targets, args.stream_calls, lambda t: one_stream_ttfb(http, t))
        for name, values in ttfb.items():
            results[f"{name} stream TTFB p50 (ms)"] = statistics.median(values)
            results[f"{name} stream TTFB p99 (ms)"] = percentile(values, 99)
    if control_pid:
        await asyncio.to_thread(wait_quiet, control_pid)
        proxied = 400 + args.calls * 3 + args.stream_calls  # warm-up, c=1, c=32, streams
        results["control plane CPU per proxied call (ms)"] = (
            (cpu_seconds(control_pid) - control_start) / proxied * 1000
        )
    for target, pid in relays:
        name = target.name
        results[f"{name} peak RSS (MB)"] = peak_rss_mb(pid)
        for kind in ("latency p50, c=1", "latency p99, c=1", "stream TTFB p50", "stream TTFB p99"):
            results[f"{name} added {kind} (ms)"] = (
                results[f"{name} {kind} (ms)"] - results[f"direct {kind} (ms)"]
            )
    return results


RATIOS = (
    ("CPU per call, c=32", "CPU per call (ms)"),
    ("added latency p50, c=1", "added latency p50, c=1 (ms)"),
    ("added stream TTFB p50", "added stream TTFB p50 (ms)"),
    ("peak RSS", "peak RSS (MB)"),
)


def _ratio(results: dict[str, float], top: str, bottom: str) -> float:
    below = results.get(bottom, float("nan"))
    return results.get(top, float("nan")) / below if below > 0 else float("nan")


def report(results: dict[str, float], concurrency: int) -> bool:
    """Print every figure, the ratios and the targets; True when every target is met."""
    width = max(len(k) for k in results) + 4
    for name, value in results.items():
        print(f"{name:<{width}}  {value:10.3f}")
    for baseline, label in (("bare", "bare aiohttp pass-through"), ("raw", "raw floor")):
        print(f"\nratios, proxy / {label} (same run; lower is better):")
        for text, key in RATIOS:
            ratio = _ratio(results, f"proxy {key}", f"{baseline} {key}")
            print(f"  {text:<{width - 2}}  {ratio:10.2f}")
    throughput = f"throughput, c={concurrency} (calls/s)"
    results["cpu_vs_bare"] = _ratio(results, "proxy CPU per call (ms)", "bare CPU per call (ms)")
    results["throughput_vs_direct"] = _ratio(results, f"proxy {throughput}", f"direct {throughput}")
    print("\ntargets:")
    met = True
    for label, key, bound, kind in TARGETS:
        value = results.get(key, float("nan"))
        ok = value <= bound if kind == "max" else value >= bound
        met = met and ok
        sign = "≤" if kind == "max" else "≥"
        verdict = "met" if ok else "NOT met"
        print(f"  {label:<{width - 2}}  {value:10.3f}  {sign} {bound:g}: {verdict}")
    return met


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per point at c=1")
    parser.add_argument("--stream-calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--metrux",
        default=METRUX,
        help="the metrux command to run the control plane and proxy with, e.g. from a venv "
        "holding only the runtime dependencies, as a deployment would",
    )
    parser.add_argument("--stream-events", type=int, default=100)
    parser.add_argument(
        "--stream-pace-ms",
        type=float,
        default=0.2,
        help="pause between the fake's events: a real stream arrives over time, and an "
        "unpaced fake would hog the CPU the load generator shares with it",
    )
    return parser.parse_args()


def _start_upstreams(
    args: argparse.Namespace,
    env: dict[str, str],
    logs: IO[bytes],
    ports: tuple[int, int, int],
    processes: list[subprocess.Popen[bytes]],
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The fake upstream (CPU 0), and the aiohttp and raw pass-throughs in front of it
    (CPU 1, where the proxy runs), each added to `processes` as it starts; the two
    pass-throughs."""
    fake_port, bare_port, raw_port = ports
    fake_argv = [sys.executable, "-m", "bench.fake_upstream", str(fake_port)]
    fake = subprocess.Popen(
        [*fake_argv, str(args.stream_events), str(args.stream_pace_ms)],
        preexec_fn=pin(0), stdout=logs, stderr=logs, env=env,
    )  # fmt: skip
    processes.append(fake)
    for module, port in (
        ("bench.bare_passthrough", bare_port),
        ("bench.raw_passthrough", raw_port),
    ):
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", module, str(port), f"http://127.0.0.1:{fake_port}"],
                preexec_fn=pin(1),
                stdout=logs,
                stderr=logs,
                env=env,
            )
        )
    return processes[-2], processes[-1]


def _start_control(
    args: argparse.Namespace, env: dict[str, str], logs: IO[bytes], port: int
) -> tuple[subprocess.Popen[bytes], str]:
    """A migrated control plane with one tenant (CPU 0); the process and the owner's token."""
    subprocess.run([args.metrux, "control", "migrate"], env=env, check=True, capture_output=True)
    created = json.loads(
        subprocess.run(
            [args.metrux, "control", "create-tenant", "Bench", "--owner-email",
             "bench@example.com"],
            env=env, check=True, capture_output=True,
        ).stdout
    )  # fmt: skip
    control = subprocess.Popen(
        [args.metrux, "control", "serve", "--port", str(port)],
        preexec_fn=pin(0), stdout=logs, stderr=logs, env=env,
    )  # fmt: skip
    return control, created["owner_token"]


def _start_proxy(
    args: argparse.Namespace,
    env: dict[str, str],
    logs: IO[bytes],
    target: tuple[dict[str, Any], str, int],
    processes: list[subprocess.Popen[bytes]],
) -> tuple[subprocess.Popen[bytes], dict[str, Any], float]:
    """The session's proxy (CPU 1), as the sandbox launcher starts it: `python -m proxy run`
    from the same venv, added to `processes`. The process, its ready line, and its
    start-to-ready time in ms."""
    session, control_url, fake_port = target
    started = time.perf_counter()
    python = str(Path(args.metrux).with_name("python"))
    proxy = subprocess.Popen(
        [python, "-m", "proxy", "run", "--session", session["id"], "--control-url", control_url,
         "--upstream", f"http://127.0.0.1:{fake_port}"],
        preexec_fn=pin(1), stdout=subprocess.PIPE, stderr=logs,
        env={**env, "METRUX_BOOTSTRAP_TOKEN": session["bootstrap_token"]},
    )  # fmt: skip
    processes.append(proxy)
    assert proxy.stdout is not None
    ready = json.loads(proxy.stdout.readline())
    return proxy, ready, (time.perf_counter() - started) * 1000


def _environment(data_dir: Path) -> dict[str, str]:
    """The control plane's and proxy's environment: their own data directory and Redis
    prefix, and no per-session rate limit to measure."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("METRUX_", "DATABASE_URL"))},
        "METRUX_DATA_DIR": str(data_dir),
        "KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "METRUX_REDIS_PREFIX": f"bench-{secrets.token_hex(4)}:",
        "METRUX_PROXY_RATE_PER_S": "1000000",
        "METRUX_PROXY_BURST": "1000000",
        "METRUX_LOG_FORMAT": "json",
    }


def main() -> int:
    args = _arguments()

    data_dir = Path(tempfile.mkdtemp(prefix="mxbench"))
    alphabet = string.ascii_letters + string.digits
    api_key = "sk-ant-api03-" + "".join(secrets.choice(alphabet) for _ in range(93)) + "AA"
    env = _environment(data_dir)
    processes: list[subprocess.Popen[bytes]] = []
    logs = open(data_dir / "processes.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        fake_port, bare_port, raw_port = free_port(), free_port(), free_port()
        # The key travels in the environment, never argv (any user can read argv).
        bench_env = {**env, "BENCH_API_KEY": api_key}
        bare, raw = _start_upstreams(
            args, bench_env, logs, (fake_port, bare_port, raw_port), processes
        )
        control_port = free_port()
        control, owner = _start_control(args, env, logs, control_port)
        processes.append(control)
        control_url = f"http://127.0.0.1:{control_port}"
        wait_http(control_url + "/healthz")
        wait_http(f"http://127.0.0.1:{fake_port}/v1/models")
        wait_http(f"http://127.0.0.1:{bare_port}/v1/models")
        wait_http(f"http://127.0.0.1:{raw_port}/v1/models")
        http_json("POST", control_url + "/v1/keys", owner, {"api_key": api_key})
        session = http_json(
            "POST", control_url + "/v1/sessions", owner, {"candidate_email": "c@example.com"}
        )
        proxy, ready, start_ms = _start_proxy(
            args, env, logs, (session, control_url, fake_port), processes
        )
        start_cpu = cpu_seconds(proxy.pid)
        os.sched_setaffinity(0, {0} if 0 in os.sched_getaffinity(0) else os.sched_getaffinity(0))
        direct = Target("direct", f"http://127.0.0.1:{fake_port}", {"x-api-key": api_key})
        passthrough = Target("bare", f"http://127.0.0.1:{bare_port}", {"x-api-key": "unused"})
        floor = Target("raw", f"http://127.0.0.1:{raw_port}", {"x-api-key": "unused"})
        proxied = Target("proxy", ready["url"], {"x-api-key": session["sandbox_token"]})
        print(
            f"metrux proxy overhead: {args.calls} calls per c=1 point, {args.calls * 2} at "
            f"c={args.concurrency}, {args.stream_calls} streams of {args.stream_events} events "
            f"{args.stream_pace_ms} ms apart; "
            f"proxy pid {proxy.pid}, pass-throughs {bare.pid} (aiohttp) and {raw.pid} (raw) "
            "on CPU 1\n"
        )
        relays = [(passthrough, bare.pid), (floor, raw.pid), (proxied, proxy.pid)]
        results = asyncio.run(measure(direct, relays, args, control_pid=control.pid))
        results["proxy start to ready (ms)"] = start_ms
        results["proxy CPU to ready (s)"] = start_cpu
        return 0 if report(results, args.concurrency) else 1
    finally:
        _stop(processes, data_dir)
        logs.close()


def _stop(processes: list[subprocess.Popen[bytes]], data_dir: Path) -> None:
    """Stop what the run started, the embedded Redis server included."""
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    sock = data_dir / "redis" / "redis.sock"
    if sock.exists():
        from core.redis_server import stop_embedded_redis

        stop_embedded_redis(sock)


if __name__ == "__main__":
    # A SIGTERM (a timeout, a killed run) unwinds like Ctrl-C: the processes it started stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
