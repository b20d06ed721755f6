"""Workers die with their supervisor: a worker whose `ffstream run` was killed (even with -9) must not run on.

Two ways, the first where it exists:
- Linux: prctl(PR_SET_PDEATHSIG, SIGTERM), set in the child between fork and exec (supervisor's preexec_fn), so it
  covers the seconds a worker spends importing torch too. The kernel sends SIGTERM when the parent dies; the worker
  drains and exits as on any SIGTERM.
- elsewhere: a daemon thread in the worker that sees os.getppid() change (the orphan is re-parented) and stops it.

>>> die_with_parent(os.getppid())   # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_ENV = "FFSTREAM_SUPERVISOR_PID"  # set by the supervisor: the pid its workers must not outlive
WATCH_INTERVAL_S = 0.5  # the fallback thread's poll of os.getppid()


def _load_prctl():
    """libc's prctl, loaded once in the parent: dlopen between fork and exec could deadlock on a lock another thread held."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def set_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies; False where prctl does not exist."""
    return _PRCTL is not None and _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def preexec(parent_pid: int):
    """The supervisor's Popen(preexec_fn=...): death signal set before exec; a parent already gone ends the child."""

    def hook() -> None:
        set_death_signal()
        if os.getppid() != parent_pid:  # the parent died between fork and prctl: the signal will never come
            os._exit(1)

    return hook


def die_with_parent(parent_pid: int | None, on_orphan=None) -> None:
    """In a worker: make sure it does not outlive parent_pid. on_orphan() (default: SIGTERM to self) when it dies."""
    if parent_pid is None:
        return
    if os.getppid() != parent_pid:
        os._exit(1)
    if set_death_signal():
        return
    stop = on_orphan or (lambda: os.kill(os.getpid(), signal.SIGTERM))

    def watch() -> None:
        gone = threading.Event()
        while not gone.wait(WATCH_INTERVAL_S):
            if os.getppid() != parent_pid:
                stop()
                return

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def parent_from_env() -> int | None:
    value = os.environ.get(PARENT_ENV, "")
    return int(value) if value.isdigit() else None
