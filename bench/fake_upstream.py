"""Run the test suite's fake Anthropic API as a process, for the benchmark.

Usage: python -m bench.fake_upstream PORT API_KEY STREAM_EVENTS PACE_MS
"""

from __future__ import annotations

import sys

from aiohttp import web

from tests.fakes.anthropic import FakeAnthropic


def main() -> None:
    port, api_key, events = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    pace = float(sys.argv[4]) / 1000
    # message_start, content_block_start, ping, N deltas, block stop, message_delta, stop
    pieces = [f"word{i} " for i in range(max(1, events - 6))]
    fake = FakeAnthropic(api_key, stream_pieces=pieces, stream_pace=pace, record=False)
    web.run_app(fake.app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
