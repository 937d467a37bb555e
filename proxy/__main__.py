"""`python -m proxy run …`: the same as `metrux proxy run …`, started faster.

It registers only the proxy's commands, so start-up skips the scan of installed packages
for every part's entry point. The sandbox launcher starts proxies this way.
"""

from __future__ import annotations

import sys

from core.cli import main as cli_main
from proxy.cli import register


def main() -> int:
    return cli_main(["proxy", *sys.argv[1:]], registers={"proxy": register})


if __name__ == "__main__":
    sys.exit(main())
