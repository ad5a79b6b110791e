"""How models rank held-out preference pairs: the log-probability of the chosen answer against the rejected one.

    python -m auralm.eval.preference --manifest WORLD/test.jsonl MODEL_DIR [MODEL_DIR ...] [--limit N]

For every preference row of the manifest (a prompt with audio, a chosen and a rejected answer) each model scores
log pi(chosen | prompt) - log pi(rejected | prompt), summed over the answer tokens (the quantity DPO pushes up).
Reported per kind of pair and overall: accuracy (share of pairs with a positive margin) and the mean margin in
nats. Comparing the SFT model with the DPO model on held-out pairs measures what the DPO stage changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from auralm.checkpoint.hf import load_audiolm
from auralm.data.collate import Collator
from auralm.data.dataset import TrainingDataset, load_examples
from auralm.data.manifest import load_manifest
from auralm.processor import Processor
from auralm.train.objective import TrainModule


def preference_margins(model_dir: str | Path, manifest: str | Path, limit: int | None = None,
                       batch_size: int = 8) -> list[tuple[str, float]]:
    """(kind, margin in nats) of each preference row of the manifest, in order (the first `limit` rows)."""
    processor = Processor.from_pretrained(model_dir)
    model = load_audiolm(model_dir)
    examples, _ = load_examples(manifest, "dpo", "nl", processor.chat_template)
    kinds = {r["id"]: r.get("kind", "all") for r in load_manifest(manifest)[0] if r["task"] == "preference"}
    examples = examples[:limit]
    dataset = TrainingDataset(examples, processor)
    collate, module = Collator(processor.pad_token_id), TrainModule(model)
    out: list[tuple[str, float]] = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            logp = module(collate([dataset[i] for i in idx]), sequences=True)  # (2P,): chosen rows, then rejected
            chosen, rejected = logp.chunk(2)
            out += [(kinds.get(examples[i].id, "all"), float(m)) for i, m in zip(idx, chosen - rejected)]
    return out


def summarize(margins: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """{kind (and 'all'): {'pairs', 'accuracy', 'mean_margin'}}."""
    groups: dict[str, list[float]] = defaultdict(list)
    for kind, m in margins:
        groups[kind].append(m)
        groups["all"].append(m)
    return {k: {"pairs": len(v), "accuracy": sum(m > 0 for m in v) / len(v), "mean_margin": sum(v) / len(v)}
            for k, v in sorted(groups.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model folders to compare")
    ap.add_argument("--manifest", required=True, type=Path, help="a manifest with preference rows (held-out split)")
    ap.add_argument("--limit", type=int, help="only the first N preference rows")
    ap.add_argument("--json", type=Path, help="also write the summaries here")
    args = ap.parse_args(argv)
    results = {}
    for folder in args.models:
        try:
            results[str(folder)] = summarize(preference_margins(folder, args.manifest, args.limit))
        except (OSError, ValueError) as err:
            print(f"error: {folder}: {err}", file=sys.stderr)
            return 1
    kinds = sorted({k for r in results.values() for k in r})
    print(f"{'model':<40}{'kind':<22}{'pairs':>6}{'accuracy':>10}{'margin':>10}")
    for name, summary in results.items():
        for k in kinds:
            s = summary.get(k)
            if s:
                print(f"{name[-40:]:<40}{k:<22}{s['pairs']:>6}{100 * s['accuracy']:>9.1f}%{s['mean_margin']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
