"""auralm: an open implementation of the Qwen-Audio / Qwen2-Audio audio-language model system.

Public API: `load()` (chat / stream / transcribe), `AudioLM` (the model), `Processor` (text + audio -> model
inputs), `AudioLMConfig`, `GenerationConfig`, `load_audio` / `AudioError`.

The names are imported on first use (a module `__getattr__`): every `auralm.*` import runs this file first, and
the `auralm` command (`import auralm.cli`) must answer `--help` and argument errors without loading torch (seconds
on a busy machine). `import auralm; auralm.load(...)` and `from auralm import AudioLM` work as if imported here.
"""

from __future__ import annotations

import importlib
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from typing import Any

from auralm.infer.registry import set_default_model
from auralm.version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "AudioChat": "auralm.infer.api", "load": "auralm.infer.api",
    "AudioError": "auralm.audio.io", "load_audio": "auralm.audio.io",
    "AudioLM": "auralm.model.audiolm",
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


class _AttachBindings(MetaPathFinder):
    """Runs `auralm.bindings` (AudioLM's `from_pretrained` / `save_pretrained` / `generate`) right after
    `auralm.model.audiolm` is loaded, whichever import loads it: the class has its transformers-style methods
    wherever it is imported from, as when this file imported the bindings itself, without that import costing
    the CLI torch's load time."""

    MODULE = "auralm.model.audiolm"

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != self.MODULE:
            return None
        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            importlib.import_module("auralm.bindings")

        spec.loader.exec_module = exec_module  # type: ignore[method-assign] (this spec's own loader instance)
        return spec


if not any(type(finder).__name__ == "_AttachBindings" for finder in sys.meta_path):  # once, even after a reload
    sys.meta_path.insert(0, _AttachBindings())
