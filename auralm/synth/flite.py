"""Speech from CMU flite (Debian package `flite`, BSD-style CMU licence) at 16 kHz.

flite ships five English voices. Two of them are never used here: `awb` (and its clock-only variant
`awb_time`) and `slt` are the CMU ARCTIC speakers whose recordings are in the real-speech eval
(auralm/eval/real_speech.py). Training on them would put the eval's speakers into training and the eval would no
longer measure unseen voices, so `synthesize` refuses them. The voices used: `kal` (diphone, 8 kHz), `kal16` (the
same speaker, 16 kHz) and `rms` (clustergen, an ARCTIC speaker who is not in the eval).
"""

import os
import subprocess
import tempfile

import numpy as np
import scipy.signal
import soundfile as sf

from auralm.audio.geometry import SAMPLE_RATE

VOICES = ("kal", "kal16", "rms")
# The CMU ARCTIC speakers of the real-speech eval: never synthesized (see the module doc).
FORBIDDEN = frozenset({"awb", "awb_time", "slt"})
assert not FORBIDDEN & set(VOICES)


class FliteError(RuntimeError):
    """flite is missing or failed."""


def check_voice(voice: str) -> None:
    """Raise ValueError for a voice auralm does not use (the eval's speakers above all)."""
    if voice in FORBIDDEN:
        raise ValueError(
            f"flite voice {voice!r} is a CMU ARCTIC speaker of the real-speech eval and is never used "
            f"for training data; use one of {VOICES}"
        )
    if voice not in VOICES:
        raise ValueError(f"unknown flite voice {voice!r}; expected one of {VOICES}")


def synthesize(text: str, voice: str, duration_stretch: float = 1.0) -> np.ndarray:
    """Speak `text` with flite `voice`; float32 at 16 kHz in [-1, 1]. duration_stretch > 1 speaks slower."""
    check_voice(voice)
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    with tempfile.TemporaryDirectory(prefix="auralm-flite-") as tmp:
        wav = os.path.join(tmp, "out.wav")
        cmd = [
            "flite",
            "-voice",
            voice,
            "--setf",
            f"duration_stretch={duration_stretch:.4f}",
            "-t",
            text,
            "-o",
            wav,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, check=False)
        except FileNotFoundError as err:
            raise FliteError("flite is not installed; install it with `apt-get install flite`") from err
        if proc.returncode != 0 or not os.path.isfile(wav):
            raise FliteError(f"flite failed for voice {voice!r}: {proc.stderr.decode(errors='replace')}")
        audio, rate = sf.read(wav, dtype="float64")
    if audio.size == 0:
        raise FliteError(f"flite produced no audio for {text!r}")
    if rate != SAMPLE_RATE:  # kal is 8 kHz
        g = np.gcd(rate, SAMPLE_RATE)
        audio = scipy.signal.resample_poly(audio, SAMPLE_RATE // g, rate // g)
    return audio.astype(np.float32)
