"""Read a live process's memory (SECURITY-CHECKS.md D.1): every readable mapping, through
/proc/PID/mem, not a core image (MADV_DONTDUMP pages are missing from those)."""

from __future__ import annotations

import os
from pathlib import Path


def can_read_memory_of_others() -> bool:
    """Root (or CAP_SYS_PTRACE) may read a process that set PR_SET_DUMPABLE=0."""
    return os.geteuid() == 0


def live_copies(pid: int, needle: bytes) -> int:
    found = 0
    proc = Path(f"/proc/{pid}")
    with (proc / "maps").open() as maps, (proc / "mem").open("rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if "r" not in perms:
                continue
            low, high = (int(part, 16) for part in span.split("-"))
            try:
                mem.seek(low)
                found += mem.read(high - low).count(needle)
            except (OSError, OverflowError, ValueError):
                continue  # [vvar], [vsyscall] and the like cannot be read
    return found


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)
