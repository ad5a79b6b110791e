"""auralm: an open implementation of the Qwen-Audio / Qwen2-Audio audio-language model system.

Public API: `load()` (chat / stream / transcribe), `AudioLM` (the model), `Processor` (text + audio -> model
inputs), `AudioLMConfig`, `GenerationConfig`, `load_audio` / `AudioError`.
"""

from auralm import bindings  # noqa: F401 (attaches AudioLM.from_pretrained / .save_pretrained / .generate)
from auralm.audio import AudioError, load_audio
from auralm.config import AudioLMConfig
from auralm.demo.locate import demo_model_dir
from auralm.infer.api import AudioChat, load
from auralm.infer.registry import set_default_model
from auralm.infer.sampling import GenerationConfig
from auralm.model.audiolm import AudioLM
from auralm.processor import Processor
from auralm.version import __version__

# `load()` with no folder (and `auralm chat` / `serve` without --model) opens the embedded demo model: the choice
# is made here, at the front, so that infer/ never imports the demo.
set_default_model(demo_model_dir)

__all__ = [
    "AudioChat", "AudioError", "AudioLM", "AudioLMConfig", "GenerationConfig", "Processor", "__version__", "load",
    "load_audio",
]
