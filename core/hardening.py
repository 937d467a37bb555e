"""Process hardening: no core file, no same-uid ptrace, no /proc reads of this process.

For the proxy, which holds a plaintext key, and the sandbox launcher, which holds the
proxy's bootstrap token until the proxy has attached. A non-dumpable process's
/proc/PID/{environ,mem,maps,…} belong to root, so a workload under the same uid cannot
read them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource

PR_SET_DUMPABLE = 4


def warn(logger: str, event: str, **fields: object) -> None:
    """A warning from a hardening step. structlog is imported only on this rare path: the
    key-opening child runs these steps and would otherwise load it (and asyncio) for
    nothing, on the proxy's start path."""
    import structlog

    structlog.get_logger(logger).warning(event, **fields)


def disable_core_dumps() -> None:
    """No core file, and no ptrace attach by same-uid processes (PR_SET_DUMPABLE=0)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        warn(__name__, "prctl_unavailable")
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        warn(__name__, "prctl_set_dumpable_failed", errno=ctypes.get_errno())
