"""Decode speed by weight format: auralm bfloat16 / int8 / int4 against transformers float32 / bfloat16, same
random mid-size checkpoint, same run, each side in its own process.

    python benchmarks/bench_quant.py [--layers 12] [--width 1024] [--prompt 256] [--decode-tokens 32] [--threads 2]

A decode step at batch 1 reads every decoder weight once (and one row of the input embedding), so its time is
bounded below by weight bytes / memory bandwidth. The table gives, per row: the bytes a step reads, the step time,
tokens/s, the bandwidth that implies, and its share of this machine's read bandwidth (a large tensor sum, measured
in the same run); and the prompt's prefill (compute-bound: where bfloat16 is emulated, `auralm bf16` takes these
wide products in float32, `native products` shows what it would cost without). The machine is shared: the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_infer import decode_step_time, read_bandwidth

SIDES = [  # (name, implementation, dtype, quantize)
    ("transformers fp32", "transformers", torch.float32, None),
    ("transformers bf16", "transformers", torch.bfloat16, None),
    ("auralm fp32", "auralm", torch.float32, None),
    ("auralm bf16", "auralm", torch.bfloat16, None),
    # bfloat16 products as torch runs them, even where load() would take wide ones in float32 (auralm.model.cpu_bf16)
    ("auralm bf16, native products", "auralm-native", torch.bfloat16, None),
    ("auralm int8", "auralm", torch.bfloat16, "int8"),
    ("auralm int8, native products", "auralm-native", torch.bfloat16, "int8"),
    ("auralm int4 (g64)", "auralm", torch.bfloat16, "int4"),
    ("auralm int4 (g32)", "auralm", torch.bfloat16, "int4-g32"),
]


def build_checkpoint(folder: Path, layers: int, width: int) -> None:
    """A random Qwen2-Audio checkpoint whose decoder has real models' proportions: 64-wide heads, 4 query heads per
    key/value head, an MLP 2.75x wide (a multiple of 256, as 11008 and 18944 are, so every layer fits the int4
    groups and the int8 kernel's blocks of 16); a one-layer encoder (decode never runs it)."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    heads = width // 64
    cfg = Qwen2AudioConfig(
        audio_config={"d_model": 256, "encoder_layers": 1, "encoder_attention_heads": 4, "encoder_ffn_dim": 512,
                          "num_mel_bins": 128, "max_source_positions": 1500},
        text_config={"model_type": "qwen2", "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": heads,
                         "num_key_value_heads": max(1, heads // 4), "intermediate_size": (width * 11 // 4 + 255) // 256 * 256,
                         "vocab_size": 32000, "max_position_embeddings": 8192, "tie_word_embeddings": False},
        audio_token_index=31999,
    )
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(cfg).eval().save_pretrained(folder)


def step_bytes(model) -> int:
    """Bytes one decode step reads: every tensor of the decoder and output layer but the input embedding (one row)."""
    lm = model.language_model
    emb = lm.model.embed_tokens.weight
    total = sum(t.numel() * t.element_size() for t in list(lm.parameters()) + list(lm.buffers()) if t is not emb)
    if lm.lm_head is not None and getattr(lm.lm_head, "weight", None) is emb:
        total += emb.numel() * emb.element_size()  # tied: the output layer reads the whole matrix
    return total + emb.shape[1] * emb.element_size()


def step_cells(r: dict, bandwidth: float) -> str:
    """A decode row's table cells from its bytes per step and seconds per step: MB read | ms | tokens/s | GB/s |
    share of the machine's read bandwidth."""
    gbs = r["bytes"] / r["step_s"] / 1e9
    return (f"{r['bytes'] / 1e6:.0f} | {r['step_s'] * 1e3:.1f} | {1 / r['step_s']:.1f} | {gbs:.1f} | "
            f"{gbs * 1e9 / bandwidth:.0%}")


def run_side(index: int, folder: str, opts: dict, out: mp.Queue) -> None:
    name, impl, dtype, quantize = SIDES[index]
    torch.set_num_threads(opts["threads"])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 31000, (1, opts["prompt"]), generator=g)
    inp = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if impl == "transformers":
        from transformers import Qwen2AudioForConditionalGeneration

        model = Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()
        lm = model.model.language_model
        nbytes = sum(p.numel() * p.element_size() for p in model.lm_head.parameters())
        nbytes += sum(p.numel() * p.element_size() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    else:
        import auralm.checkpoint.hf

        if impl == "auralm-native":  # as on a CPU with AVX512-BF16 / AMX: no float32 products
            auralm.checkpoint.hf.fast_bf16 = lambda device: True
        model = auralm.checkpoint.hf.load_audiolm(folder, dtype=dtype, quantize=quantize)
        nbytes = step_bytes(model)
        impl = "auralm"
    times = [decode_step_time(impl, model, inp, opts["decode_tokens"]) for _ in range(opts["repeats"] + 1)][1:]
    if impl == "transformers":  # the prompt's prefill (every weight times `prompt` rows), logits of the last row
        def prefill_fn():
            return model.lm_head(model.model.language_model(**inp).last_hidden_state[:, -1:])
    else:
        def prefill_fn():
            return model(**inp, logits_to_keep=1)
    with torch.no_grad():
        prefill_fn()
        prefill = [_timed(prefill_fn) for _ in range(opts["repeats"])]
    out.put((name, {"step_s": statistics.median(times), "prefill_s": statistics.median(prefill), "bytes": nbytes,
                    "load": os.getloadavg()[0]}))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens before decoding")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sides", default=",".join(str(i) for i in range(len(SIDES))), help="indices into SIDES")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        build_checkpoint(Path(tmp), args.layers, args.width)
        ctx = mp.get_context("spawn")
        for i in (int(s) for s in args.sides.split(",")):
            q = ctx.Queue()
            p = ctx.Process(target=run_side, args=(i, tmp, vars(args), q))
            p.start()
            p.join()
            if p.exitcode != 0:  # a crash in a kernel must not hang the table
                print(f"  {SIDES[i][0]}: failed (exit code {p.exitcode})", file=sys.stderr)
                continue
            name, res = q.get()
            results[name] = res
            print(f"  {name}: {res['step_s'] * 1e3:.1f} ms/step", file=sys.stderr)
    bw = read_bandwidth()
    ref = results.get("transformers bf16")
    print(f"checkpoint: {args.layers} layers x {args.width}, vocab 32000, prompt {args.prompt} tokens, batch 1, "
          f"{args.threads} threads; read bandwidth {bw / 1e9:.1f} GB/s; load average {load_start:.1f} at start")
    print("| side | MB read per step | ms per step | tokens/s | GB/s | share of read bandwidth | vs transformers bf16 "
          f"| prefill {args.prompt} tokens s | prefill vs transformers bf16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{ref['step_s'] / r['step_s']:.2f}x" if ref else "-"
        pre = f"{ref['prefill_s'] / r['prefill_s']:.2f}x" if ref else "-"
        print(f"| {name} | {step_cells(r, bw)} | {ratio} | {r['prefill_s']:.2f} | {pre} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
