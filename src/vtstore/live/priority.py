"""Lower this process's CPU and I/O priority (`nice` and `ionice -c3` in one).

A daemon that follows a tree (`vt watch`) must not slow down the work that
changes the tree: its reads go in the idle I/O class, its CPU time at nice 10.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

#: the ioprio_set system call number by machine (no libc wrapper exists)
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314, "ppc64le": 273}
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_BE = 2
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13


def ioprio_set(klass: int, level: int = 0) -> bool:
    """Set this process's I/O scheduling class (the kernel's `ioprio_set`);
    False where the call is not known or refused."""
    nr = _IOPRIO_SET.get(platform.machine())
    if nr is None:
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    value = (klass << IOPRIO_CLASS_SHIFT) | level
    return libc.syscall(nr, IOPRIO_WHO_PROCESS, 0, value) == 0


def lower_priority(nice: int = 10) -> None:
    """Nice this process to at least `nice` and put its I/O in the idle class."""
    try:
        now = os.getpriority(os.PRIO_PROCESS, 0)
        if now < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as e:
        log.info("could not lower the CPU priority: %s", e)
    if not ioprio_set(IOPRIO_CLASS_IDLE):
        log.info("could not put the I/O in the idle class")
