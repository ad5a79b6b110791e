"""auralm against its peers on the same model, one run: llama.cpp decoding the demo's LLM, faster-whisper
transcribing the real clips.

    python benchmarks/bench_peers.py [--prompt 256] [--decode-tokens 128] [--threads 2] [--compile]
                                     [--skip llama,whisper] [--cache DIR]

LLM (needs `llama-cpp-python`, which builds llama.cpp from its PyPI sdist: `pip wheel llama-cpp-python==0.3.36`
once, keep the wheel outside the repo): SmolLM2-135M-Instruct, the demo model's decoder. llama.cpp runs the
pinned GGUF the demo is assembled from (Q4_1) and its requantizations to Q8_0 and Q4_0 (llama.cpp's own
`llama_model_quantize`, cached in --cache); auralm runs the demo model's decoder (the same shapes, with the demo's
LoRA merged) in float32, bfloat16, int8 and int4, eager, and with --compile the compiled float32 step. Both sides:
a 256-token text prompt, then greedy tokens at batch 1; the step time is the mean over the new tokens after the
first. Each side reads every weight once per step, so the table gives bytes per step (llama.cpp: the GGUF's
tensor bytes; the output layer is tied to the embedding in both) and the share of this machine's read bandwidth.

Speech (needs `faster-whisper`): faster-whisper with the same Whisper tiny.en weights (CTranslate2, int8, greedy,
no VAD) against `auralm transcribe` on the demo model (whose encoder is those weights), per real clip
(`auralm.eval.real_speech`): seconds after one warm-up clip, and the word error rate of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_infer import decode_step_time, read_bandwidth
from bench_quant import step_bytes, step_cells

PROMPT_TEXT = ("The lighthouse keeper climbed the spiral stairs each evening to light the lamp, and the ships "
               "that passed in the night never knew his name. ")
AURALM_SIDES = [("auralm fp32", torch.float32, None), ("auralm bf16", torch.bfloat16, None),
                ("auralm int8", torch.bfloat16, "int8"), ("auralm int4 (g64)", torch.bfloat16, "int4")]
LLAMA_TYPES = {"Q8_0": 7, "Q4_0": 2}  # llama_ftype values (llama.h: LLAMA_FTYPE_MOSTLY_Q8_0, _Q4_0)


def prompt_ids(tokenizer, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(PROMPT_TEXT, add_special_tokens=False).ids
    return ids[:n]


def auralm_rows(ids: list[int], n_new: int, compile: bool) -> dict[str, dict]:
    import auralm

    rows = {}
    inp = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    sides = AURALM_SIDES + ([("auralm fp32, compiled", torch.float32, "compile")] if compile else [])
    for name, dtype, how in sides:
        chat = auralm.load(dtype=dtype, quantize=how if how != "compile" else None)
        step = None
        extra = ""
        if how == "compile":
            from auralm.infer.compiled import compile_decode, warm_up

            step = compile_decode(chat.model)
            extra = f"compiling took {warm_up(step, chat.model, batch_sizes=(1,)):.0f} s once"
        t0 = time.perf_counter()
        with torch.no_grad():
            chat.model(**inp, logits_to_keep=1)
        prefill = time.perf_counter() - t0
        times = [decode_step_time("auralm", chat.model, inp, n_new, step) for _ in range(2)]
        rows[name] = {"step_s": min(times), "bytes": step_bytes(chat.model), "prefill_s": prefill, "note": extra}
        print(f"  {name}: {rows[name]['step_s'] * 1e3:.1f} ms/step", file=sys.stderr)
        del chat
    return rows


def llama_rows(ids: list[int], n_new: int, threads: int, cache: Path) -> dict[str, dict]:
    import ctypes

    import llama_cpp
    import numpy as np

    from auralm.checkpoint.assets import SMOLLM2_135M_INSTRUCT_GGUF, fetch

    source = fetch(SMOLLM2_135M_INSTRUCT_GGUF)
    files = {"Q4_1 (as shipped)": source}
    cache.mkdir(parents=True, exist_ok=True)
    for name, ftype in LLAMA_TYPES.items():
        out = cache / f"smollm2-135m-instruct.{name}.gguf"
        if not out.is_file():
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype, params.allow_requantize, params.nthread = ftype, True, threads
            tmp = out.with_suffix(".tmp")
            if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
                raise RuntimeError(f"llama.cpp could not quantize {source} to {name}")
            tmp.replace(out)
        files[name] = out
    def last_logits(llm) -> np.ndarray:  # of the last evaluated token, the only one whose logits are computed
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),))

    rows = {}
    for name, path in files.items():
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids) + n_new + 8, n_batch=len(ids), n_threads=threads,
                              n_threads_batch=threads, verbose=False)
        best = []
        for _ in range(2):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            prefill = time.perf_counter() - t0
            token = int(np.argmax(last_logits(llm)))
            stamps = []
            for _ in range(n_new - 1):
                llm.eval([token])
                token = int(np.argmax(last_logits(llm)))
                stamps.append(time.perf_counter())
            best.append(((stamps[-1] - stamps[0]) / (len(stamps) - 1), prefill))
        step, prefill = min(best)
        tensor_bytes = path.stat().st_size  # metadata (tokenizer) included: an upper bound, ~1.6 MB over
        rows[f"llama.cpp {name}"] = {"step_s": step, "bytes": tensor_bytes, "prefill_s": prefill, "note": ""}
        print(f"  llama.cpp {name}: {step * 1e3:.1f} ms/step", file=sys.stderr)
        del llm
    return rows


def whisper_rows(threads: int) -> list[dict]:
    from faster_whisper import WhisperModel

    import auralm
    from auralm.checkpoint.assets import (
        WHISPER_TINY_EN_CT2,
        WHISPER_TINY_EN_CT2_CONFIG,
        WHISPER_TINY_EN_CT2_VOCABULARY,
        WHISPER_TINY_EN_TOKENIZER,
        fetch_all,
    )
    from auralm.eval.metrics import wer_details
    from auralm.eval.real_speech import CLIPS

    folder = fetch_all([WHISPER_TINY_EN_CT2, WHISPER_TINY_EN_CT2_CONFIG, WHISPER_TINY_EN_CT2_VOCABULARY,
                        WHISPER_TINY_EN_TOKENIZER])[0].parent
    fw = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads)
    chat = auralm.load()
    paths = fetch_all(c.file for c in CLIPS)

    def faster(path):
        segments, _ = fw.transcribe(str(path), language="en", beam_size=1, vad_filter=False,
                                    without_timestamps=True, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments)

    def ours(path):
        return str(chat.transcribe(str(path), language="en"))

    faster(paths[0]), ours(paths[0])  # warm-up
    rows = []
    for clip, path in zip(CLIPS, paths):
        row = {"clip": clip.name}
        for side, fn in (("faster-whisper", faster), ("auralm", ours)):
            t0 = time.perf_counter()
            text = fn(path)
            row[side + " s"] = time.perf_counter() - t0
            counts = wer_details([clip.reference], [text], "en")
            row[side + " errors"], row["words"] = counts.errors, counts.reference_length
        rows.append(row)
        print(f"  {clip.name}: faster-whisper {row['faster-whisper s']:.2f} s, auralm {row['auralm s']:.2f} s",
              file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens before decoding")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also the compiled float32 decode step (minutes)")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: llama, whisper")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "auralm" / "bench_peers",
                    help="where llama.cpp's requantized GGUF files are kept")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if "llama" not in skip:
        import auralm

        ids = prompt_ids(auralm.load().processor.tokenizer, args.prompt)
        rows = auralm_rows(ids, args.decode_tokens, args.compile)
        try:
            rows.update(llama_rows(ids, args.decode_tokens, args.threads, args.cache))
        except ImportError:
            print("llama-cpp-python is not installed: llama.cpp rows left out", file=sys.stderr)
        bw = read_bandwidth()
        ref = rows.get("llama.cpp Q8_0")
        print(f"\nSmolLM2-135M decoder, {args.prompt}-token prompt, {args.decode_tokens} greedy tokens at batch 1, "
              f"{args.threads} threads; read bandwidth {bw / 1e9:.1f} GB/s; load average {load:.1f} at start")
        print("| side | MB read per step | ms per step | tokens/s | GB/s | share of read bandwidth "
              f"| vs llama.cpp Q8_0 | prefill {args.prompt} tokens s | note |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, r in rows.items():
            ratio = f"{ref['step_s'] / r['step_s']:.2f}x" if ref else "-"
            print(f"| {name} | {step_cells(r, bw)} | {ratio} | {r['prefill_s']:.3f} | {r['note']} |")
    if "whisper" not in skip:
        try:
            rows = whisper_rows(args.threads)
        except ImportError:
            print("faster-whisper is not installed: the speech rows are left out", file=sys.stderr)
            return 0
        words = sum(r["words"] for r in rows)
        print(f"\nReal clips (auralm.eval.real_speech), {args.threads} threads, greedy, English")
        print("| clip | faster-whisper tiny.en int8 s | auralm demo s | auralm / faster-whisper |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['clip']} | {r['faster-whisper s']:.2f} | {r['auralm s']:.2f} | "
                  f"{r['auralm s'] / r['faster-whisper s']:.1f}x |")
        fw, ours = sum(r["faster-whisper s"] for r in rows), sum(r["auralm s"] for r in rows)
        print(f"| all ({words} words) | {fw:.2f} (WER {100 * sum(r['faster-whisper errors'] for r in rows) / words:.1f}%)"
              f" | {ours:.2f} (WER {100 * sum(r['auralm errors'] for r in rows) / words:.1f}%) | {ours / fw:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
