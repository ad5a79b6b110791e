"""Quality of int8 / int4 weights on a real model: the embedded demo model (or --model DIR) on its example clips.

    python benchmarks/quant_quality.py [--model DIR] [--max-new-tokens 24] [--calibration MANIFEST]

For each example clip of auralm/demo/examples, the bfloat16 model's greedy answer (transcript for the speech
examples) is decoded; then every variant is teacher-forced on that answer and its per-token KL(bf16 || variant) is
taken over the answer's tokens (the positions that choose them). Also whether each variant's own greedy answer
equals bfloat16's (per clip on stderr: * = differs). float32 is a variant too: its KL is the size of bfloat16's own
rounding on this model. With --calibration, int8 and int4-g64 with GPTQ rounding (`auralm quantize --calibration`,
calibrated on that manifest's rows, which must not be the example clips) are variants too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

EXAMPLES = Path(__file__).resolve().parent.parent / "auralm" / "demo" / "examples"
VARIANTS = [("fp32", torch.float32, None), ("int8", None, "int8"), ("int4-g64", None, "int4"),
            ("int4-g32", None, "int4-g32")]


def token_kl(ref: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    p, q = F.log_softmax(ref.float(), -1), F.log_softmax(other.float(), -1)
    return (p.exp() * (p - q)).sum(-1)


def gptq_variants(model: str | None, manifest: str, rows: int) -> dict:
    """int8 and int4-g64 with GPTQ rounding, each calibrated on `rows` rows of `manifest`."""
    import time

    import auralm
    from auralm.cpu import fast_bf16
    from auralm.data.calibration import calibration_batches
    from auralm.model.cpu_bf16 import float32_products_
    from auralm.model.gptq import gptq_quantize_
    from auralm.model.quant import QuantSpec

    out = {}
    for name in ("int8", "int4"):
        chat = auralm.load(model, dtype=torch.float32)
        t0 = time.time()
        batches = calibration_batches(manifest, chat.processor, rows)
        gptq_quantize_(chat.model, QuantSpec.parse(name), batches, torch.bfloat16)
        if not fast_bf16():
            float32_products_(chat.model)  # as `load` does for a bfloat16 model on such a CPU
        print(f"{name}-gptq: {len(batches)} calibration rows, {time.time() - t0:.0f} s", file=sys.stderr)
        out[f"{name}-gptq"] = chat
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: the embedded demo model)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--calibration", metavar="MANIFEST", help="also GPTQ-rounded int8 / int4 calibrated on its rows")
    ap.add_argument("--calibration-rows", type=int, default=64)
    args = ap.parse_args()

    import auralm
    from auralm.audio import load_audio
    from auralm.infer.generate import generate
    from auralm.text.prompts import asr_prompt

    ref = auralm.load(args.model, dtype=torch.bfloat16)
    chats = {name: auralm.load(args.model, dtype=dtype, quantize=q) for name, dtype, q in VARIANTS}
    if args.calibration:
        chats.update(gptq_variants(args.model, args.calibration, args.calibration_rows))
    examples = json.loads((EXAMPLES / "examples.json").read_text())
    kls: dict[str, list[torch.Tensor]] = {name: [] for name in chats}
    same: dict[str, int] = dict.fromkeys(chats, 0)
    for ex in examples:
        wave = load_audio(EXAMPLES / ex["file"])
        if ex["mode"] == "transcribe":
            inputs = ref.processor(text=asr_prompt(ex.get("language"), False, ref.options), audio=wave)
        else:
            inputs = ref.inputs([ref.conversation(ex["prompt"], audio=(wave, 16000))])
        cfg = ref.config(max_new_tokens=args.max_new_tokens)
        answer = generate(ref.model, dict(inputs), cfg, pad_token_id=0)  # (1, T + n)
        T = inputs["input_ids"].shape[1]
        forced = {**inputs, "input_ids": answer, "attention_mask": torch.ones_like(answer)}
        equal = {}
        with torch.no_grad():
            base = ref.model(**forced).logits[0, T - 1:-1]
            for name, chat in chats.items():
                kls[name].append(token_kl(base, chat.model(**forced).logits[0, T - 1:-1]))
                equal[name] = torch.equal(generate(chat.model, dict(inputs), cfg, pad_token_id=0), answer)
                same[name] += equal[name]
        text = ref.processor.decode(answer[0, T:].tolist())
        row = " ".join(f"{n} {kls[n][-1].mean():.1e}{'' if equal[n] else '*'}" for n in chats)
        print(f"  {ex['file']:<28} {row}  | {text[:50]!r}", file=sys.stderr)
    n_tok = sum(k.numel() for k in kls["fp32"])
    print(f"model: {args.model or 'the embedded demo model'}; {len(examples)} clips, {n_tok} answer tokens")
    print("| variant | mean KL(bf16 \\|\\| variant), nats/token | median | max | greedy answers equal to bf16 |")
    print("|---|---|---|---|---|")
    for name in chats:
        v = torch.cat(kls[name])
        print(f"| {name} | {v.mean():.2e} | {v.median():.2e} | {v.max():.2e} | {same[name]}/{len(examples)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
