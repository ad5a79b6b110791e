"""`auralm <command>`: one entry point. Errors print one line and exit non-zero; `--debug` shows the traceback.

Nothing heavy is imported at the top of this file or of the subsystems' `add_parser` modules: `auralm --help`,
a usage error or a missing file must answer in well under a second, and torch alone takes seconds to import.
The commands import the model stack when they run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import stat
import sys
from pathlib import Path
from typing import Any

from auralm.terminal import bar_shape, stderr_line
from auralm.version import __version__

# Commands that live with their subsystem: each module has add_parser(subparsers) and run(args) -> int.
# The value is the extra that provides the module's dependencies.
SUBSYSTEM_COMMANDS = {
    "auralm.synth.cli": None, "auralm.train.cli": "train", "auralm.eval.cli": "eval", "auralm.serve.cli": "serve",
    "auralm.demo.cli": None,
}

EXIT_USAGE, EXIT_ERROR = 2, 1
# auralm.audio.DEFAULT_MAX_SECONDS in minutes, for --help without importing auralm.audio (torch); a test checks it.
LIBRARY_MAX_MINUTES = 20


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def threads_arg(p: argparse.ArgumentParser) -> None:
    """`--threads`, the same for every command that runs a model (`load(threads=...)`)."""
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for the model (default: the cores other processes leave idle, at least 1; "
                        "OMP_NUM_THREADS when set)")


# auralm.model.quant.QuantSpec names (int4 groups of 64 by default); listed here so --help needs no torch.
QUANTIZE_CHOICES = ["int8", "int4", "int4-g32", "int4-g128"]


def quantize_arg(p: argparse.ArgumentParser) -> None:
    """`--quantize`, the same for every command that loads a model (`load(quantize=...)`)."""
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES,
                   help="quantize the decoder's weights while loading: int8 per channel or int4 in groups "
                        "(bfloat16 activations; faster decoding on a CPU, less memory). A folder written by "
                        "`auralm quantize` loads quantized without it")


def compile_arg(p: argparse.ArgumentParser, long_job: str | None = None) -> None:
    """`--compile` for the commands that decode (`load(compile=True)`, then `warm_up`). `long_job` names what makes
    the command's job long: `--compile` / `--no-compile` then override the default, which is to compile for long
    jobs only (`infer.long_jobs`); without it `--compile` is a plain switch, off by default."""
    what = ("decode through the compiled step (auralm.infer.compiled): about 2x faster decoding on a CPU after "
            "compiling for a minute or more at start")
    if long_job is None:
        p.add_argument("--compile", action="store_true", help=what + "; worth it for long or many answers")
        return
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help=what + f". Default: only for {long_job} on a CPU with the memory it adds free")


def _model_arg(p: argparse.ArgumentParser, long_job: str | None = None) -> None:
    p.add_argument("--model", metavar="DIR", help="Hugging Face Qwen2-Audio folder (default: the embedded demo model)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype (default: the folder's config torch_dtype; bfloat16 with --quantize)")
    quantize_arg(p)
    threads_arg(p)
    compile_arg(p, long_job)


def _load(args):
    import torch

    from auralm.infer.api import load

    return load(args.model, dtype=getattr(torch, args.dtype) if args.dtype else None, threads=args.threads,
                quantize=args.quantize, compile=args.compile is True, warm=stderr_line)


def check_model_dir(path: str | None) -> None:
    """Refuse a --model that is no folder before torch is imported (None: the default model, found later)."""
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist" if not Path(path).exists()
                                else f"model folder {path} is not a folder")


def check_audio_file(path: str) -> None:
    """Refuse, in one line, a path that cannot be an audio file: missing, a directory, not a regular file (a
    device such as /dev/zero, a FIFO, a socket) or unreadable. Runs before the model is loaded."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"audio file {path} does not exist") from None
    except OSError as err:
        raise OSError(f"cannot open audio file {path}: {err.strerror}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path} is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file (a device, pipe or socket); pass an audio file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"audio file {path} is not readable (permission denied)")


# ---- transcribe -------------------------------------------------------------------------------------------
def _duration_or_zero(path: str) -> float:
    """A file's duration for sizing the job; 0 for one that cannot be read (its error comes when its turn comes,
    after the files before it are transcribed)."""
    from auralm.audio import AudioError, audio_duration

    try:
        return audio_duration(path)
    except AudioError:
        return 0.0


def format_transcript(result, fmt: str) -> str:
    """txt, json, srt or vtt rendering of a Transcript."""
    from auralm.infer.transcript_formats import to_srt, to_vtt

    if fmt == "txt":
        return result.text
    if fmt == "json":
        return json.dumps({
            "text": result.text, "language": result.language,
            "segments": [
                {"start": s.start, "end": s.end, "text": s.text,
                 "words": [{"word": w, "start": a, "end": b} for w, a, b in s.words]}
                for s in result.segments if s.text
            ],
        }, ensure_ascii=False, indent=2)
    return (to_srt if fmt == "srt" else to_vtt)(result).rstrip("\n")


def cmd_transcribe(args) -> int:
    for f in args.files:  # check every file before importing and loading the model
        check_audio_file(f)
    check_model_dir(args.model)
    from tqdm import tqdm

    from auralm.audio import DEFAULT_MAX_SECONDS, load_audio

    chat = _load(args)
    if args.compile is None:  # neither --compile nor --no-compile: long jobs only
        from auralm.infer.long_jobs import compile_if_long

        compile_if_long(chat, stderr_line, audio_seconds=sum(_duration_or_zero(f) for f in args.files))
    max_seconds = DEFAULT_MAX_SECONDS if args.max_audio_seconds is None else args.max_audio_seconds
    for f in args.files:
        wave = load_audio(f, max_seconds=max_seconds)
        bar = tqdm(total=None, desc=Path(f).name, unit="window", disable=not sys.stderr.isatty() or args.quiet,
                   **bar_shape())

        def progress(done: int, total: int, bar=bar) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.refresh()  # also at 0 done: the total shows before the first window's wait

        # The wave is decoded under --max-audio-seconds already; the processor's own limit must not apply again.
        search = {k: v for k, v in (("num_beams", args.beams), ("ctc_weight", args.ctc_weight)) if v is not None}
        result = chat.transcribe_wave(wave, language=args.language, timestamps=args.word_timestamps,
                                      progress=progress, **search)
        bar.close()
        text = format_transcript(result, args.format)
        if args.output_dir:
            out = Path(args.output_dir) / (Path(f).stem + "." + args.format)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")
        else:
            if len(args.files) > 1 and args.format == "txt":
                print(f"{f}: ", end="")
            print(text)
    return 0


# ---- chat ---------------------------------------------------------------------------------------------------
CHAT_HELP = "commands: /audio FILE (attach to your next message), /reset, /quit"


def cmd_chat(args) -> int:
    for f in args.audio or []:
        check_audio_file(f)
    check_model_dir(args.model)
    chat = _load(args)
    gen = {"max_new_tokens": args.max_new_tokens, "do_sample": args.temperature > 0,
           "temperature": args.temperature if args.temperature > 0 else 1.0}
    if args.prompt is not None or (args.audio and not sys.stdin.isatty()):
        for delta in chat.stream(args.prompt or "", audio=list(args.audio) if args.audio else None, **gen):
            print(delta, end="", flush=True)
        print()
        return 0
    return _interactive(chat, list(args.audio or []), gen)


def _interactive(chat, pending: list[str], gen: dict[str, Any]) -> int:
    from auralm.audio import AudioError

    print(f"auralm chat. {CHAT_HELP}")
    history: list[dict[str, Any]] = []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history, pending = [], []
            print("(conversation cleared)")
            continue
        if line.startswith("/audio"):
            path = line[len("/audio"):].strip()
            try:
                check_audio_file(path)
            except FileNotFoundError:
                print(f"(no such file: {path})")
                continue
            except (OSError, ValueError) as err:  # a directory, a device, unreadable
                print(f"({err})")
                continue
            pending.append(path)
            print(f"(attached {path}; it goes with your next message)")
            continue
        if line.startswith("/"):
            print(f"(unknown command; {CHAT_HELP})")
            continue
        if not line and not pending:
            continue
        content = [{"type": "audio", "audio": p} for p in pending] + ([{"type": "text", "text": line}] if line else [])
        turn = history + [{"role": "user", "content": content}]
        try:
            print("assistant> ", end="", flush=True)
            answer = "".join(print(d, end="", flush=True) or d for d in chat.stream(turn, **gen)).strip()
            print()
        except (AudioError, ValueError) as err:
            print(f"\n(error: {err})")
            continue
        history = turn + [{"role": "assistant", "content": answer}]
        pending = []


_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64", "I64": "int64"}


# ---- info ---------------------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    check_model_dir(args.dir)
    from safetensors import safe_open

    from auralm.checkpoint.hf import checkpoint_files, released_key
    from auralm.checkpoint.quantized import QUANT_STEM, folder_quantization
    from auralm.checkpoint.qwen_v1 import is_qwen_v1_folder, read_config, weight_shapes
    from auralm.config import AudioLMConfig

    folder = Path(args.dir)
    v1 = is_qwen_v1_folder(folder)  # Qwen-Audio (v1): config names and key layout of its own
    cfg = read_config(folder) if v1 else AudioLMConfig.from_pretrained(folder)
    counts: dict[str, int] = {}
    dtypes: set[str] = set()
    if v1:
        for name, (shape, dtype) in weight_shapes(folder).items():  # in auralm's parameter names
            part = name.split(".")[0]
            counts[part] = counts.get(part, 0) + math.prod(shape)
            dtypes.add(_SAFETENSORS_DTYPES.get(dtype, dtype))
    quantized = None if v1 else folder_quantization(folder)
    for path in [] if v1 else checkpoint_files(folder, QUANT_STEM if quantized else "model"):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                sl = f.get_slice(key)
                n = 1
                for d in sl.get_shape():
                    n *= d
                part = released_key(key).split(".")[0]
                counts[part] = counts.get(part, 0) + n
                dtypes.add(_SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype()))
    print(f"folder:      {folder}")
    print(f"family:      {'Qwen-Audio (v1)' if v1 else 'Qwen2-Audio'}")
    print(f"encoder:     {cfg.encoder.n_layers} layers x {cfg.encoder.d_model}, {cfg.encoder.n_heads} heads, {cfg.encoder.n_mels} mels")
    d = cfg.decoder
    print(f"decoder:     {d.n_layers} layers x {d.d_model}, {d.n_heads} heads / {d.n_kv_heads} kv heads, vocab {d.vocab_size}")
    for part, n in sorted(counts.items()):
        print(f"  {part:<24} {n:>15,d} parameters")
    print(f"parameters:  {sum(counts.values()):,d}")
    print(f"dtype:       {', '.join(sorted(dtypes))}")
    if quantized:
        print(f"quantized:   {quantized.name} decoder layers, output layer int{quantized.head_bits} (auralm only)")
    print(f"audio token: {cfg.audio_token_id}")
    if v1:
        print(f"audio span:  <audio> {cfg.audio_start_id}, </audio> {cfg.audio_start_id + 1}")
        print(f"long context: dynamic NTK {d.rope_dynamic_ntk}, log-n attention {d.logn_attention}, "
              f"trained length {d.trained_length}")
    return 0


