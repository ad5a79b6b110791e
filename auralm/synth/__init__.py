"""The synthetic audio world: reproducible multi-task audio (espeak-ng speech + numpy/scipy signals).

`generate(out, preset, seed, workers)` writes FLAC clips, one JSONL manifest per split and stats; see
world.py for the layout, tasks.py for the task families and auralm.data.manifest for the record schema.
"""

import importlib
from typing import Any

__all__ = ["PRESETS", "WorldError", "generate"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `auralm synth --help` (which imports auralm.synth.cli, so this file) must not pay for
    # the world's numpy/scipy signal stack.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("auralm.synth.world"), name)
