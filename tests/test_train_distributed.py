"""torchrun on CPU (gloo): two processes give the loss curve and weights of one process with the same global batch.

One process with grad_accum=2 and two processes with grad_accum=1 take the same micro-batches per step (see
auralm.data.sampler), so only the order of floating-point sums differs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from train_data import base_config, make_beep_world, make_tokenizer_dir, read_jsonl, write_yaml

from auralm.train.config import TrainConfig
from auralm.train.recipes import train

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    tok = make_tokenizer_dir(root / "tok")
    data = make_beep_world(root / "world", n_clips=12)

    def config(name: str, **over) -> dict:
        return base_config(root / name, tok, data, recipe="sft", steps=4, data={"batch_size": 2}, **over)

    single = train(TrainConfig.from_dict(config("single", optim={"lr": 3e-3, "grad_accum": 2})))
    return {"root": root, "config": config, "single": single}


def _torchrun(setup, name: str, cfg: dict) -> Path:
    path = write_yaml(setup["root"] / f"{name}.yaml", cfg)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "-m",
        "auralm.cli",
        "train",
        str(path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return setup["root"] / name


def _compare(setup, out: Path, atol: float) -> None:
    single = setup["single"]
    ref = [r["loss"] for r in single.metrics if "loss" in r]
    got = [r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert len(got) == len(ref) == 4
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)
    tokens = [r["tokens"] for r in single.metrics if "loss" in r]
    assert [r["tokens"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r] == tokens
    a, b = (
        load_file(str(single.final_dir / "model.safetensors")),
        load_file(str(out / "final" / "model.safetensors")),
    )
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < atol


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(setup):
    out = _torchrun(setup, "ddp", setup["config"]("ddp", optim={"lr": 3e-3, "grad_accum": 1}))
    _compare(setup, out, atol=1e-5)
    assert sorted(p.name for p in (out / "checkpoints" / "step-00000004").glob("rng-*")) == [
        "rng-rank0.pt",
        "rng-rank1.pt",
    ]


@pytest.mark.slow
def test_two_process_fsdp_equals_one_process(setup):
    out = _torchrun(
        setup, "fsdp", setup["config"]("fsdp", optim={"lr": 3e-3, "grad_accum": 1}, distributed="fsdp")
    )
    _compare(setup, out, atol=1e-5)
