"""`auralm serve`: the OpenAI-compatible server and the voice-chat page for one model folder.

    auralm serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--allow-domain D ...]
                 [--allow-file-dir DIR] [--max-batch N] [--max-queue N] ...

Binds to loopback unless told otherwise. The API key may come from the AURALM_API_KEY environment variable (so it
does not show in the process list); remote audio URLs and file:// URLs are off unless allowed here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from auralm.serve.settings import MB, ServeSettings
from auralm.terminal import stderr_line

API_KEY_ENV = "AURALM_API_KEY"
_DEFAULTS = ServeSettings()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `serve` subcommand on the CLI's subparsers."""
    p = subparsers.add_parser("serve", help="OpenAI-compatible API server and voice-chat web page")
    p.add_argument("--model", metavar="DIR", help="Hugging Face Qwen2-Audio folder (default: the embedded demo model)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype (default: the folder's config torch_dtype; bfloat16 with --quantize)")
    p.add_argument("--quantize", choices=["int8", "int4", "int4-g32", "int4-g128"],
                   help="quantize the decoder's weights while loading (int8 per channel, int4 in groups; bfloat16 "
                        "activations): faster decoding on a CPU, less memory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--model-name", help="model id the API lists (default: the folder's name)")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' on /v1 routes (or set {API_KEY_ENV})")
    p.add_argument("--allow-domain", action="append", default=[], metavar="DOMAIN",
                   help="allow http(s) audio URLs on this host and its subdomains (repeatable; default: none)")
    p.add_argument("--allow-file-dir", metavar="DIR", help="allow file:// audio URLs inside this folder")
    p.add_argument("--max-batch", type=int, default=_DEFAULTS.max_batch, help="requests decoded together")
    p.add_argument("--max-queue", type=int, default=_DEFAULTS.max_queue, help="waiting requests before 429")
    p.add_argument("--max-body-mb", type=float, default=_DEFAULTS.max_body_bytes / MB, help="request body limit")
    p.add_argument("--max-audio-mb", type=float, default=_DEFAULTS.max_audio_bytes / MB, help="one audio's bytes")
    p.add_argument("--max-audio-seconds", type=float, default=_DEFAULTS.max_audio_seconds,
                   help="decoded chat audio per request")
    p.add_argument("--max-transcribe-seconds", type=float, default=_DEFAULTS.max_transcribe_seconds,
                   help="decoded audio per transcription")
    p.add_argument("--max-audios", type=int, default=_DEFAULTS.max_audios, help="audio clips per request")
    p.add_argument("--max-tokens-limit", type=int, default=_DEFAULTS.max_tokens_limit,
                   help="largest max_tokens a request may ask for")
    p.add_argument("--health-stall-seconds", type=float, default=_DEFAULTS.health_stall_seconds,
                   help="/health answers 503 'stalled' when the model makes no progress this long while work waits")
    p.add_argument("--health-min-free-fds", type=int, default=_DEFAULTS.health_min_free_fds,
                   help="/health answers 503 when fewer file descriptors than this are free")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the model (default: the cores other processes leave idle, at least 1; "
                        "OMP_NUM_THREADS when set)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="compile the decode step in the background and switch to it when ready (auto: on a CPU when "
                        "memory allows; about 1.6-2.4x faster decoding on the demo, 15 s to a few minutes of "
                        "compiling; a float32 decoder is held twice, a bfloat16 or quantized one once)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)
    return p


def settings_from_args(args: argparse.Namespace, model_dir: Path) -> ServeSettings:
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    return ServeSettings(
        model_name=args.model_name or model_dir.name, api_key=api_key, max_batch=args.max_batch,
        max_queue=args.max_queue, max_body_bytes=int(args.max_body_mb * MB), max_audio_bytes=int(args.max_audio_mb * MB),
        max_audio_seconds=args.max_audio_seconds, max_transcribe_seconds=args.max_transcribe_seconds,
        max_audios=args.max_audios, max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=min(_DEFAULTS.default_max_tokens, args.max_tokens_limit),
        allow_domains=tuple(args.allow_domain), allow_file_dir=Path(args.allow_file_dir) if args.allow_file_dir else None,
        health_stall_seconds=args.health_stall_seconds, health_min_free_fds=args.health_min_free_fds,
        compile=args.compile,
    )


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until interrupted; returns the process exit code."""
    if args.model is not None and not Path(args.model).is_dir():  # at once, not after torch's import
        raise FileNotFoundError(f"model folder {args.model} does not exist")
    try:
        import uvicorn

        from auralm.serve.app import create_app
    except ImportError as err:
        raise RuntimeError(f'{err.name} is not installed; pip install "auralm[serve]"') from None
    import torch

    from auralm.infer.api import load
    from auralm.infer.registry import default_model_dir

    # No folder named: the default model the package root registers (the embedded demo model).
    model_dir = (Path(args.model) if args.model is not None else default_model_dir()).resolve()
    settings = settings_from_args(args, model_dir)  # checks every limit before the model is loaded
    chat = load(model_dir, dtype=getattr(torch, args.dtype) if args.dtype else None, threads=args.threads,
                quantize=args.quantize, warm=stderr_line)  # compile=False: `warm` gets only load's notes
    if args.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        print(f"auralm: warning: serving on {args.host} without an API key; anyone who can reach it can use it",
              file=sys.stderr)
    print(f"auralm: serving {settings.model_name} on http://{args.host}:{args.port}/ (API at /v1)", file=sys.stderr)
    uvicorn.run(create_app(chat, settings, announce=stderr_line), host=args.host, port=args.port,
                log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
