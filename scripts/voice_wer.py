"""How well does Whisper tiny.en read each voice of the synthetic world? Prints WER per voice.

Each voice speaks the same N sentences (half book sentences, half everyday ones, from the test split), as shipped
(no pitch or tempo change, no room, noise or telephone band) and once more with the mixture's perturbation drawn
per clip for the natural voices; faster-whisper transcribes them with the pinned Whisper tiny.en CTranslate2
weights (`auralm.checkpoint.assets`, the same weights as the demo model's encoder), greedy, no VAD. WER is
auralm's (Whisper's English normaliser, word edit distance summed over the sentences).

    pip install faster-whisper==1.2.1      # not an auralm dependency: only this measurement uses it
    python scripts/voice_wer.py --sentences 16
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from auralm.checkpoint import assets
from auralm.eval.metrics import wer_details
from auralm.synth import speakers, speech, texts, voices
from auralm.synth.speakers import NaturalVoice

# espeak-ng speakers measured: one per accent family, male and female, normal rate and mid pitch.
ESPEAK = (
    voices.Voice("en-us", "m1", "male", "en", 175, "normal", 50, "mid"),
    voices.Voice("en-us", "f3", "female", "en", 175, "normal", 50, "mid"),
    voices.Voice("en-gb", "m4", "male", "en", 175, "normal", 50, "mid"),
    voices.Voice("en-gb-scotland", "Annie", "female", "en", 175, "normal", 50, "mid"),
)
NATURAL = tuple((e, v) for pairs in speakers.NATURAL_VOICES.values() for e, v in pairs)


def whisper_folder(dest: str) -> str:
    """A faster-whisper model folder (model.bin, config.json, tokenizer.json, vocabulary.txt) of pinned files."""
    files = (
        assets.WHISPER_TINY_EN_CT2,
        assets.WHISPER_TINY_EN_CT2_CONFIG,
        assets.WHISPER_TINY_EN_TOKENIZER,
        assets.WHISPER_TINY_EN_CT2_VOCABULARY,
    )
    for f, path in zip(files, assets.fetch_all(files)):
        os.symlink(path, os.path.join(dest, os.path.basename(f.member)))
    return dest


def pick_sentences(n: int) -> list[str]:
    """n test-split sentences, alternating books and everyday ones, spread evenly over each pool."""
    books = [s for s in texts.sentences("test") if 5 <= len(s.split()) <= 16]
    everyday = list(texts.everyday("test"))
    out = []
    for i in range(n):
        pool = books if i % 2 == 0 else everyday
        out.append(pool[(i // 2) * len(pool) // ((n + 1) // 2)])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=16, help="sentences per voice (default: 16)")
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 CPU threads (default: 2)")
    args = parser.parse_args()
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        print("needs faster-whisper: pip install faster-whisper==1.2.1", file=sys.stderr)
        return 2

    sentences = pick_sentences(args.sentences)
    tmp = tempfile.mkdtemp(prefix="auralm-voice-wer-")
    try:
        model = WhisperModel(whisper_folder(tmp), device="cpu", compute_type="int8", cpu_threads=args.threads)
        rows = []
        voices_to_run = [(f"{e}+{v}", NaturalVoice(e, v, "male", 1.0, 1.0), False) for e, v in NATURAL]
        voices_to_run += [(f"{e}+{v} perturbed", (e, v), True) for e, v in NATURAL]
        voices_to_run += [(f"espeak-ng {v.name}", v, False) for v in ESPEAK]
        for label, voice, perturbed in voices_to_run:
            refs, hyps, seconds, start = [], [], 0.0, time.perf_counter()
            for i, sentence in enumerate(sentences):
                rng = np.random.default_rng(i)
                speaker = voice
                if perturbed:  # the mixture's draw of pitch and tempo for this voice
                    speaker = NaturalVoice(*voice, "male", speakers.PITCH_FACTORS[int(rng.integers(6))],
                                           round(float(rng.uniform(*speakers.TEMPO_RANGE)), 2))  # fmt: skip
                audio = speech.trim(speakers.speak(sentence, speaker, rng))
                audio = 0.9 * audio / max(float(np.abs(audio).max()), 1e-9)
                seconds += audio.size / 16000
                segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False)
                refs.append(sentence)
                hyps.append(" ".join(s.text.strip() for s in segments))
            counts = wer_details(refs, hyps, "en")
            wall = time.perf_counter() - start
            rows.append((label, 100.0 * counts.rate, seconds, wall))
            print(
                f"{label:28s} WER {rows[-1][1]:5.1f}%  ({seconds:5.1f} s of audio, {wall:5.1f} s)", flush=True
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n| voice | WER % ({len(sentences)} sentences, Whisper tiny.en) | audio s |\n|---|---:|---:|")
    for label, w, seconds, _ in rows:
        print(f"| {label} | {w:.1f} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
