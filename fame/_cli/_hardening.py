"""Process hardening done at the edge: no core dumps, no dumpable memory.

A core dump of a node holds its master key and admission token, and a
dumpable process lets another process of the same user read its memory
(``ptrace``, ``/proc/<pid>/mem``, ``/proc/<pid>/environ``). The programs
that hold secrets (``fame sentinel``, ``fame node``, the offline storage
commands and ``fame-client``) call :func:`disable_core_dumps` first thing:
the core size limit goes to 0 (soft and hard, so a child cannot raise it),
and on Linux ``prctl(PR_SET_DUMPABLE, 0)`` makes the process non-dumpable,
which also makes its ``/proc/<pid>`` files owned by root.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["PR_SET_DUMPABLE", "disable_core_dumps"]

PR_SET_DUMPABLE = 4

_log = logging.getLogger("fame.cli")


def disable_core_dumps() -> bool:
    """Set ``RLIMIT_CORE`` to (0, 0) and, on Linux, clear the dumpable flag.

    Returns whether both were done. A failure is logged (at DEBUG) and
    never stops the program: the hardening is a second line of defence.
    """
    done = True
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, OSError, ValueError) as exc:  # not POSIX, or refused
        _log.debug("cannot set RLIMIT_CORE to 0: %s", exc)
        done = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                _log.debug("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
                done = False
        except (OSError, AttributeError) as exc:
            _log.debug("prctl is not available: %s", exc)
            done = False
    return done
