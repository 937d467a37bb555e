"""Run the Anthropic stand-in (sandbox/standin.py, also the test suite's fake) as a process,
for the benchmark.

Usage: BENCH_API_KEY=... python -m bench.fake_upstream PORT STREAM_EVENTS PACE_MS
(the key in the environment, not argv: another user may read a process's argv)
"""

from __future__ import annotations

import os
import sys

from aiohttp import web

from sandbox.standin import FakeAnthropic


def main() -> None:
    port, events, pace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000
    api_key = os.environ["BENCH_API_KEY"]
    # message_start, content_block_start, ping, N deltas, block stop, message_delta, stop
    pieces = [f"word{i} " for i in range(max(1, events - 6))]
    fake = FakeAnthropic(api_key, stream_pieces=pieces, stream_pace=pace, record=False)
    web.run_app(fake.app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
