"""Speech from espeak-ng at 16 kHz: whole utterances, word-by-word utterances with exact word times (for any
engine's recordings of single words), and the voice-quality transforms (whisper, creak) that work on any voice.

espeak-ng writes 22,050 Hz WAV to stdout; it is resampled to 16 kHz with a polyphase filter
(16000/22050 = 320/441). Output is deterministic: the same text and settings give the same samples.
"""

import dataclasses
import io
import subprocess
from fractions import Fraction

import numpy as np
import scipy.linalg
import scipy.signal
import soundfile as sf

from auralm.audio.geometry import SAMPLE_RATE
from auralm.synth.voices import Voice

ESPEAK_RATE = 22_050
_UP, _DOWN = 320, 441  # SAMPLE_RATE / ESPEAK_RATE in lowest terms
assert SAMPLE_RATE * _DOWN == ESPEAK_RATE * _UP
# A sample belongs to a word when it is louder than this fraction (-60 dB) of the word's peak; it cuts the
# digital silence espeak-ng puts around every utterance and keeps weak onsets such as the h of "his".
TRIM_FRACTION = 0.001


class SpeechError(RuntimeError):
    """espeak-ng failed or produced no audio."""


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with `voice`; returns float32 samples at 16 kHz in [-1, 1], with espeak-ng's own silences."""
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    cmd = ["espeak-ng", "-v", voice.name, "-s", str(voice.rate), "-p", str(voice.pitch), "--stdout", text]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False)
    except FileNotFoundError as err:
        raise SpeechError("espeak-ng is not installed; install it with `apt-get install espeak-ng`") from err
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        raise SpeechError(
            f"espeak-ng failed for voice {voice.name!r}: {proc.stderr.decode(errors='replace')}"
        )
    wav, rate = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    assert rate == ESPEAK_RATE, rate
    return scipy.signal.resample_poly(wav, _UP, _DOWN).astype(np.float32)


def join_sentences(pieces: list[np.ndarray], rate: int, silence: float) -> np.ndarray:
    """Sentences a neural voice spoke at `rate` Hz, joined by `silence` seconds, resampled to 16 kHz and scaled to a
    peak of 0.9; float32 (the piper and hibari voices)."""
    gap = np.zeros(round(silence * rate), np.float32)
    joined = np.concatenate([x for i, piece in enumerate(pieces) for x in ((gap, piece) if i else (piece,))])
    step = Fraction(SAMPLE_RATE, rate)  # resample_poly's up / down in lowest terms
    wav = scipy.signal.resample_poly(joined.astype(np.float64), step.numerator, step.denominator)
    peak = np.abs(wav).max()
    return (wav * (0.9 / peak if peak > 0 else 0.0)).astype(np.float32)


def trim(audio: np.ndarray) -> np.ndarray:
    """`audio` without its leading and trailing near-silence (see TRIM_FRACTION)."""
    loud = np.flatnonzero(np.abs(audio) > TRIM_FRACTION * np.abs(audio).max())
    if loud.size == 0:
        raise SpeechError("synthesized audio is silent")
    return audio[loud[0] : loud[-1] + 1]


@dataclasses.dataclass(frozen=True)
class WordTiming:
    """One word of a word-by-word utterance."""

    word: str  # the word as written in the transcript
    start: float  # first sample of the word, in seconds
    end: float  # one past the last sample of the word, in seconds


def synthesize_words(
    words: list[str], voice: Voice, gaps: list[float], lead: float, tail: float
) -> tuple[np.ndarray, list[WordTiming]]:
    """Speak each word alone with espeak-ng, trim it, and join the words with exact silences (`join_words`)."""
    return join_words(words, [trim(synthesize(word, voice)) for word in words], gaps, lead, tail)


def join_words(
    words: list[str], sounds: list[np.ndarray], gaps: list[float], lead: float, tail: float
) -> tuple[np.ndarray, list[WordTiming]]:
    """Join the trimmed recordings of single words with exact digital silences, from any voice engine.

    `gaps[i]` is the silence in seconds between word i and word i+1 (len(words) - 1 values); `lead` and
    `tail` pad the start and the end. Word times are exact to the sample: every sample inside a word span
    belongs to that word's recording, every sample between spans is zero.
    """
    if len(gaps) != len(words) - 1:
        raise ValueError(f"need {len(words) - 1} gaps for {len(words)} words, got {len(gaps)}")
    assert len(sounds) == len(words), (len(sounds), len(words))
    pieces = [np.zeros(round(lead * SAMPLE_RATE), np.float32)]
    timings = []
    cursor = pieces[0].size
    for i, (word, sound) in enumerate(zip(words, sounds)):
        timings.append(WordTiming(word, cursor / SAMPLE_RATE, (cursor + sound.size) / SAMPLE_RATE))
        pieces.append(sound.astype(np.float32))
        cursor += sound.size
        pause = gaps[i] if i < len(gaps) else tail
        pieces.append(np.zeros(round(pause * SAMPLE_RATE), np.float32))
        cursor += pieces[-1].size
    return np.concatenate(pieces), timings


def whisper(audio: np.ndarray, rng: np.random.Generator, order: int = 16) -> np.ndarray:
    """Whispered version of voiced speech: per 32 ms frame, keep the LPC spectral envelope and replace the
    excitation (the glottal pulses) by white noise, which is what whispering does."""
    frame, hop = 512, 256
    n = audio.size
    padded = np.concatenate([np.zeros(frame, np.float64), audio.astype(np.float64), np.zeros(frame)])
    window = scipy.signal.get_window("hann", frame)  # periodic Hann: 50% overlaps sum to 1
    out = np.zeros_like(padded)
    noise = rng.standard_normal(padded.size)
    for start in range(0, padded.size - frame + 1, hop):
        seg = padded[start : start + frame] * window
        r = np.correlate(seg, seg, "full")[frame - 1 : frame + order]  # autocorrelation lags 0..order
        if r[0] < 1e-8:
            continue
        r[0] *= 1.0 + 1e-6  # white-noise correction keeps the Toeplitz system well conditioned
        a = scipy.linalg.solve_toeplitz(r[:order], r[1 : order + 1])
        err = max(r[0] - a @ r[1 : order + 1], 1e-12)  # prediction error power of the frame
        excitation = noise[start : start + frame] * np.sqrt(err / frame)
        shaped = scipy.signal.lfilter([1.0], np.concatenate([[1.0], -a]), excitation)
        out[start : start + frame] += shaped * window
    out = out[frame : frame + n]
    return _match_peak(out, audio)


def creak(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Creaky (vocal fry) version: the signal is gated by slow, irregular glottal pulses (35-70 Hz with
    20% period jitter), each a sharp attack with a ~4 ms decay, the low and uneven pulsing heard as creak."""
    base = rng.uniform(35.0, 70.0)
    envelope = np.zeros(audio.size, np.float64)
    decay = np.exp(-np.arange(int(0.012 * SAMPLE_RATE)) / (0.004 * SAMPLE_RATE))
    t = 0
    while t < audio.size:
        piece = decay[: audio.size - t]
        envelope[t : t + piece.size] = np.maximum(envelope[t : t + piece.size], piece * rng.uniform(0.6, 1.0))
        t += int(SAMPLE_RATE / base * rng.uniform(0.8, 1.2))
    out = audio.astype(np.float64) * (0.15 + 0.85 * envelope)
    return _match_peak(out, audio)


def _match_peak(out: np.ndarray, reference: np.ndarray) -> np.ndarray:
    peak = np.abs(out).max()
    scale = np.abs(reference).max() / peak if peak > 0 else 0.0
    return (out * scale).astype(np.float32)
