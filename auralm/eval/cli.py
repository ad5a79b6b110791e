"""`auralm eval` and `auralm data import`.

auralm eval --model DIR --suite synthetic --data WORLD [--out DIR] [--batch-size N] [--limit N]
            [--style nl|tags|chatml] [--tasks a,b] [--max-new-tokens N] [--compare OTHER/report.json]
            [--dtype float32|bfloat16|float16] [--quantize int8|int4]
            [--judge-url URL --judge-model NAME [--judge-api-key-env VAR]]
auralm data import NAME SRC --out DIR

`auralm eval` is resumable (rerun the same command after an interruption) and runs under torchrun:
`torchrun --nproc-per-node 4 -m auralm.cli eval ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from auralm.eval import report as reports
from auralm.eval.importers import IMPORTERS, import_dataset
from auralm.eval.runner import ModelPredictor, RunConfig, check_run_identity, count_items, evaluate
from auralm.eval.suites import SUITES, suite
from auralm.eval.tasks import STYLES
from auralm.terminal import stderr_line

JUDGE_KEY_ENV = "AURALM_JUDGE_API_KEY"
# auralm.model.quant.QuantSpec names, as `auralm chat` / `serve` list them (auralm.cli is a tier above eval).
QUANTIZE_CHOICES = ["int8", "int4", "int4-g32", "int4-g128"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `eval` and `data import` on the CLI's subparsers."""
    p = subparsers.add_parser("eval", help="evaluate a model on a suite of tasks (resumable, torchrun-ready)")
    p.add_argument(
        "--model", metavar="DIR", help="Hugging Face Qwen2-Audio folder (default: the embedded demo model)"
    )
    p.add_argument("--suite", required=True, choices=sorted(SUITES), help="which tasks to run")
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="synthetic: the world folder (auralm synth --out); paper suites: the `data import` --out folder",
    )
    p.add_argument("--out", metavar="DIR", help="predictions and report (default: eval-runs/<model>-<suite>)")
    p.add_argument("--batch-size", type=int, default=8, help="items decoded together (default 8)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items of each task")
    p.add_argument("--style", choices=STYLES, help="prompt convention of the synthetic suite (default nl)")
    p.add_argument("--tasks", help="comma-separated task names to run (default: the whole suite)")
    p.add_argument("--max-new-tokens", type=int, help="override every task's generation budget")
    p.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"],
        help="weights dtype (default: the folder's config torch_dtype; bfloat16 with --quantize)",
    )
    p.add_argument(
        "--quantize", choices=QUANTIZE_CHOICES,
        help="quantize the decoder's weights while loading: int8 per channel or int4 in groups (bfloat16 "
             "activations); runs on the CPU, where torch's int8 / int4 kernels are, even where CUDA is available",
    )
    p.add_argument(
        "--compare", metavar="REPORT", help="another run's report.json to put side by side with this one"
    )
    p.add_argument(
        "--judge-url", help="OpenAI-compatible endpoint that judges chat answers, e.g. http://host:8000/v1"
    )
    p.add_argument("--judge-model", help="the judge's model name at that endpoint")
    p.add_argument(
        "--judge-api-key-env",
        default=JUDGE_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the judge's API key (default {JUDGE_KEY_ENV})",
    )
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads per process for the model (default: the cores other processes leave idle, "
                        "at least 1; OMP_NUM_THREADS when set, as torchrun sets it)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="decode through the compiled step (auralm.infer.compiled): about 2x faster decoding on a CPU "
                        "after compiling for a minute or more at start. Default: only for runs of 1,000 items or "
                        "more on a CPU with the memory it adds free")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)

    data = subparsers.add_parser("data", help="data tools: import public datasets as auralm manifests")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: data.print_help() or 2)
    p = data_sub.add_parser("import", help="turn a dataset in its published layout into auralm manifests")
    p.add_argument("name", choices=sorted(IMPORTERS), help="dataset")
    p.add_argument("src", metavar="SRC_DIR", help="the dataset's folder as downloaded and extracted")
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/<name>/<subset>.jsonl")
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    summary = import_dataset(args.name, args.src, args.out)
    for path, count in summary.manifests.items():
        print(f"{path}: {count} records")
    if summary.problems:
        print(f"{len(summary.problems)} entries left out:", file=sys.stderr)
        for problem in summary.problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        if len(summary.problems) > 10:
            print(f"  ... and {len(summary.problems) - 10} more", file=sys.stderr)
    return 0


