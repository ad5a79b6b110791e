"""Kill-and-resume: a run SIGKILLed mid-run or mid-save resumes and ends with the uninterrupted run's weights.

The run exercises every source of state a resume must restore: AdamW moments and the LR schedule, the data
position inside an epoch (a step lands mid-epoch), SpecAugment masks, and LoRA dropout drawn from torch's RNG.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_data import base_config, make_beep_world, make_tokenizer_dir, read_jsonl, write_yaml

from auralm.train.config import load_config
from auralm.train.recipes import train

STEPS = 8

CHILD = textwrap.dedent("""
    import io, os, signal, sys, time
    import torch
    import auralm.train.checkpointing as ck
    from auralm.train.config import load_config
    from auralm.train.recipes import train

    cfg = load_config(sys.argv[1])
    if sys.argv[2] == "save":
        # Die in the middle of writing step N's optimizer file: half the bytes are on disk, then SIGKILL.
        target, original = f"step-{int(sys.argv[3]):08d}.tmp", ck.torch_save

        def dying_save(obj, path):
            if path.parent.name == target and path.name == "optimizer.pt":
                buf = io.BytesIO()
                torch.save(obj, buf)
                with open(path, "wb") as f:
                    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            original(obj, path)

        ck.torch_save = dying_save
        train(cfg)
    else:
        train(cfg, on_step=lambda step: time.sleep(0.4))  # slow enough for the parent to kill it mid-run
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    tok = make_tokenizer_dir(root / "tok")
    data = make_beep_world(root / "world", n_clips=10)
    script = root / "child.py"
    script.write_text(CHILD)

    def config(name: str) -> Path:
        cfg = base_config(
            root / name,
            tok,
            data,
            recipe="sft",
            steps=STEPS,
            # 10 rows, batches of 3: an epoch ends mid-step-sequence, so the position must cross epochs.
            data={"batch_size": 3, "specaugment": {"enabled": True}},
            parts={"encoder": "lora", "projector": "train", "llm": "train"},
            lora={"r": 4, "dropout": 0.2, "targets": ["fc1", "fc2"]},
            optim={"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.01},
            checkpoint={"every": 2, "keep_last": 2},
        )
        return write_yaml(root / f"{name}.yaml", cfg)

    reference = train(load_config(config("uninterrupted")))
    return {"root": root, "script": script, "config": config, "reference": reference}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _spawn(setup, cfg_path: Path, *args: str) -> subprocess.Popen:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent.parent), str(Path(__file__).parent)]),
    )
    with open(setup["root"] / f"{cfg_path.stem}.log", "w") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            [sys.executable, str(setup["script"]), str(cfg_path), *args], stdout=log, stderr=log, env=env
        )


def _assert_same_run(setup, out: Path) -> None:
    ref = setup["reference"]
    a, b = _weights(ref.final_dir), _weights(out / "final")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, STEPS + 1))  # no repeated or missing steps in the log
    ref_losses = [r["loss"] for r in ref.metrics if "loss" in r]
    losses = [r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert losses == pytest.approx(ref_losses, rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(setup):
    cfg_path = setup["config"]("killed-mid-run")
    out = setup["root"] / "killed-mid-run"
    proc = _spawn(setup, cfg_path, "run")
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if any(line.startswith('{"step": 5,') for line in lines):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "final").exists()
    done = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.endswith(".tmp"))
    assert done and all(int(n.split("-")[1]) < STEPS for n in done)
    result = train(load_config(cfg_path))
    assert result.steps == STEPS
    _assert_same_run(setup, out)


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_the_previous_checkpoint_usable(setup):
    cfg_path = setup["config"]("killed-mid-save")
    out = setup["root"] / "killed-mid-save"
    proc = _spawn(setup, cfg_path, "save", "6")
    assert proc.wait(timeout=180) == -signal.SIGKILL
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000004", "step-00000006.tmp"]
    partial = out / "checkpoints" / "step-00000006.tmp" / "optimizer.pt"
    with pytest.raises(RuntimeError):
        torch.load(partial, weights_only=True)  # the half-written file is unusable ...
    train(load_config(cfg_path))  # ... and ignored: the run resumes from step 4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000006", "step-00000008"]
    _assert_same_run(setup, out)


def test_tied_weights_are_saved_once():
    """Tied embeddings / output layer share storage; the checkpoint keeps one copy under the parameter's name."""
    from auralm.config import preset
    from auralm.model.audiolm import AudioLM
    from auralm.train.checkpointing import _unshared

    cfg = preset("tiny")
    cfg.decoder.tie_embeddings = True
    model = AudioLM(cfg)
    out = _unshared(dict(model.state_dict(keep_vars=True)), model)
    assert "language_model.model.embed_tokens.weight" in out
    assert "language_model.lm_head.weight" not in out
    assert len(out) == len(dict(model.named_parameters()))
