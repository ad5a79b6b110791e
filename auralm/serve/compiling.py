"""The compiled decode step for a running server: compiled in a background thread, swapped in when ready.

`auralm serve` answers from its first second: requests decode eagerly while a thread compiles the decode step
(`auralm.infer.compiled`, a minute or more on a CPU) and warms up its graphs; batches prefilled after that decode
through the compiled graphs. A request keeps the path its batch started with. `GET /health` reports the state.

Modes (`ServeSettings.compile`): "off" (eager), "on" (always compile), "auto" (compile where
`compiled.compile_pays` says it pays: a float model on a CPU with memory to spare).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from auralm.infer.api import AudioChat
from auralm.serve.scheduler import Scheduler

MODES = ("auto", "on", "off")
COMPILE_SWITCH_INTERVAL = 1e-4  # seconds; Python's GIL switch interval while the compile thread runs
BACKGROUND_NICE = 19  # the compile thread's priority (and that of the threads and workers it starts)


def lower_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: niceness is per thread, and the threads and
    processes it starts inherit it: inductor's compile workers), so that requests decoding meanwhile keep the
    cores."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError):  # elsewhere a thread id names no process; or not permitted: compile anyway
        pass


class DecodeCompiler:
    """Compiles `chat.model`'s decode step off the request path and hands it to `scheduler` when it is ready."""

    def __init__(self, chat: AudioChat, scheduler: Scheduler, mode: str, log: Callable[[str], None]):
        if mode not in MODES:
            raise ValueError(f"compile mode must be one of {MODES}, got {mode!r}")
        self.chat, self.scheduler, self.mode, self.log = chat, scheduler, mode, log
        self.state = "eager"  # "eager", "compiling", "compiled" or "failed"
        self.reason = "compile is off" if mode == "off" else "not started"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.mode == "off" or self._thread is not None:
            return
        if self.chat.step_fn is not None:  # the AudioChat was loaded with compile=True
            self.scheduler.step_fn = self.chat.step_fn
            self.state, self.reason = "compiled", "loaded compiled"
            return
        from auralm.infer.compiled import (
            compile_pays,  # imports torch's inductor: only when compiling is possible
        )

        pays, why = compile_pays(self.chat.model)
        if self.mode == "auto" and not pays:
            self.reason = f"eager decoding: {why}"
            self.log(f"{self.reason} (--compile on forces compiling)")
            return
        self.state, self.reason = "compiling", why
        self.log("compiling the decode step in the background; requests decode eagerly until it is ready")
        self._thread = threading.Thread(target=self._run, name="auralm-compile", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from auralm.infer.compiled import compile_decode, warm_up

        lower_priority()
        # Compiling is Python that holds the GIL for long stretches, and an eager decode step takes and gives back
        # the GIL at each of its ~600 operators: at the default 5 ms switch interval each of those waits up to
        # 5 ms (measured on the demo model: a 24-token answer took 99-181 s during the compile, 2 s otherwise).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(COMPILE_SWITCH_INTERVAL)
        try:
            step = compile_decode(self.chat.model)
            seconds = warm_up(step, self.chat.model, log=self.log)
        except Exception as err:  # a failed compile leaves the server decoding eagerly, as it did so far
            self.state, self.reason = "failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            self.log(f"compiling the decode step failed ({self.reason}); decoding stays eager")
            return
        finally:
            sys.setswitchinterval(interval)
        self.chat.step_fn = step
        self.scheduler.step_fn = step  # read by the scheduler thread at each new prefill
        self.state, self.reason = "compiled", f"compiled in {seconds:.0f} s"
        self.log(f"the decode step is compiled ({seconds:.0f} s); new requests decode through it")

    def status(self) -> dict[str, str]:
        return {"mode": self.mode, "state": self.state, "reason": self.reason}
