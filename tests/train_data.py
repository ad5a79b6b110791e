"""Small, fast training fixtures: a tokenizer folder and a 'beep world' of FLAC clips in all three row kinds.

Each clip holds 1-3 short beeps; task records ask how many (aqa), conversations ask in audio-analysis mode with
a follow-up turn, preference pairs prefer the right count over a miscount. Everything is written through
the manifest module, so the rows pass the same validation the synthetic world's do.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from tiny_hf import build_tokenizer

from auralm.data.manifest import write_manifest
from auralm.processor import Processor

WORDS = {1: "one", 2: "two", 3: "three"}
# The Qwen2-Audio chat template as the fact sheet (section 3.1) states it, written out so these fixtures do not
# depend on the default template of auralm.text.chat.
CHAT_TEMPLATE = (
    "{% set n = namespace(audio=0) %}{% for m in messages %}"
    "{% if loop.first and m.role != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}{% else %}{% for item in m.content %}"
    "{% if 'audio' in item or 'audio_url' in item %}{% set n.audio = n.audio + 1 %}"
    "Audio {{ n.audio }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in item %}{{ item.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTION = "How many beeps did you hear?"


def make_tokenizer_dir(folder: Path, with_tags: bool = False) -> Path:
    """A processor folder (tokenizer.json, 80-mel preprocessor config) for the `tiny` preset."""
    tok = build_tokenizer()
    if with_tags:
        from auralm.text.formats import TAG_TOKENS

        tok.add_special_tokens(list(TAG_TOKENS))
    Processor(tok, n_mels=80, chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    return folder


def beep_clip(n_beeps: int, rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
    parts = [np.zeros(int(sr * rng.uniform(0.05, 0.15)), np.float32)]
    for _ in range(n_beeps):
        f = rng.uniform(500, 1500)
        t = np.arange(int(sr * rng.uniform(0.08, 0.15))) / sr
        parts.append((0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32))
        parts.append(np.zeros(int(sr * rng.uniform(0.08, 0.2)), np.float32))
    x = np.concatenate(parts)
    return x + 0.003 * rng.standard_normal(len(x)).astype(np.float32)


def answer(n: int) -> str:
    return f"There were {WORDS[n]} beeps."


def make_beep_world(folder: Path, n_clips: int = 24, seed: int = 0, name: str = "train") -> Path:
    """Write `n_clips` clips and a manifest with one task record, one conversation and one pair per clip."""
    rng = np.random.default_rng(seed)
    audio_dir = folder / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_clips):
        n = int(rng.integers(1, 4))
        wave = beep_clip(n, rng)
        rel = f"audio/{name}-{i:04d}.flac"
        sf.write(folder / rel, wave, 16000, subtype="PCM_16")
        dur = round(len(wave) / 16000, 4)
        rows.append(
            {
                "id": f"{name}-aqa-{i}",
                "task": "aqa",
                "audios": [rel],
                "duration": dur,
                "language": None,
                "question": QUESTION,
                "answer": answer(n),
                "qtype": "count",
            }
        )
        rows.append(
            {
                "id": f"{name}-conv-{i}",
                "task": "conversation",
                "audios": [rel],
                "duration": dur,
                "messages": [
                    {"role": "user", "content": f"<audio>{QUESTION}"},
                    {"role": "assistant", "content": answer(n)},
                    {"role": "user", "content": "Transcribe this recording, please."},
                    {"role": "assistant", "content": "It is the sound of glass shattering."},
                ],
            }
        )
        wrong = 1 + (n % 3)
        rows.append(
            {
                "id": f"{name}-pref-{i}",
                "task": "preference",
                "audios": [rel],
                "duration": dur,
                "messages": [
                    {"role": "user", "content": f"<audio>{QUESTION}"},
                    {"role": "assistant", "content": answer(n)},
                ],
                "rejected_response": answer(wrong),
            }
        )
    path = folder / f"{name}.jsonl"
    write_manifest(path, rows)
    return path


def base_config(out_dir: Path, tok_dir: Path, train: Path, recipe: str = "sft", **over) -> dict:
    """A TrainConfig dict for the tiny preset: a handful of steps, no progress bar, fast everything."""
    cfg = {
        "recipe": recipe,
        "out_dir": str(out_dir),
        "seed": 0,
        "steps": 4,
        "model": {"preset": "tiny", "tokenizer": str(tok_dir)},
        "data": {"train": [{"path": str(train)}], "max_tokens": 2048, "batch_size": 4, "bucket_size": 64},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "log": {"progress": False, "plot": False},
        "checkpoint": {"every": 0, "keep_last": 2},
    }
    return _merge(cfg, over)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_yaml(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)


def preference_row(record_id: str = "pref") -> dict:
    """The smallest valid preference record (one the demo recipe's chat stages must leave out)."""
    return {"id": record_id, "task": "preference", "audios": ["p.flac"], "duration": 1.0,
            "messages": [{"role": "user", "content": "<audio>?"}, {"role": "assistant", "content": "yes"}],
            "rejected_response": "no"}
