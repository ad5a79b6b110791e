"""`auralm train CONFIG.yaml [key=value ...]`: run a recipe; `--print-config` shows the resolved config.

Under torchrun every process runs the same command:
    torchrun --nproc-per-node 2 -m auralm.cli train configs/train/tiny_sft.yaml
"""

from __future__ import annotations

import argparse

from auralm.train.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="pre-train, fine-tune (SFT) or preference-tune (DPO) a model from a YAML config",
        description="Train with a YAML config (a serialized auralm.train.TrainConfig). Later arguments of the form "
        "key=value override it: optim.lr=3e-4 parts.llm=lora data.train.0.weight=2.",
    )
    p.add_argument(
        "config", nargs="?", help="YAML config file (omit with --print-config to see the defaults)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted-key overrides of the config")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.config is not None and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        # `auralm train --print-config key=value`: the first override landed in `config`.
        args.overrides = [args.config, *args.overrides]
        args.config = None
    if args.print_config:
        print(load_config(args.config, args.overrides, validate=False).to_yaml(), end="")
        return 0
    if args.config is None:
        raise ValueError("auralm train needs a config file: auralm train CONFIG.yaml [key=value ...]")
    cfg = load_config(args.config, args.overrides)

    # Imported here: the recipes load torch, which building the parser (`auralm --help`) does not need.
    from auralm.train.recipes import train

    result = train(cfg)
    if result.metrics:
        last = [r for r in result.metrics if "loss" in r]
        loss = f", last loss {last[-1]['loss']:.4f}" if last else ""
        print(f"trained {result.steps} steps{loss}; model: {result.final_dir}")
    return 0
