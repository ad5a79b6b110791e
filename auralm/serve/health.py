"""What `GET /health` checks: the scheduler thread is alive and making progress, and the process has file
descriptors to spare.

A server can be up and useless: the scheduler thread stuck inside the model (no request ever finishes), or the
process out of descriptors (uvicorn's accept() fails, so no new client gets in) while an old keep-alive connection
still reaches /health. Each check names what is wrong, so the 503 says why.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from auralm.serve.scheduler import Scheduler
from auralm.serve.settings import ServeSettings

_FD_DIRS = ("/proc/self/fd", "/dev/fd")  # Linux; macOS and the BSDs


@dataclass(frozen=True)
class Health:
    status: str  # "ok", "down" (the scheduler thread is gone), "stalled" or "out_of_file_descriptors"
    reason: str | None  # what is wrong, for the operator (None when ok)
    stalled_for: float  # seconds the scheduler has not gone round its loop while requests wait or run
    open_fds: int | None  # descriptors open in this process (None where it cannot be counted)
    fd_limit: int | None  # the soft RLIMIT_NOFILE (None: unlimited or unknown)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def open_fds() -> int | None:
    """Descriptors open in this process, or None where no fd folder lists them."""
    for folder in _FD_DIRS:
        try:
            return len(os.listdir(folder)) - 1  # listing the folder opens one descriptor itself
        except OSError:
            continue
    return None


def fd_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def check(scheduler: Scheduler, settings: ServeSettings) -> Health:
    """The server's health; the first failing check gives the status."""
    stalled_for = scheduler.stalled_for
    used, limit = open_fds(), fd_limit()
    status, reason = "ok", None
    if not scheduler.alive:
        status, reason = "down", "the scheduler thread is not running"
    elif stalled_for > settings.health_stall_seconds:
        status = "stalled"
        reason = (
            f"the scheduler has made no progress for {stalled_for:.1f} s while requests wait "
            f"(limit {settings.health_stall_seconds:g} s)"
        )
    elif used is not None and limit is not None and limit - used < settings.health_min_free_fds:
        status = "out_of_file_descriptors"
        reason = (
            f"{used} of {limit} file descriptors are open; fewer than {settings.health_min_free_fds} are "
            "free, so new connections may be refused"
        )
    return Health(status, reason, round(stalled_for, 3), used, limit)
