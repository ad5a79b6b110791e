"""The three recipes: multi-task pre-training, SFT and DPO, built from one `TrainConfig`.

    from auralm.train import load_config, train
    result = train(load_config("configs/train/tiny_sft.yaml", ["optim.lr=3e-4"]))

They differ only in their data (task records / conversations / preference pairs), their stage's default freeze
policy (see `STAGE_DEFAULTS`) and their objective; everything else (loop, checkpoints, torchrun, export) is shared.
A run writes into OUT_DIR: config.yaml, metrics.jsonl, loss.png, checkpoints/, adapter/ (when LoRA is used; peft
format) and final/, a Hugging Face Qwen2-Audio folder (weights + processor files) that transformers and vLLM load.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from auralm.checkpoint.hf import load_audiolm, read_generation_defaults, save_audiolm
from auralm.checkpoint.qwen_tokenizer import qwen2_audio_tokenizer
from auralm.config import AudioLMConfig, preset
from auralm.data.collate import Collator
from auralm.data.dataset import DataError, TrainingDataset, load_examples
from auralm.data.feature_cache import EncoderCache, encoder_fingerprint, fill_cache
from auralm.data.sampler import BatchPlan, Group
from auralm.data.specaug import SpecAugment
from auralm.model.audiolm import AudioLM
from auralm.processor import Processor
from auralm.text.formats import TAG_TOKENS
from auralm.train.checkpointing import Checkpointer, RunLock
from auralm.train.config import BUILTIN_TOKENIZER, TrainConfig, TrainConfigError
from auralm.train.distributed import DistInfo, barrier, init_distributed, shutdown, unwrap, wrap_engine
from auralm.train.freeze import apply_freeze, trainable_summary
from auralm.train.loop import Trainer, read_metrics
from auralm.train.lora import adapters_disabled, apply_lora, lora_layers, merge_lora, save_adapter
from auralm.train.objective import TrainModule
from auralm.train.optim import build_optimizer, build_scheduler
from auralm.train.plot import plot_losses


@dataclass
class RunResult:
    """What a finished run produced."""

    out_dir: Path  # the run folder
    final_dir: Path  # Hugging Face Qwen2-Audio folder of the trained model
    adapter_dir: Path | None  # peft-format LoRA adapters, when LoRA was used
    steps: int  # optimizer steps done
    metrics: list[dict[str, Any]]  # every record of metrics.jsonl
    trainable: dict[str, int]  # trainable / total parameter counts


# ---- building blocks ---------------------------------------------------------------------------------------
def load_processor(cfg: TrainConfig) -> Processor:
    """The processor of `model.tokenizer` (a folder, or 'qwen2-audio'), else of the model folder."""
    if cfg.model.tokenizer == BUILTIN_TOKENIZER:
        n_mels = (
            AudioLMConfig.from_pretrained(cfg.model.path) if cfg.model.path else preset(cfg.model.preset)
        ).encoder.n_mels
        # Qwen2-Audio's BPE and audio tokens, plus Qwen-Audio's task tags so both prompt conventions tokenize.
        return Processor(qwen2_audio_tokenizer(extra_tokens=TAG_TOKENS), n_mels=n_mels)
    return Processor.from_pretrained(cfg.model.tokenizer or cfg.model.path)


def build_model(cfg: TrainConfig, processor: Processor) -> AudioLM:
    """The starting model: a Hugging Face folder, or a preset (with `model.config` overrides) initialised from
    `seed` and sized to the tokenizer. Checks that tokenizer and model agree on the vocabulary."""
    dtype = getattr(torch, cfg.model.dtype)
    n_tokens = processor.tokenizer.get_vocab_size()
    if cfg.model.path is not None:
        model = load_audiolm(cfg.model.path, dtype=dtype)
    else:
        base = preset(cfg.model.preset).to_dict()
        merged = _deep_merge(base, cfg.model.config, "model.config")
        merged["audio_token_id"] = processor.audio_token_id
        if merged["decoder"]["vocab_size"] < n_tokens:
            merged["decoder"]["vocab_size"] = (
                -(-n_tokens // 64) * 64
            )  # room for every token, rounded for speed
        model_cfg = AudioLMConfig.from_dict(merged)
        torch.manual_seed(cfg.seed)
        model = AudioLM(model_cfg).to(dtype)
    if model.cfg.audio_token_id != processor.audio_token_id:
        raise TrainConfigError(
            f"the model's audio token id {model.cfg.audio_token_id} differs from the tokenizer's "
            f"<|AUDIO|> id {processor.audio_token_id}"
        )
    if model.cfg.decoder.vocab_size < n_tokens:
        raise TrainConfigError(
            f"the tokenizer has {n_tokens} tokens but the model's vocabulary has "
            f"{model.cfg.decoder.vocab_size} rows; give a model whose embeddings cover it"
        )
    if processor.n_mels != model.cfg.encoder.n_mels:
        raise TrainConfigError(
            f"the processor makes {processor.n_mels} mel bins, the encoder takes "
            f"{model.cfg.encoder.n_mels}; fix preprocessor_config.json or the model config"
        )
    return model


def _deep_merge(base: dict, over: dict, where: str) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            raise TrainConfigError(f"{where}: unknown key {k!r}; known: {sorted(base)}")
        out[k] = (
            _deep_merge(base[k], v, f"{where}.{k}")
            if isinstance(v, dict) and isinstance(base[k], dict)
            else v
        )
    return out


def build_datasets(
    cfg: TrainConfig, processor: Processor, multiple_of: int, verbose: bool = False
) -> tuple[TrainingDataset, BatchPlan, TrainingDataset | None, BatchPlan | None]:
    """Training data with its batch plan (mixing + bucketing), and the dev data if any."""
    examples, source_of = [], []
    for i, src in enumerate(cfg.data.train):
        rows, skipped = load_examples(
            src.path, cfg.recipe, cfg.data.convention, processor.chat_template, cfg.data.tasks_as_chat
        )
        if skipped and verbose:
            print(
                f"{src.path}: {len(rows)} rows for {cfg.recipe}; skipped "
                + ", ".join(f"{n} {why}" for why, n in skipped.items())
            )
        examples.extend(rows)
        source_of.extend([i] * len(rows))
    sa = cfg.data.specaugment
    spec = SpecAugment(sa.freq_masks, sa.freq_width, sa.time_masks, sa.time_width) if sa.enabled else None
    train_set = TrainingDataset(
        examples, processor, spec, cfg.seed, max_audio_seconds=cfg.data.max_audio_seconds
    )
    groups = train_set.groups(source_of, [s.weight for s in cfg.data.train], cfg.data.task_weights)
    d = cfg.data
    plan = BatchPlan(
        train_set.lengths, groups, d.max_tokens, d.batch_size, d.bucket_size, cfg.seed, multiple_of
    )
    if plan.steps_per_epoch(0) == 0:
        raise DataError(
            f"the training data makes {len(plan.epoch(0))} micro-batches per epoch, fewer than the "
            f"{multiple_of} one optimizer step needs (processes x grad_accum); add data or lower them"
        )
    if not cfg.data.dev:
        return train_set, plan, None, None
    dev_examples = [
        ex
        for path in cfg.data.dev
        for ex in load_examples(
            path, cfg.recipe, cfg.data.convention, processor.chat_template, cfg.data.tasks_as_chat
        )[0]
    ]
    dev_set = TrainingDataset(dev_examples, processor, None, cfg.seed, max_audio_seconds=d.max_audio_seconds)
    # Dev batches are fixed (no shuffling) and split evenly over the processes.
    world = multiple_of // cfg.optim.grad_accum
    dev_plan = BatchPlan(
        dev_set.lengths,
        [Group(np.arange(len(dev_set)))],
        d.max_tokens,
        d.batch_size,
        d.bucket_size,
        cfg.seed,
        multiple_of=world,
        shuffle=False,
    )
    return train_set, plan, dev_set, dev_plan


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reference_mode(cfg: TrainConfig) -> str:
    """'adapters' (the policy with LoRA switched off) or 'copy' (a frozen copy of the starting model)."""
    modes = cfg.part_modes()
    lora_only = (
        modes["llm"] == "lora"
        and set(modes.values()) <= {"lora", "freeze"}
        and cfg.parts.new_token_rows_from is None
    )
    if cfg.dpo.reference == "auto":
        return "adapters" if lora_only else "copy"
    return cfg.dpo.reference


# ---- the run -----------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, on_step: Callable[[int], None] | None = None) -> RunResult:
    """Run one recipe end to end (resuming from OUT_DIR's newest checkpoint); see the module docstring.

    `on_step(step)` runs after every optimizer step and its checkpoint (progress hooks, tests)."""
    cfg.validate()
    info = init_distributed(cfg.device)
    lock = RunLock(cfg.out_dir) if info.is_main else None  # rank 0 writes the folder; a second trainer refuses
    try:
        if lock is not None:
            lock.acquire()
        return _train(cfg, info, on_step)
    finally:
        if lock is not None:
            lock.release()
        shutdown()


def _train(cfg: TrainConfig, info: DistInfo, on_step: Callable[[int], None] | None) -> RunResult:
    out = Path(cfg.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
    modes = cfg.part_modes()
    if cfg.distributed == "fsdp" and info.distributed and cfg.parts.new_token_rows_from is not None:
        raise TrainConfigError("parts.new_token_rows_from is not supported with distributed=fsdp; use ddp")
    processor = load_processor(cfg)
    multiple_of = info.world_size * cfg.optim.grad_accum
    train_set, plan, dev_set, dev_plan = build_datasets(cfg, processor, multiple_of, verbose=info.is_main)
    total_steps = cfg.steps or max(1, round(cfg.epochs * plan.steps_per_epoch(0)))

    seed_everything(cfg.seed)
    model = build_model(cfg, processor)
    start = copy.deepcopy(model) if cfg.recipe == "dpo" and reference_mode(cfg) == "copy" else None
    apply_freeze(model, modes, cfg.parts.new_token_rows_from)
    lora_parts = [p for p, m in modes.items() if m == "lora"]
    if lora_parts:
        lc = cfg.lora
        apply_lora(model, lora_parts, lc.r, lc.alpha, lc.dropout, lc.targets)
    model.audio_tower.gradient_checkpointing = cfg.activation_checkpointing
    model.language_model.model.gradient_checkpointing = cfg.activation_checkpointing
    model.to(info.device)
    counts = trainable_summary(model)

    if cfg.data.cache_encoder:
        _attach_encoder_cache(cfg, info, model, [s for s in (train_set, dev_set) if s is not None])

    engine = wrap_engine(TrainModule(model), cfg.distributed, info)
    o = cfg.optim
    sharded = cfg.distributed == "fsdp" and info.distributed
    optimizer = build_optimizer(
        unwrap(engine), o.lr, o.weight_decay, tuple(o.betas), o.eps, fused=not sharded,
        part_lr_scale=o.part_lr_scale,
    )
    scheduler = build_scheduler(optimizer, o.warmup_steps, total_steps, o.min_lr_ratio)
    reference = _reference(cfg, info, engine, start) if cfg.recipe == "dpo" else None
    trainer = Trainer(
        cfg,
        info,
        engine,
        optimizer,
        scheduler,
        train_set,
        plan,
        Collator(processor.pad_token_id),
        total_steps,
        Checkpointer(out / "checkpoints", cfg.checkpoint.keep_last, info),
        reference,
        dev_set,
        dev_plan,
    )
    trainer.resume()
    if trainer.position.step < total_steps:
        trainer.fit(on_step)
    elif cfg.checkpoint.resume and info.is_main:
        print(f"{out}: already trained for {total_steps} steps; exporting")

    final_dir, adapter_dir = export(cfg, info, engine, processor)
    barrier(info)
    metrics = read_metrics(trainer.metrics_path) if trainer.metrics_path.exists() else []
    if info.is_main and cfg.log.plot:
        plot_losses(metrics, out / "loss.png", title=f"auralm {cfg.recipe}")
    return RunResult(out, final_dir, adapter_dir, trainer.position.step, metrics, counts)


def _attach_encoder_cache(
    cfg: TrainConfig, info: DistInfo, model: AudioLM, datasets: list[TrainingDataset]
) -> None:
    """Encode every clip once with the frozen encoder (each process a share), then train from the cache."""
    cache = EncoderCache(
        cfg.data.cache_dir or Path(cfg.out_dir) / "encoder_cache", encoder_fingerprint(model)
    )
    for ds in datasets:
        fill_cache(cache, ds, model, info.rank, info.world_size, progress=info.is_main and cfg.log.progress)
    barrier(info)
    for ds in datasets:
        ds.encoder_cache = cache


def _reference(cfg: TrainConfig, info: DistInfo, engine: nn.Module, start: AudioLM | None):
    """DPO's frozen reference: the starting model, as a separate copy or as the policy with adapters off."""
    if start is None:
        policy = unwrap(engine)

        def with_adapters_off(batch: dict) -> torch.Tensor:
            with adapters_disabled(policy):
                return policy(batch, sequences=True)

        return with_adapters_off
    start.requires_grad_(False).eval().to(info.device)
    ref = TrainModule(start)
    if cfg.distributed == "fsdp" and info.distributed:
        ref = wrap_engine(ref, "fsdp", info)
    return lambda batch: ref(batch, sequences=True)


# ---- export ------------------------------------------------------------------------------------------------
def export(
    cfg: TrainConfig, info: DistInfo, engine: nn.Module, processor: Processor
) -> tuple[Path, Path | None]:
    """Write OUT_DIR/final (Hugging Face folder) and, with LoRA, OUT_DIR/adapter (peft format)."""
    out = Path(cfg.out_dir)
    final_dir = out / "final"
    model = _full_model(cfg, info, engine)
    adapter_dir = None
    if model is not None:
        if any(True for _ in lora_layers(model)):
            adapter_dir = out / "adapter"
            save_adapter(model, adapter_dir, base_model=cfg.model.path)
            if cfg.lora.merge_on_export:
                merge_lora(model)
            else:
                _strip_lora(model)
        # The starting folder's stop and pad ids go with the trained weights.
        generation = read_generation_defaults(cfg.model.path) if cfg.model.path else None
        save_audiolm(model.cpu(), final_dir, generation_defaults=generation)
        processor.save_pretrained(final_dir)
    barrier(info)
    return final_dir, adapter_dir


def _full_model(cfg: TrainConfig, info: DistInfo, engine: nn.Module) -> AudioLM | None:
    """The trained model on rank 0 (gathered into a fresh CPU copy under FSDP); None on other ranks."""
    module = unwrap(engine)
    if not (cfg.distributed == "fsdp" and info.distributed):
        return module.model if info.is_main else None
    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not info.is_main:
        return None
    with torch.device("meta"):
        fresh = TrainModule(AudioLM(module.model.cfg))
    layers = [name.removeprefix("model.") for name, _ in lora_layers(module)]
    if layers:
        lc = cfg.lora
        parts = [p for p, m in cfg.part_modes().items() if m == "lora"]
        apply_lora(fresh.model, parts, lc.r, lc.alpha, lc.dropout, lc.targets)
    fresh.load_state_dict(state, assign=True)
    return fresh.model


def _strip_lora(model: nn.Module) -> None:
    """Put each adapted Linear back as it was (the adapters were saved separately)."""
    for name, layer in list(lora_layers(model)):
        path, _, attr = name.rpartition(".")
        setattr(model.get_submodule(path) if path else model, attr, layer.base_layer)


def pretrain(cfg: TrainConfig, **kwargs) -> RunResult:
    """Multi-task pre-training on task records (either prompt convention)."""
    return train(dataclasses.replace(cfg, recipe="pretrain"), **kwargs)


def sft(cfg: TrainConfig, **kwargs) -> RunResult:
    """Supervised fine-tuning on ChatML conversations (audio analysis and voice chat together)."""
    return train(dataclasses.replace(cfg, recipe="sft"), **kwargs)


def dpo(cfg: TrainConfig, **kwargs) -> RunResult:
    """Direct preference optimisation against a frozen copy of the starting model."""
    return train(dataclasses.replace(cfg, recipe="dpo"), **kwargs)
