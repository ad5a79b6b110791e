"""The model `auralm.load()` opens when it is given no folder: a provider a front end registers.

The library knows no particular model; the package root (`auralm/__init__.py`, a front end) registers the embedded
demo model here, so `auralm.load()`, `auralm chat` and `auralm serve` without a folder open it, while infer/ never
imports the demo.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

_provider: Callable[[], Path] | None = None


def set_default_model(provider: Callable[[], Path] | None) -> None:
    """Make `provider()` (called on each use, so it may build the folder lazily) the default model folder."""
    global _provider
    _provider = provider


def default_model_dir() -> Path:
    """The registered default model folder; FileNotFoundError when no front end registered one."""
    if _provider is None:
        raise FileNotFoundError("no model folder was given and no default model is registered; pass a model folder")
    return _provider()
