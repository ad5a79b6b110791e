"""Checkpoints that never lose work: atomic, rotating, and complete enough to resume bit for bit.

Layout: OUT_DIR/checkpoints/step-00000120/ holding
    trainable.safetensors   the trained parameters (frozen ones are rebuilt from the config's starting model)
    optimizer.pt            AdamW state, keyed by parameter name
    rng-rank{r}.pt          each process's torch / CUDA / Python / NumPy random states
    state.json              step, data position, scheduler state, tokens seen (written last)
A checkpoint is written into `step-N.tmp/`, every file fsynced, then the folder is renamed to `step-N` and the
parent fsynced: a folder named `step-N` is always complete, and a run killed mid-save (SIGKILL included) leaves
only a `.tmp` folder that the next run deletes. Old checkpoints are renamed to `.deleting` before removal, so a
kill during rotation cannot leave a half-deleted folder that looks complete.

One trainer per run folder: `RunLock` holds OUT_DIR/train.lock for the whole run. Two trainers in one folder would
delete each other's `.tmp` saves and interleave checkpoints; the second one refuses instead, naming the first's PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from auralm.train.distributed import DistInfo, barrier

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.json"
MODEL_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
LOCK_FILE = "train.lock"


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from (different run layout, or files missing)."""


class RunLocked(RuntimeError):
    """Another live trainer holds the run folder."""


class RunLock:
    """OUT_DIR/train.lock, held with `flock` by the one trainer writing the folder; it holds that trainer's PID.

    The kernel releases a flock when its process ends, however it ends (SIGKILL included), so a lock file left by a
    dead trainer is free and the next trainer takes it over (`taken_over_from` is the PID it names). Deciding by the
    PID alone would be fooled by PID reuse. The file stays after release (removing it would race with a trainer that
    has it open); it is emptied, and its content is only ever read for messages.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.taken_over_from: int | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise RunLocked(
                f"{self.folder} is in use by another trainer (PID {holder if holder is not None else 'unknown'}); "
                "wait for it to finish or stop it, or train into another out_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.taken_over_from = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


# ---- random states -----------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- files -------------------------------------------------------------------------------------------------
def torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


class Checkpointer:
    """Saves and finds checkpoints of one run; every process calls save/load (collectives inside)."""

    OPTIONS = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)

    def __init__(self, folder: str | Path, keep_last: int, info: DistInfo):
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.info = info

    def complete(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.iterdir():
            m = STEP_DIR.match(p.name)
            if m and p.is_dir() and (p / STATE_FILE).is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1][1] if done else None

    def remove_partial(self) -> None:
        """Delete the leftovers of interrupted saves and rotations (rank 0)."""
        if self.info.is_main and self.folder.is_dir():
            for p in self.folder.iterdir():
                if p.is_dir() and p.name.endswith((".tmp", ".deleting")):
                    shutil.rmtree(p, ignore_errors=True)
        barrier(self.info)

    # ---- save ------------------------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        state: dict[str, Any],
    ) -> Path:
        """Write checkpoint `step` atomically. `module` is the TrainModule (FSDP-sharded or not)."""
        final = self.folder / f"step-{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        # Gathering full state dicts is a collective under FSDP: every rank takes part, rank 0 writes.
        model_sd = get_model_state_dict(module, options=self.OPTIONS)
        optim_sd = get_optimizer_state_dict(module, optimizer, options=self.OPTIONS)
        if self.info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(self.info)
        torch_save(rng_state(), tmp / f"rng-rank{self.info.rank}.pt")
        barrier(self.info)
        if self.info.is_main:
            save_file(_unshared(model_sd, module), str(tmp / MODEL_FILE))
            _fsync_file(tmp / MODEL_FILE)
            torch_save(optim_sd, tmp / OPTIMIZER_FILE)
            record = dict(state, step=step, world_size=self.info.world_size, scheduler=scheduler.state_dict())
            _write_json(tmp / STATE_FILE, record)
            _fsync_dir(tmp)
            os.replace(tmp, final)
            _fsync_dir(self.folder)
            self._rotate()
        barrier(self.info)
        return final

    def _rotate(self) -> None:
        done = self.complete()
        for _, path in done[: max(0, len(done) - self.keep_last)]:
            doomed = path.with_name(path.name + ".deleting")
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    # ---- load ------------------------------------------------------------------------------------------------
    def load(
        self,
        path: Path,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> dict[str, Any]:
        """Restore model, optimizer, scheduler and this rank's RNG from `path`; returns the saved state record."""
        state = json.loads((path / STATE_FILE).read_text())
        if state["world_size"] != self.info.world_size:
            raise CheckpointError(
                f"{path} was saved by {state['world_size']} process(es), this run has {self.info.world_size}; "
                "resume with the same torchrun --nproc-per-node, or start a new out_dir"
            )
        model_sd = load_file(str(path / MODEL_FILE))
        expected = {name for name, p in module.named_parameters() if p.requires_grad}
        if set(model_sd) != expected:
            missing, extra = sorted(expected - set(model_sd)), sorted(set(model_sd) - expected)
            raise CheckpointError(
                f"{path} does not match this run's trainable parameters "
                f"(missing {missing[:3]}, unexpected {extra[:3]}); was the config changed?"
            )
        optim_sd = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        options = StateDictOptions(
            full_state_dict=True, ignore_frozen_params=True, broadcast_from_rank0=False, strict=False
        )
        set_model_state_dict(module, model_sd, options=options)
        set_optimizer_state_dict(module, optimizer, optim_sd, options=options)
        scheduler.load_state_dict(state["scheduler"])
        rng_file = path / f"rng-rank{self.info.rank}.pt"
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
        return state


def _unshared(model_sd: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """One entry per tensor: tied weights (e.g. embeddings = output layer) share storage, which safetensors refuses;
    keep the name `named_parameters()` reports (the one `load` expects)."""
    canonical = {name for name, _ in module.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for name in sorted(model_sd, key=lambda n: n not in canonical):
        t = model_sd[name]
        ptr = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if ptr in seen:
            continue
        seen[ptr] = name
        out[name] = t.contiguous()
    return out
