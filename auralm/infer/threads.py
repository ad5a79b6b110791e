"""How many CPU threads a loaded model computes with: chosen deliberately, once per `load()`.

torch's own default is one intra-op thread per core. On an idle machine that is the fastest choice; on a shared one
it is the slowest: every parallel region waits for its last thread, and a thread whose core another process holds
waits a whole scheduler slice. On a 2-core VM the demo model transcribed the 11 s JFK clip in 0.9 s with 2 threads
and 1.3 s with 1 when idle, but in 6.6-26 s with 2 and 1.4-2.7 s with 1 at a load average of 3.5-7.9 (README,
"Performance on your machine").

So the default counts the cores that other processes leave idle: the CPUs this process may use minus the 1-minute
load average, rounded, at least 1 and at most torch's default. An explicit choice always wins: `load(threads=N)`,
`--threads N`, or OMP_NUM_THREADS in the environment (which torch applied at import).
"""

from __future__ import annotations

import os

import torch

_TORCH_DEFAULT = torch.get_num_threads()  # at import: one per core, or OMP_NUM_THREADS


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def idle_cpus() -> int:
    """Usable CPUs that other processes leave idle: `usable_cpus()` minus the 1-minute load average, rounded, at
    least 1 (all of them where the OS reports no load average)."""
    cpus = usable_cpus()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        return cpus
    return max(1, min(cpus, round(cpus - busy)))


def default_threads() -> int:
    """The thread count `load()` picks when told none: OMP_NUM_THREADS when set, else `idle_cpus()` capped at
    torch's default."""
    if os.environ.get("OMP_NUM_THREADS"):
        return _TORCH_DEFAULT
    return max(1, min(_TORCH_DEFAULT, idle_cpus()))


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count (process-wide) to `threads`, or to `default_threads()` when None;
    returns the count set."""
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    return threads
