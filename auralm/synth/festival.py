"""Speech from the Festival speech synthesis system (Debian `festival`, free X11-style licence) at 16 kHz.

Voices: `kal` (`festvox-kallpc16k`: kal_diphone, Kevin Lenzo, the speaker of flite's kal) and `ked`
(`festvox-kdlpc16k`: ked_diphone, an American English male speaker); both CSTR/CMU free licences. The HTS voice
of `festvox-us-slt-hts` (and any other slt or awb voice) is refused: those are the CMU ARCTIC speakers of the
real-speech eval (auralm/eval/real_speech.py), which must stay unseen in training.

One festival process speaks a whole batch of texts (`synthesize_many`): starting festival costs 0.3-1 s, so a
word-by-word utterance is one process, not one per word.
"""

import os
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from auralm.audio.geometry import SAMPLE_RATE

VOICES = {"kal": "kal_diphone", "ked": "ked_diphone"}  # auralm's name -> festival's voice
# Name parts of festival voices built from the real-speech eval's CMU ARCTIC speakers: never used.
FORBIDDEN = ("slt", "awb")
assert not any(bad in name for bad in FORBIDDEN for pair in VOICES.items() for name in pair)


class FestivalError(RuntimeError):
    """festival is missing, lacks a voice, or failed."""


def check_voice(voice: str) -> None:
    """Raise ValueError for a voice auralm does not use (the eval's speakers above all)."""
    if any(bad in voice for bad in FORBIDDEN):
        raise ValueError(
            f"festival voice {voice!r} is a CMU ARCTIC speaker of the real-speech eval and is never used "
            f"for training data; use one of {sorted(VOICES)}"
        )
    if voice not in VOICES:
        raise ValueError(f"unknown festival voice {voice!r}; expected one of {sorted(VOICES)}")


def _quote(text: str) -> str:
    """`text` as a Scheme string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize_many(texts: list[str], voice: str, duration_stretch: float = 1.0) -> list[np.ndarray]:
    """Speak each text with festival `voice` in one festival process; float32 arrays at 16 kHz in [-1, 1].

    duration_stretch > 1 speaks slower.
    """
    check_voice(voice)
    if not texts or any(not t.strip() for t in texts):
        raise ValueError("cannot synthesize empty text")
    with tempfile.TemporaryDirectory(prefix="auralm-festival-") as tmp:
        paths = [os.path.join(tmp, f"{i}.wav") for i in range(len(texts))]
        script = [f"(voice_{VOICES[voice]})", f"(Parameter.set 'Duration_Stretch {duration_stretch:.4f})"]
        script += [
            f"(utt.save.wave (utt.synth (Utterance Text {_quote(t)})) {_quote(p)} 'riff)"
            for t, p in zip(texts, paths)
        ]
        scm = os.path.join(tmp, "speak.scm")
        with open(scm, "w", encoding="utf-8") as fh:
            fh.write("\n".join(script) + "\n")
        try:
            proc = subprocess.run(["festival", "--batch", scm], capture_output=True, check=False)
        except FileNotFoundError as err:
            raise FestivalError(
                "festival is not installed; install it with `apt-get install festival`"
            ) from err
        missing = [p for p in paths if not os.path.isfile(p)]
        if proc.returncode != 0 or missing:
            err = (proc.stderr + proc.stdout).decode(errors="replace")
            raise FestivalError(
                f"festival failed for voice {voice!r} (is festvox-{voice}* installed?): {err}"
            )
        out = []
        for p in paths:
            audio, rate = sf.read(p, dtype="float32")
            if rate != SAMPLE_RATE or audio.size == 0:
                raise FestivalError(f"festival voice {voice!r} gave {audio.size} samples at {rate} Hz")
            out.append(audio)
    return out


def synthesize(text: str, voice: str, duration_stretch: float = 1.0) -> np.ndarray:
    """Speak one text (see `synthesize_many`)."""
    return synthesize_many([text], voice, duration_stretch)[0]
