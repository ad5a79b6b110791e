"""stderr for the front ends: the terminal a progress bar draws on, and their "auralm: ..." status lines."""

from __future__ import annotations

import os
import sys


def bar_shape() -> dict[str, int]:
    """tqdm's `ncols` / `nrows` for a bar on stderr: its terminal's size, with 80 x 24 for a side it reports as 0
    (some pseudo-terminals do: `script`, `docker exec -t`), where tqdm would draw nothing at all."""
    try:
        columns, lines = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # not a terminal: the bar is off anyway
        columns, lines = 0, 0
    return {"ncols": columns or 80, "nrows": lines or 24}


def stderr_line(line: str) -> None:
    """A progress or status line of a front end on stderr, prefixed as every auralm message is."""
    print(f"auralm: {line}", file=sys.stderr, flush=True)