# ---- quantize -----------------------------------------------------------------------------------------------
def cmd_quantize(args) -> int:
    """Write a quantized copy of a model folder: weights quantized once, the tokenizer and processor files copied."""
    import shutil

    import torch

    from auralm.checkpoint.hf import load_audiolm, save_audiolm

    check_model_dir(args.model)
    src, out = Path(args.model).resolve(), Path(args.out).resolve()
    if out == src:
        raise ValueError("--out must be another folder than --model (the float weights are read while writing)")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.calibration:
        model = _gptq_model(src, args, dtype or torch.bfloat16)
    else:
        model = load_audiolm(src, dtype=dtype, quantize=args.quantize)  # layer by layer: the float model is never whole
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():  # tokenizer, processor, chat template, generation config, auralm.json
        if f.is_file() and f.name != "config.json" and not f.name.startswith("model") and f.suffix != ".safetensors":
            shutil.copy2(f, out / f.name)
    save_audiolm(model, out)
    size = sum(f.stat().st_size for f in out.glob("quantized*.safetensors"))
    how = "GPTQ rounding" if args.calibration else "rounded to nearest"
    print(f"wrote {out} ({args.quantize}, {how}, {size / 1e9:.2f} GB of weights); load it with --model {out}")
    return 0


def _gptq_model(src: Path, args, dtype):
    """The float model of `src`, whole, quantized with GPTQ rounding on rows of the --calibration manifest."""
    import time

    from auralm.checkpoint.hf import load_audiolm
    from auralm.data.calibration import calibration_batches
    from auralm.model.gptq import gptq_quantize_
    from auralm.model.quant import QuantSpec
    from auralm.processor import Processor

    if not Path(args.calibration).is_file():
        raise FileNotFoundError(f"--calibration {args.calibration}: no such manifest")
    model = load_audiolm(src)  # its own dtype: the activations the layers are calibrated on
    batches = calibration_batches(args.calibration, Processor.from_pretrained(src), args.calibration_rows)
    t0 = time.time()

    def progress(done: int, total: int) -> None:
        stderr_line(f"GPTQ: decoder layer {done}/{total} ({time.time() - t0:.0f} s)")

    stderr_line(f"GPTQ: calibrating on {len(batches)} rows of {args.calibration}")
    gptq_quantize_(model, QuantSpec.parse(args.quantize), batches, dtype, progress=progress)
    return model


