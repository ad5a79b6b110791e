"""The 7B memory plan: a random Qwen2-Audio-7B-shaped folder, loaded in bfloat16 / int8 / int4, with peak memory,
decode speed and the prefill of a 10 s clip.

    python benchmarks/bench_7b.py write /work/tmp7b        # ~16.8 GB of random bf16 weights, written shard by shard
    python benchmarks/bench_7b.py run /work/tmp7b --mode int8   # one mode, in this process
    python benchmarks/bench_7b.py all /work/tmp7b          # every mode in its own process (peak RSS is per process)

The folder has the released model's config (auralm's defaults: a 32 x 4096 Qwen decoder with a 156032-token
vocabulary, a 32 x 1280 Whisper-large encoder) and no tokenizer: prompts are token ids made here. Writing holds one
shard (<= --shard-gb) in memory, never the model. Loading: bfloat16 keeps the weights as memory-mapped views of the
files (file-backed pages, counted in the resident set as they are read); int8 / int4 quantize layer by layer while
loading (`auralm.checkpoint.quantized`), so the float model is never in memory. Peak RSS is the process's
ru_maxrss. The machine is shared: run it once, on a machine as quiet as you can get, and note the load beside the
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_infer import read_bandwidth
from bench_quant import step_bytes

GIB = 1024**3


def rss() -> dict[str, float]:
    """Current resident set (GiB): total, anonymous, file-backed; and the peak so far."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024 / GIB
    fields["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    return fields


# ---- writing ----------------------------------------------------------------------------------------------
def write_folder(folder: Path, shard_gb: float, layers: int | None = None, seed: int = 0) -> None:
    """Random weights (std 0.02, norms 1) in the released layout, bfloat16, one shard in memory at a time.
    `layers`: fewer encoder and decoder layers than the released 32 (a quick check of this script)."""
    from dataclasses import replace

    from safetensors.torch import save_file

    from auralm.config import AudioLMConfig
    from auralm.model.audiolm import AudioLM

    cfg = AudioLMConfig()  # the defaults are Qwen2-Audio-7B's
    if layers:
        cfg = replace(cfg, encoder=replace(cfg.encoder, n_layers=layers), decoder=replace(cfg.decoder, n_layers=layers))
    with torch.device("meta"):
        model = AudioLM(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    shards: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = model.get_parameter(name).numel() * 2
        if shards[-1] and size + nbytes > shard_gb * 1e9:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    weight_map, total = {}, 0
    t0 = time.perf_counter()
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in shard:
            shape = model.get_parameter(name).shape
            t = torch.empty(shape, dtype=torch.bfloat16)
            if name.endswith(("norm.weight", "layer_norm.weight")):
                t.fill_(1.0)
            elif name.endswith("bias"):
                t.zero_()
            else:
                flat = t.view(-1)
                for a in range(0, flat.numel(), 1 << 24):  # float32 temporaries of 64 MB at most
                    n = min(1 << 24, flat.numel() - a)
                    flat[a:a + n] = torch.randn(n, generator=g) * 0.02
            tensors[name] = t
            total += t.numel() * 2
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in tensors})
        del tensors
        print(f"  {fname}: {len(shard)} tensors, {time.perf_counter() - t0:.0f} s, RSS {rss()['VmRSS']:.1f} GiB",
              file=sys.stderr)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    hf = cfg.to_hf()
    hf["torch_dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(hf, indent=2))
    print(f"wrote {total / 1e9:.1f} GB in {time.perf_counter() - t0:.0f} s; peak RSS {rss()['peak']:.1f} GiB",
          file=sys.stderr)


# ---- measuring --------------------------------------------------------------------------------------------
def clip_inputs(model, seconds: float, prompt_tokens: int = 16) -> dict[str, torch.Tensor]:
    """A speech-like clip as the processor would give it: features, and token ids with one <|AUDIO|> per frame."""
    from auralm.audio.features import log_mel_batch
    from auralm.audio.geometry import num_audio_tokens

    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    wave = (0.3 * np.sin(2 * np.pi * (120 + 60 * np.sin(2 * np.pi * 0.7 * t)) * t)).astype(np.float32)
    feats, lengths = log_mel_batch([wave], n_mels=model.cfg.encoder.n_mels)
    n_audio = int(num_audio_tokens(lengths)[0])
    text = torch.arange(100, 100 + prompt_tokens)
    ids = torch.cat([text[:4], torch.full((n_audio,), model.cfg.audio_token_id), text[4:]])[None]
    mask = torch.arange(feats.shape[-1])[None] < lengths[:, None]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "input_features": feats,
            "feature_attention_mask": mask.long()}


