"""auralm: an open implementation of the Qwen-Audio / Qwen2-Audio audio-language model system.

Public API: `load()` (chat / stream / transcribe), `AudioLM` (the model), `Processor` (text + audio -> model
inputs), `AudioLMConfig`, `GenerationConfig`, `load_audio` / `AudioError`.

The names are imported on first use (a module `__getattr__`): every `auralm.*` import runs this file first, and
the `auralm` command (`import auralm.cli`) must answer `--help` and argument errors without loading torch (seconds
on a busy machine). `import auralm; auralm.load(...)` and `from auralm import AudioLM` work as if imported here.
`AudioLM` comes from `auralm.bindings`, which attaches `from_pretrained` / `save_pretrained` / `generate` to the
model class: the public name always has them (`auralm.model.audiolm.AudioLM` is the same class, bound once the
public name or the bindings have been imported; library code never calls them).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from auralm.infer.registry import set_default_model
from auralm.version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "AudioChat": "auralm.infer.api", "load": "auralm.infer.api",
    "AudioError": "auralm.audio.io", "load_audio": "auralm.audio.io",
    "AudioLM": "auralm.bindings",  # the model class with transformers' entry points attached
    "AudioLMConfig": "auralm.config",
    "GenerationConfig": "auralm.infer.sampling",
    "Processor": "auralm.processor",
}

__all__ = [
    "AudioChat", "AudioError", "AudioLM", "AudioLMConfig", "GenerationConfig", "Processor", "__version__", "load",
    "load_audio",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'auralm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def _demo_model_dir() -> Path:
    # Imported on first use: the demo's assembly code imports torch.
    from auralm.demo.locate import demo_model_dir

    return demo_model_dir()


# `load()` with no folder (and `auralm chat` / `serve` without --model) opens the embedded demo model: the choice
# is made here, at the front, so that infer/ never imports the demo.
set_default_model(_demo_model_dir)