def _select(tasks: list, names: str | None) -> list:
    if not names:
        return tasks
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {t.name for t in tasks}]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; this suite has: {', '.join(t.name for t in tasks)}")
    return [t for t in tasks if t.name in wanted]


def _judge(args: argparse.Namespace):
    if not args.judge_url and not args.judge_model:
        return None
    if not (args.judge_url and args.judge_model):
        raise ValueError("--judge-url and --judge-model go together")
    # Imported here: it loads httpx, which only a judged run needs.
    from auralm.eval.judge_client import JudgeClient, JudgeSettings

    return JudgeClient(
        JudgeSettings(args.judge_url, args.judge_model, os.environ.get(args.judge_api_key_env))
    )


def run_eval(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not data.is_dir():  # the folders first: a typo is answered at once, not after torch's import
        raise FileNotFoundError(f"data folder {data} does not exist")
    if args.model is not None and not Path(args.model).is_dir():
        raise FileNotFoundError(f"model folder {args.model} does not exist")
    # Imported here, not at the top: they load torch and the model stack, which `auralm --help` does not need.
    import torch

    from auralm.infer.api import load
    from auralm.train.distributed import init_distributed, shutdown

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="auralm: %(message)s")
    other = reports.load_report(args.compare) if args.compare else None  # fail before the long part
    tasks = _select(suite(args.suite, args.style), args.tasks)
    model_dir = Path(args.model).resolve() if args.model else None
    out = Path(args.out or f"eval-runs/{model_dir.name if model_dir else 'demo'}-{args.suite}")

    judge = _judge(args)  # a half-given judge fails here, before the long part
    # What decides the predictions; a rerun into the same folder must match it (checked before loading).
    # (A key an earlier run.json lacks compares as None, so runs from before --quantize still resume.)
    identity = {"model": str(model_dir or "demo"), "suite": args.suite, "style": args.style, "dtype": args.dtype,
                "quantize": args.quantize, "max_new_tokens": args.max_new_tokens}  # fmt: skip
    dist = init_distributed("cpu" if args.quantize else "auto")  # quantized layers run on the CPU only
    try:
        if dist.is_main:
            check_run_identity(out, identity)
        barrier = torch.distributed.barrier if dist.distributed else None
        if barrier:
            barrier()
        chat = load(model_dir, dtype=getattr(torch, args.dtype) if args.dtype else None, threads=args.threads,
                    quantize=args.quantize, compile=args.compile is True, warm=stderr_line)
        chat.model.to(dist.device)
        if args.compile is None and dist.device.type == "cpu":  # neither --compile nor --no-compile
            from auralm.infer.long_jobs import compile_if_long

            # this process's share of the run's items
            compile_if_long(chat, stderr_line, items=count_items(tasks, data, args.limit) // dist.world_size)
        predictor = ModelPredictor(chat, args.max_new_tokens)
        cfg = RunConfig(data, out, args.batch_size, args.limit, dist.rank, dist.world_size)
        bars: dict[str, tqdm] = {}

        def progress(task: str, done: int, total: int) -> None:
            bar = bars.setdefault(
                task,
                tqdm(
                    total=total,
                    desc=task,
                    unit="item",
                    leave=False,
                    disable=args.quiet or not sys.stderr.isatty() or not dist.is_main,
                ),
            )
            bar.update(done - bar.n)

        try:
            results = evaluate(tasks, predictor, cfg, judge if dist.is_main else None, progress, barrier)
        finally:
            for bar in bars.values():
                bar.close()
    finally:
        if judge is not None:
            judge.close()
        shutdown()
    if not dist.is_main:
        return 0
    generation = {k: list(v) if isinstance(v, tuple) else v for k, v in predictor.settings().items()}
    config = {
        **identity, "generation": generation, "data": str(data.resolve()), "out": str(out.resolve()),
        "batch_size": args.batch_size, "limit": args.limit, "world_size": dist.world_size,
        "tasks": [t.name for t in tasks],
        "judge": {"url": args.judge_url, "model": args.judge_model} if args.judge_url else None,
    }  # fmt: skip
    report = reports.build_report(results, config)
    paths = reports.write_report(
        report, out, other, Path(args.compare).parent.name if args.compare else "other"
    )
    print(reports.markdown(report))
    if other is not None:
        print(
            reports.comparison_markdown(
                other, report, (Path(args.compare).parent.name or "other", "this run")
            )
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
