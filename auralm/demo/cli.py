"""`auralm demo`: the embedded demo model on example clips shipped with the package, next to the truth.

The clips come from the synthetic world's held-out test split (voices and sentences the model never trained on):
speech to transcribe, a sound and a note to analyse, a spoken question about a sound, and spoken questions
answered by voice alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

EXAMPLES_DIR = Path(__file__).parent / "examples"
CHAT_TOKENS = 48  # an answer's budget unless --max-new-tokens says; transcripts get the library's clip-length budget


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the embedded demo model on shipped example clips")
    p.add_argument("--model", metavar="DIR", help="use this model folder instead of the embedded demo model")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help=f"limit every answer and transcript window to N tokens (default: {CHAT_TOKENS} per answer; "
                        "transcripts: the budget of the clip's length, as `auralm transcribe`)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the model (default: the cores other processes leave idle, at least 1; "
                        "OMP_NUM_THREADS when set)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.model is not None and not Path(args.model).is_dir():  # at once, not after torch's import
        raise FileNotFoundError(f"model folder {args.model} does not exist")
    t0 = time.perf_counter()  # before the imports: loading torch is part of the wait for the model
    # Imported here: they load torch, which building the parser (`auralm --help`) does not need.
    import torch

    from auralm.demo.locate import demo_model_dir
    from auralm.infer.api import load

    chat = load(args.model or demo_model_dir(), threads=args.threads)
    examples = json.loads((EXAMPLES_DIR / "examples.json").read_text())
    threads = torch.get_num_threads()
    print(f"model ready in {time.perf_counter() - t0:.1f}s ({threads} CPU thread{'s' if threads > 1 else ''}; "
          f"--threads N to choose); {len(examples)} examples from held-out voices\n", flush=True)
    t_examples = time.perf_counter()
    for ex in examples:
        audio = str(EXAMPLES_DIR / ex["file"])
        t1 = time.perf_counter()
        if ex["mode"] == "transcribe":
            answer = chat.transcribe(audio, language=ex.get("language"), max_new_tokens=args.max_new_tokens).text
        else:
            answer = chat.chat(ex.get("prompt", ""), audio=audio, max_new_tokens=args.max_new_tokens or CHAT_TOKENS)
        took = time.perf_counter() - t1
        print(f"[{ex['title']}]  ({took:.1f}s)")
        if ex.get("prompt"):
            print(f"  asked:  {ex['prompt']}")
        elif ex["mode"] == "chat":
            print("  asked:  (by voice only)")
        print(f"  heard:  {answer}")
        print(f"  truth:  {ex['truth']}\n", flush=True)
    print(f"{len(examples)} examples in {time.perf_counter() - t_examples:.1f}s; "
          f"{time.perf_counter() - t0:.1f}s in all")
    return 0
