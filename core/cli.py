"""The `metrux` command: discovers each part's subcommands through entry points.

Parts register a function `register(subparsers)` under the "metrux.commands" entry-point
group, so core never imports them. Each subcommand sets `handler(args, settings) -> int`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.logging import configure_logging
from core.settings import Settings, SettingsError

Register = Callable[[Any], None]


def build_parser(registers: dict[str, Register] | None = None) -> argparse.ArgumentParser:
    """The command line of every part found through entry points, or of `registers` only
    (a part's own `python -m` entry, which skips the entry-point scan)."""
    parser = argparse.ArgumentParser(
        prog="metrux", description="BYOK proxy for AI-assisted coding assessments."
    )
    parts = parser.add_subparsers(dest="part", required=True, metavar="PART")
    if registers is None:
        from importlib.metadata import entry_points

        found = entry_points(group="metrux.commands")
        registers = {entry.name: entry.load() for entry in found}
    for _, register in sorted(registers.items()):
        register(parts)
    return parser


def main(argv: Sequence[str] | None = None, registers: dict[str, Register] | None = None) -> int:
    args = build_parser(registers).parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"metrux: invalid setting {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    return int(args.handler(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