def decode_speed(model, batch: int, prompt_len: int, steps: int) -> float:
    """Decode tokens per second per row, after a prefill of `prompt_len` text tokens (greedy, no stop token)."""
    from auralm.infer.engine import DecodeBatch
    from auralm.infer.sampling import GenerationConfig

    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(1000, 100000, (batch, prompt_len), generator=g)
    cfg = GenerationConfig(max_new_tokens=steps + 2)
    dec = DecodeBatch.prefill(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, [cfg] * batch)
    dec.step()  # first step: warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        dec.step()
    return steps / (time.perf_counter() - t0)


def run_mode(folder: Path, mode: str, steps: int, threads: int | None) -> dict:
    from auralm.checkpoint.hf import load_audiolm

    if threads:
        torch.set_num_threads(threads)
    out = {"mode": mode, "threads": torch.get_num_threads(), "load_avg": os.getloadavg()[0]}
    t0 = time.perf_counter()
    model = load_audiolm(folder, quantize=None if mode == "bf16" else mode)
    out["load_s"] = time.perf_counter() - t0
    after = rss()
    out["rss_after_load_gib"] = after["VmRSS"]
    out["anon_after_load_gib"] = after["RssAnon"]
    out["peak_load_gib"] = after["peak"]
    out["step_bytes"] = step_bytes(model)
    with torch.no_grad():
        inputs = clip_inputs(model, 10.0)
        t0 = time.perf_counter()
        model(**inputs, logits_to_keep=1)
        out["prefill_10s_s"] = time.perf_counter() - t0
        out["prefill_tokens"] = inputs["input_ids"].shape[1]
    out["decode_b1_tok_s"] = decode_speed(model, 1, 32, steps)
    out["decode_b4_tok_s_per_row"] = decode_speed(model, 4, 32, steps)
    out["peak_gib"] = rss()["peak"]
    out["load_avg_end"] = os.getloadavg()[0]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["write", "run", "all"])
    p.add_argument("folder", type=Path)
    p.add_argument("--mode", default="int8", help="bf16, int8, int4 or int4-g32 (run)")
    p.add_argument("--modes", default="int8,int4,bf16", help="modes for `all`, in order")
    p.add_argument("--steps", type=int, default=8, help="timed decode steps per batch size")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--shard-gb", type=float, default=2.0, help="shard size when writing")
    p.add_argument("--layers", type=int, help="write: encoder and decoder layers (default: the released 32)")
    args = p.parse_args(argv)
    if args.command == "write":
        write_folder(args.folder, args.shard_gb, args.layers)
        return 0
    if args.command == "run":
        print(json.dumps(run_mode(args.folder, args.mode, args.steps, args.threads)))
        return 0
    rows = []
    if args.threads:
        torch.set_num_threads(args.threads)  # the bandwidth the modes' processes can use
    bandwidth = read_bandwidth()
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "run", str(args.folder), "--mode", mode, "--steps", str(args.steps)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{mode}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s (a large tensor sum)")
    print("| mode | load s | RSS after load GiB | peak RSS GiB | prefill 10 s clip s | GB read per step | decode b1 tok/s | "
          "b1 GB/s (share of read bandwidth) | decode b4 tok/s/row | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gbs = r["step_bytes"] * r["decode_b1_tok_s"] / 1e9
        print(f"| {r['mode']} | {r['load_s']:.0f} | {r['rss_after_load_gib']:.1f} | {r['peak_gib']:.1f} | "
              f"{r['prefill_10s_s']:.1f} | {r['step_bytes'] / 1e9:.1f} | {r['decode_b1_tok_s']:.2f} | "
              f"{gbs:.1f} ({gbs * 1e9 / bandwidth:.0%}) | {r['decode_b4_tok_s_per_row']:.2f} | "
              f"{r['load_avg']:.1f}-{r['load_avg_end']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