# ---- wiring -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auralm", description="Audio-language models: run, train, evaluate, serve.")
    parser.add_argument("--version", action="version", version=f"auralm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("transcribe", help="transcribe audio files of any length")
    p.add_argument("files", nargs="+", metavar="FILE")
    _model_arg(p, long_job="an hour of audio or more")
    p.add_argument("--language", help="language code, e.g. en (default: detected; --format json reports the "
                                      "language the model named, or null when it named none)")
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt")
    p.add_argument("--word-timestamps", action="store_true",
                   help="ask the model for word times (its word-timestamp mode); --format json lists them")
    p.add_argument("--output-dir", help="write FILE.<format> there instead of printing")
    p.add_argument("--max-audio-seconds", type=float, metavar="S",
                   help=f"refuse longer audio (default: the library's limit, {LIBRARY_MAX_MINUTES:g} min)")
    p.add_argument("--beams", type=int, metavar="N",
                   help="beam search with N beams (default: the folder's auralm.json asr_num_beams, else 1 = greedy)")
    p.add_argument("--ctc-weight", type=float, metavar="W",
                   help="models with a CTC head: weight of its prefix scores against the LLM's, 0-1 (default: the "
                        "folder's asr_ctc_weight, else 0; the demo model: 0.5 with 4 beams)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("chat", help="ask about audio, or talk by voice; interactive without a prompt")
    p.add_argument("prompt", nargs="?", help="the question (omit for an interactive session)")
    p.add_argument("--audio", action="append", metavar="FILE", help="attach an audio file (repeatable)")
    _model_arg(p)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("quantize", help="write an int8 / int4 copy of a model folder (quantized once, loads fast)")
    p.add_argument("--model", metavar="DIR", required=True, help="the float Hugging Face Qwen2-Audio folder")
    p.add_argument("--out", metavar="DIR", required=True, help="the folder to write")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="int8", help="int8 (default) or int4 groups")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], help="activations' dtype (default bfloat16)")
    p.add_argument("--calibration", metavar="MANIFEST",
                   help="GPTQ rounding: choose the codes that keep each layer's outputs on these rows (a training "
                        "manifest: task records, conversations) instead of rounding each weight to its nearest code; "
                        "the float model is loaded whole for it")
    p.add_argument("--calibration-rows", type=int, default=64, metavar="N", help="rows of the manifest used (default 64)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("info", help="print a model folder's config, parameter count and dtype")
    p.add_argument("dir")
    p.set_defaults(func=cmd_info)

    for name, extra in SUBSYSTEM_COMMANDS.items():
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            if err.name == name:
                continue  # that subsystem is not part of this build
            hint = f'pip install "auralm[{extra}]"' if extra else "reinstall auralm"
            p = sub.add_parser(name.split(".")[1], help=f"(unavailable: {err.name} is missing)")
            p.set_defaults(func=_missing(f"{err.name} is not installed; {hint}"))
            continue
        before = set(sub.choices)
        module.add_parser(sub)
        for cmd in set(sub.choices) - before:
            if sub.choices[cmd].get_default("func") is None:
                sub.choices[cmd].set_defaults(func=module.run)
    return parser


def _missing(message: str):
    def run(args) -> int:
        raise RuntimeError(message)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("auralm: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line for users; --debug for developers
        if args.debug:
            raise
        kind = "" if isinstance(err, (ValueError, FileNotFoundError, OSError)) else f"{type(err).__name__}: "
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"auralm: error: {kind}{msg}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
