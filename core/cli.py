"""The `metrux` command: discovers each part's subcommands through entry points.

Parts register a function `register(subparsers)` under the "metrux.commands" entry-point
group, so core never imports them. Each subcommand sets `handler(args, settings) -> int`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from core.logging import configure_logging
from core.settings import Settings, SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metrux", description="BYOK proxy for AI-assisted coding assessments."
    )
    parts = parser.add_subparsers(dest="part", required=True, metavar="PART")
    for entry in sorted(entry_points(group="metrux.commands"), key=lambda e: e.name):
        entry.load()(parts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"metrux: invalid setting {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    return int(args.handler(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
