"""Inference speed and memory of auralm against transformers on the same random mid-size checkpoint, same run.

    python benchmarks/bench_infer.py [--layers 12] [--width 768] [--decode-tokens 32] [--repeats 3]

Prints one table of times and ratios (transformers / auralm, > 1 means auralm is faster): feature extraction for
8 x 10 s clips, prefill of a 5 s and a 30 s clip, decode tokens/s at batch 1 and 8, and the peak memory of each
side measured in its own process. Decode is also given as the fraction of this machine's memory bandwidth
(measured by a large tensor copy) that reading the decoder weights once per step achieves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SR = 16000


def build_checkpoint(folder: Path, layers: int, width: int) -> None:
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    heads = width // 64
    cfg = Qwen2AudioConfig(
        audio_config=dict(d_model=width, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=4 * width,
                          num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads // 3 if heads % 3 == 0 else heads, intermediate_size=int(2.7 * width),
                         vocab_size=32000, max_position_embeddings=8192, tie_word_embeddings=False),
        audio_token_index=31999,
    )
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(cfg).eval().save_pretrained(folder)


def clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t))) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prompt_ids(n_audio: int, audio_id: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    text = torch.arange(100, 140)
    row = torch.cat([text[:10], torch.full((n_audio,), audio_id), text[10:]])
    ids = row.repeat(batch, 1)
    return ids, torch.ones_like(ids)


def decode_step_time(side: str, model, inp: dict, n: int, step_fn=None) -> float:
    """Seconds per decode step: the time between the first and the last new token, over the steps between them.

    Both sides report each new token as it is chosen (transformers through a streamer, auralm through its token
    generator), so the prefill (audio encoder included) is left out exactly instead of by subtracting two noisy runs.
    `step_fn`: auralm's compiled decode step, if measured.
    """
    stamps: list[float] = []
    if side == "transformers":
        from transformers.generation.streamers import BaseStreamer

        class Stamps(BaseStreamer):
            def put(self, value):
                stamps.append(time.perf_counter())

            def end(self):
                pass

        with torch.no_grad():
            model.generate(**inp, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                           pad_token_id=0, streamer=Stamps())
        stamps = stamps[1:]  # the first call carries the prompt
    else:
        from auralm.infer.generate import stream_tokens
        from auralm.infer.sampling import GenerationConfig

        for _ in stream_tokens(model, inp, GenerationConfig(max_new_tokens=n, min_new_tokens=n), step_fn):
            stamps.append(time.perf_counter())
    assert len(stamps) == n, (side, len(stamps), n)
    return (stamps[-1] - stamps[0]) / (n - 1)


def run_side(side: str, folder: str, opts: dict, out: mp.Queue) -> None:
    """Every measurement of one implementation, in its own process (so peak memory is its own)."""
    torch.set_num_threads(opts["threads"])
    from auralm.audio import log_mel_batch
    from auralm.audio.geometry import num_audio_tokens

    if side == "transformers":
        from transformers import Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

        model = Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        fe = WhisperFeatureExtractor(feature_size=128)

        def features(clips):
            f = fe(clips, sampling_rate=SR, return_tensors="pt", padding="max_length", return_attention_mask=True)
            return f["input_features"], f["attention_mask"]
    else:
        from auralm import AudioLM

        model = AudioLM.from_pretrained(folder)

        def features(clips):
            feats, lengths = log_mel_batch(clips, n_mels=128)
            return feats, (torch.arange(feats.shape[-1])[None] < lengths[:, None]).long()

    audio_id = 31999
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res: dict[str, float] = {}
    eight = [clip(10, i) for i in range(8)]
    res["features 8 x 10 s"] = timed(lambda: features(eight), opts["repeats"])

    def inputs_for(seconds: float, batch: int):
        feats, mask = features([clip(seconds, 1)] * batch)
        n = num_audio_tokens(int(mask[0].sum()))
        ids, am = prompt_ids(n, audio_id, batch)
        return dict(input_ids=ids, attention_mask=am, input_features=feats, feature_attention_mask=mask)

    def gen(inp, n_tokens):
        with torch.no_grad():
            model.generate(**inp, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False,
                           eos_token_id=None, pad_token_id=0)

    for seconds in (5, 30):
        inp = inputs_for(seconds, 1)
        res[f"prefill {seconds} s clip"] = timed(lambda: gen(inp, 1), opts["repeats"])
    n = opts["decode_tokens"]
    for batch in (1, 8):
        inp = inputs_for(5, batch)
        step_times = [decode_step_time(side, model, inp, n) for _ in range(opts["repeats"] + 1)][1:]
        res[f"decode step, batch {batch}"] = statistics.median(step_times)
    res["peak memory MB"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_loaded) / 1024
    if side == "auralm":
        # The same steps through the compiled decode step (auralm.infer.compiled); its one-time compilation per
        # batch shape is reported apart.
        from auralm.infer.compiled import compile_decode

        step = compile_decode(model)
        for batch in (1, 8):
            inp = inputs_for(5, batch)
            t0 = time.perf_counter()
            decode_step_time(side, model, inp, 3, step)
            res[f"compile s, batch {batch}"] = time.perf_counter() - t0
            step_times = [decode_step_time(side, model, inp, n, step) for _ in range(opts["repeats"])]
            res[f"decode step, batch {batch}, compiled"] = statistics.median(step_times)
        res["peak memory MB, compiled"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_loaded) / 1024
    out.put((side, res))


def memory_bandwidth() -> float:
    """Bytes per second of a large tensor copy (read + write)."""
    a = torch.empty(64 * 1024 * 1024, dtype=torch.float32).normal_()  # 256 MB
    b = torch.empty_like(a)
    t = timed(lambda: b.copy_(a), 5)
    return 2 * a.numel() * 4 / t


def read_bandwidth() -> float:
    """Bytes per second of a large tensor sum (read only): the ceiling for streaming weights."""
    a = torch.empty(64 * 1024 * 1024, dtype=torch.float32).normal_()  # 256 MB
    t = timed(lambda: a.sum(), 5)
    return a.numel() * 4 / t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        build_checkpoint(Path(tmp), args.layers, args.width)
        ctx = mp.get_context("spawn")
        results = {}
        for side in ("transformers", "auralm"):
            q = ctx.Queue()
            p = ctx.Process(target=run_side, args=(side, tmp, vars(args), q))
            p.start()
            name, res = q.get()
            p.join()
            results[name] = res
        from auralm import AudioLM

        lm = AudioLM.from_pretrained(tmp).language_model
        # A decode step reads every decoder weight once, but only one row of the (untied) input embedding.
        read = [p for p in lm.parameters() if p is not lm.model.embed_tokens.weight or p is lm.lm_head.weight]
        dec_bytes = sum(p.numel() * p.element_size() for p in read)
    bw = memory_bandwidth()
    bw_read = read_bandwidth()
    ref, ours = results["transformers"], results["auralm"]
    print(f"checkpoint: {args.layers} layers x {args.width} (encoder and decoder), float32, {args.threads} threads")
    print(f"{'measure':<34}{'transformers':>14}{'auralm':>12}{'ratio':>9}")
    for key in ref:
        unit = "" if "MB" in key else " s"
        print(f"{key:<34}{ref[key]:>12.3f}{unit:<2}{ours[key]:>10.3f}{unit:<2}{ref[key] / max(ours[key], 1e-9):>8.2f}x")
    for batch in (1, 8):
        key = f"decode step, batch {batch}"
        print(f"{key + ', compiled':<34}{ref[key]:>12.3f} s{ours[key + ', compiled']:>10.3f} s"
              f"{ref[key] / ours[key + ', compiled']:>8.2f}x   (compiling took {ours[f'compile s, batch {batch}']:.0f} s once)")
    print(f"{'peak memory MB, compiled':<34}{ref['peak memory MB']:>12.3f}  {ours['peak memory MB, compiled']:>10.3f}"
          f"  {ref['peak memory MB'] / ours['peak memory MB, compiled']:>8.2f}x   (packed weight copies next to the eager weights)")
    for batch in (1, 8):
        key = f"decode step, batch {batch}"
        sides = (("transformers", ref[key]), ("auralm", ours[key]), ("auralm compiled", ours[key + ", compiled"]))
        for name, t in sides:
            frac = dec_bytes / t / bw
            print(f"decode batch {batch} {name:<16} {batch / t:8.1f} tokens/s, weight reads at {100 * frac:5.1f}% of "
                  f"{bw / 1e9:.1f} GB/s copy bandwidth ({100 * dec_bytes / t / bw_read:5.1f}% of {bw_read / 1e9:.1f} GB/s "
                  f"read-only)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "bandwidth": bw, "decoder_bytes": dec_bytes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
