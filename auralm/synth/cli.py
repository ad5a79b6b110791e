"""`auralm synth`: generate a synthetic audio world, or show the stats of one.

auralm synth --preset tiny --out DIR [--seed N] [--workers N] [--scale X]
auralm synth --out DIR --stats
"""

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

# The presets of auralm.synth.world, named here so that building the parser (`auralm --help`) does not import the
# world's numpy/scipy signal stack; an unknown name is refused by world.preset() (tests check the two agree).
PRESET_NAMES = ("demo", "tiny")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `synth` subcommand on the CLI's subparsers."""
    p = subparsers.add_parser("synth", help="generate the synthetic audio world (or show its stats)")
    p.add_argument(
        "--preset", default="tiny", metavar="NAME",
        help=f"world size: {' or '.join(PRESET_NAMES)} (default: tiny)",
    )
    p.add_argument("--out", required=True, help="output folder (an interrupted run in it is resumed)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)"
    )
    p.add_argument(
        "--scale", type=float, default=1.0, help="multiply the preset's clip counts by this factor"
    )
    p.add_argument("--stats", action="store_true", help="print the stats of the world in --out and exit")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the process exit code."""
    from auralm.synth import stats

    out = Path(args.out)
    if args.stats:
        path = out / "stats.json"
        if not path.is_file():
            print(f"error: {path} not found; generate the world first", file=sys.stderr)
            return 2
        print(stats.format_stats(json.loads(path.read_text())))
        return 0
    if args.preset not in PRESET_NAMES:  # refused before the world's modules are imported
        print(f"error: unknown preset {args.preset!r}; expected one of {list(PRESET_NAMES)}", file=sys.stderr)
        return 2
    from auralm.synth import world

    try:
        world.preset(args.preset, args.scale)  # a bad scale is refused before any work
    except world.WorldError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    bar = tqdm(total=None, unit="clip", desc=f"synth {args.preset}", disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        report = world.generate(out, args.preset, args.seed, args.workers, args.scale, progress)
    except (world.WorldError, RuntimeError) as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    bar.close()
    print(stats.format_stats(report.stats))
    print(
        f"{report.clips} clips in {out} ({report.generated} generated now in {report.seconds:.1f} s, "
        f"{report.clips_per_second:.1f} clips/s with {args.workers} worker(s))"
    )
    return 0
