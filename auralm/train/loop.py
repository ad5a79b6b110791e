"""The one training loop every recipe runs: accumulation, clipping, AdamW + schedule, logging, dev loss,
checkpoints and resumption.

A step takes `grad_accum` micro-batches on each of the `world_size` processes. The loss of the step is the mean
over everything the step saw, whoever saw it: each micro-batch's summed loss is divided by the step's global
count (target tokens for next-token prediction, pairs for DPO, summed over micro-batches and processes with one
all-reduce before the first backward) and multiplied by world_size to undo DDP's gradient averaging. So one
process with accumulation 2 and two processes without it compute the same gradients, and a resumed run repeats
the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from auralm.cpu import SLOW_BF16, fast_bf16
from auralm.data.collate import Collator
from auralm.data.dataset import TrainingDataset
from auralm.data.sampler import BatchPlan, RankBatchSampler
from auralm.train.checkpointing import Checkpointer, CheckpointError
from auralm.train.config import TrainConfig
from auralm.train.distributed import DistInfo, all_reduce_sum, unwrap
from auralm.train.losses import dpo_terms
from auralm.train.objective import count_targets, to_device

# reference(batch) -> summed target log-probabilities per row (R,) of the frozen reference model (DPO)
Reference = Callable[[dict], torch.Tensor]


@dataclass
class Position:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch of the batch plan
    batch_in_epoch: int = 0  # global micro-batches of `epoch` already consumed
    tokens_seen: int = 0  # input tokens (text + audio) trained on, all processes
    elapsed: float = 0.0  # seconds of training, summed over resumptions


class Trainer:
    """Runs `total_steps` optimizer steps of one recipe ('lm' = pre-training / SFT, 'dpo')."""

    def __init__(
        self,
        cfg: TrainConfig,
        info: DistInfo,
        engine: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_set: TrainingDataset,
        plan: BatchPlan,
        collator: Collator,
        total_steps: int,
        checkpointer: Checkpointer,
        reference: Reference | None = None,
        dev_set: TrainingDataset | None = None,
        dev_plan: BatchPlan | None = None,
    ):
        self.cfg, self.info, self.engine = cfg, info, engine
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_set, self.plan, self.collator = train_set, plan, collator
        self.dev_set, self.dev_plan = dev_set, dev_plan
        self.total_steps, self.checkpointer, self.reference = total_steps, checkpointer, reference
        self.kind = "dpo" if cfg.recipe == "dpo" else "lm"
        if self.kind == "dpo" and reference is None:
            raise ValueError("DPO needs a reference model")
        self.out = Path(cfg.out_dir)
        self.metrics_path = self.out / "metrics.jsonl"
        self.position = Position()
        self.trainable = [p for p in unwrap(engine).parameters() if p.requires_grad]
        device = info.device.type
        if cfg.bf16 and not fast_bf16(device) and info.is_main:
            print(f"warning: bf16=true: {SLOW_BF16}; bf16=false trains faster here", file=sys.stderr, flush=True)
        self.autocast = (
            (lambda: torch.autocast(device, dtype=torch.bfloat16)) if cfg.bf16 else contextlib.nullcontext
        )

    # ---- resumption ------------------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the newest complete checkpoint, if any; returns whether one was loaded."""
        self.checkpointer.remove_partial()
        path = self.checkpointer.latest()
        if path is not None and not self.cfg.checkpoint.resume:
            raise CheckpointError(
                f"{path.parent} holds checkpoints of an earlier run; resume it "
                "(checkpoint.resume=true) or train into a new out_dir"
            )
        if path is None:
            if self.info.is_main and self.metrics_path.exists():
                self.metrics_path.unlink()
            return False
        state = self.checkpointer.load(path, unwrap(self.engine), self.optimizer, self.scheduler)
        saved = state["position"]
        if state["micro_batches_per_step"] != self.plan.multiple_of:
            raise ValueError(
                f"{path} was trained with {state['micro_batches_per_step']} micro-batches per step, "
                f"this run has {self.plan.multiple_of}; keep grad_accum and the process count"
            )
        self.position = Position(**saved)
        if self.info.is_main:
            self._truncate_metrics(self.position.step)
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines written after the checkpoint we resume from (and a line cut short by a kill), so
        the log has no repeated steps."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def save(self) -> Path:
        state = {"position": asdict(self.position), "micro_batches_per_step": self.plan.multiple_of}
        return self.checkpointer.save(
            self.position.step, unwrap(self.engine), self.optimizer, self.scheduler, state
        )

    # ---- data ------------------------------------------------------------------------------------------------
    def _loader(self, dataset: TrainingDataset, plan: BatchPlan, epoch: int, start: int) -> DataLoader:
        dataset.epoch = epoch
        sampler = RankBatchSampler(plan, epoch, self.info.rank, self.info.world_size, start)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.info.device.type == "cuda",
        )

    def _micro_batches(self) -> Iterator[dict]:
        epoch, start = self.position.epoch, self.position.batch_in_epoch
        while True:
            yield from self._loader(self.train_set, self.plan, epoch, start)
            epoch, start = epoch + 1, 0

    def _advance(self) -> None:
        p = self.position
        p.batch_in_epoch += self.plan.multiple_of
        if p.batch_in_epoch >= len(self.plan.epoch(p.epoch)):
            p.epoch, p.batch_in_epoch = p.epoch + 1, 0

    # ---- one step ---------------------------------------------------------------------------------------------
    def _weight(self, batch: dict) -> int:
        """What the step's loss is averaged over: target tokens (LM) or pairs (DPO)."""
        return count_targets(batch) if self.kind == "lm" else batch["input_ids"].shape[0] // 2

    def _loss_sums(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward one micro-batch -> summed loss (with graph) and summed metrics."""
        with self.autocast():
            if self.kind == "lm":
                loss, _ = self.engine(batch)
                return loss, {"loss": float(loss.detach())}
            logps = self.engine(batch, sequences=True)  # (2P,)
            with torch.no_grad():
                ref = self.reference(batch)  # (2P,)
        P = logps.shape[0] // 2
        terms = dpo_terms(logps[:P], logps[P:], ref[:P], ref[P:], self.cfg.dpo.beta)
        loss = terms.losses.sum()
        return loss, {
            "loss": float(loss.detach()),
            "rewards_chosen": float(terms.chosen_rewards.sum()),
            "rewards_rejected": float(terms.rejected_rewards.sum()),
            "accuracy": float(terms.accuracies.sum()),
            "margin": float(terms.margins.sum()),
        }

    def train_step(self, micro: list[dict]) -> dict[str, float]:
        W = self.info.world_size
        local_weight = sum(self._weight(b) for b in micro)
        local_tokens = sum(int(b["attention_mask"].sum()) for b in micro)
        local_samples = sum(b["input_ids"].shape[0] // (2 if b["paired"] else 1) for b in micro)
        total_weight, tokens, samples = all_reduce_sum([local_weight, local_tokens, local_samples], self.info)
        if total_weight == 0:
            raise RuntimeError("a training step has no target tokens; check the label masks of the data")
        sums: dict[str, float] = {}
        for a, batch in enumerate(micro):
            batch = to_device(batch, self.info.device)
            no_sync = a < len(micro) - 1 and hasattr(self.engine, "no_sync")
            with self.engine.no_sync() if no_sync else contextlib.nullcontext():
                loss, metrics = self._loss_sums(batch)
                (loss * (W / total_weight)).backward()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        max_norm = self.cfg.optim.max_grad_norm or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        keys = sorted(sums)
        totals = dict(zip(keys, all_reduce_sum([sums[k] for k in keys], self.info)))
        out = {k: v / total_weight for k, v in totals.items()}
        out.update(
            lr=lr,
            grad_norm=float(grad_norm),
            tokens=int(tokens),
            samples=int(samples),
            weight=int(total_weight),
        )
        return out

    # ---- evaluation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean dev loss (and DPO metrics) over the dev set, or its first `dev_max_batches` micro-batches."""
        assert self.dev_set is not None and self.dev_plan is not None
        self.engine.eval()
        sums: dict[str, float] = {}
        weight = 0
        limit = self.cfg.data.dev_max_batches or None
        for i, batch in enumerate(self._loader(self.dev_set, self.dev_plan, 0, 0)):
            if limit is not None and i >= limit:
                break
            weight += self._weight(batch)
            _, metrics = self._loss_sums(to_device(batch, self.info.device))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        self.engine.train()
        keys = sorted(sums)
        values = all_reduce_sum([weight] + [sums[k] for k in keys], self.info)
        return {f"dev_{k}": v / max(values[0], 1) for k, v in zip(keys, values[1:])}

    # ---- the loop --------------------------------------------------------------------------------------------
    def fit(self, on_step: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Train until `total_steps`; returns the metric records of this call. `on_step(step)` runs after each
        optimizer step (and its checkpoint), e.g. to stop early in tests."""
        cfg, pos = self.cfg, self.position
        self.engine.train()
        records: list[dict[str, Any]] = []
        bar = tqdm(
            total=self.total_steps,
            initial=pos.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.info.is_main and cfg.log.progress),
            desc=cfg.recipe,
        )
        data = self._micro_batches()
        A = cfg.optim.grad_accum
        while pos.step < self.total_steps:
            t0 = time.perf_counter()
            micro = [next(data) for _ in range(A)]
            m = self.train_step(micro)
            dt = time.perf_counter() - t0
            pos.step += 1
            pos.tokens_seen += m["tokens"]
            pos.elapsed += dt
            self._advance()
            record = {
                "step": pos.step,
                "epoch": pos.epoch,
                **m,
                "tokens_per_s": m["tokens"] / dt,
                "elapsed": pos.elapsed,
            }
            bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
            bar.update(1)
            if pos.step % cfg.log.every == 0 or pos.step == self.total_steps:
                self._log(record)
                records.append(record)
            last = pos.step == self.total_steps
            if self.dev_set is not None and (
                (cfg.log.eval_every and pos.step % cfg.log.eval_every == 0) or last
            ):
                dev = {"step": pos.step, **self.evaluate()}
                self._log(dev)
                records.append(dev)
                bar.write(
                    f"step {pos.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in dev.items() if k != "step")
                )
            if (cfg.checkpoint.every and pos.step % cfg.checkpoint.every == 0) or last:
                self.save()
            if on_step is not None:
                on_step(pos.step)
        bar.close()
        data.close()  # stops the DataLoader's workers
        return records

    def _log(self, record: dict[str, Any]) -> None:
        if self.info.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

