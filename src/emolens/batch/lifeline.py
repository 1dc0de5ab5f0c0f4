"""Worker processes that die with their driver.

A driver killed with SIGKILL (or by the OOM killer) cannot stop its workers; each holds its models
(about 400 MB) and would run on, unowned. Each worker therefore asks, when it starts, to die with
the process that started it: Linux sends it SIGKILL then (``PR_SET_PDEATHSIG``); elsewhere a thread
polls the parent's pid."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5


def die_with_parent(parent: int) -> str:
    """End this process when ``parent`` (the pid that started it) ends; returns how: "prctl" or "watch"."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            asked = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            asked = False
        if asked:
            if os.getppid() != parent:  # it died before we asked: nobody would send the signal
                os._exit(1)
            return "prctl"
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="emolens-parent-watch").start()
    return "watch"


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(1)
