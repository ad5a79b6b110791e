"""Training: multi-task pre-training, SFT and DPO recipes over one loop (`auralm train CONFIG.yaml`)."""

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "auralm.train.config", "TrainConfigError": "auralm.train.config", "load_config": "auralm.train.config",
    "RunResult": "auralm.train.recipes", "dpo": "auralm.train.recipes", "pretrain": "auralm.train.recipes",
    "sft": "auralm.train.recipes", "train": "auralm.train.recipes",
}
__all__ = ["RunResult", "TrainConfig", "TrainConfigError", "dpo", "load_config", "pretrain", "sft", "train"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `auralm train --help` (which imports auralm.train.cli, so this file) must not load
    # torch and the recipes.
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
