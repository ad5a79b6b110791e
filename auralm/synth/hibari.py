"""The world's female natural voice: hibari-tts's "heart" (American English), run with onnxruntime.

`hibari-tts==0.2.1` (PyPI, Apache-2.0) ships one voice in its wheel: a 7.9 MB ONNX model distilled from
Kokoro-82M's af_heart voice (Kokoro: Apache-2.0), a misaki-style G2P (misaki's lexicons and a small ONNX net for
unknown words, no spaCy) and a DSP vocoder; its other voices are downloads, which auralm never uses. The package is
pinned in the `voices` extra; here its version is checked and the model file against its sha256, and that file is
the one loaded, so every world hears the same voice.

Measured on this project's 2-core machine: Whisper tiny.en reads the voice at 1.2% WER, as shipped and perturbed
(`python scripts/voice_wer.py`, 16 test sentences; piper joe 4.7% / 7.0%, flite rms 11.1% / 9.4%); it runs ~77x
faster than real time on one core. The other natural voices are all male. The CTC head (tiny.en's top 2 blocks
tuned) trained 2 more epochs on 3,000 world-v2 clips + 3,000 of this voice reads the real-speech eval at 37.2%
greedy-CTC WER and a 740-word pseudo-labelled real-speech dev set at 55.7%; the same epochs on 6,000 world-v2 clips:
43.4% / 58.9% (40.7% / 58.6% before either).

Determinism: the vocoder draws its noise from the numpy generator it is given; `synthesize` passes the clip's
generator, so a clip is a function of (text, settings, rng), whatever the worker or the order of jobs.
"""

import functools

import numpy as np

from auralm.synth import speech

VERSION = "0.2.1"  # hibari-tts: its G2P, lexicons and vocoder shape the audio as much as the model file
VOICE = "heart"
VOICE_SHA256 = "5f70741d4e900f4e85d0037498736cc1b3e1b9a63a13546a5da1e63abf4fccd8"  # hibari/assets/hibari.onnx
VOICE_RATE = 24_000  # hibari's output rate
SENTENCE_SILENCE = 0.2  # seconds between the pieces hibari speaks at once (sentences; clauses of very long ones)


class HibariError(RuntimeError):
    """The hibari voice could not be loaded or run."""


@functools.cache
def _voice():
    """One hibari instance per process (single-threaded: the world runs one process per core)."""
    try:
        import hibari
        from hibari.voices import sha256_of, voice_path
    except ImportError as err:
        raise HibariError("the hibari voice needs hibari-tts: pip install 'auralm[voices]'") from err
    if hibari.__version__ != VERSION:
        raise HibariError(f"hibari-tts {hibari.__version__} is installed; the world's voice is {VERSION}: "
                          f"pip install hibari-tts=={VERSION}")
    try:
        path = voice_path(VOICE, download_missing=False)
        digest = sha256_of(path)
    except OSError as err:
        raise HibariError(f"the hibari voice file is missing ({err}); reinstall hibari-tts=={VERSION}") from err
    if digest != VOICE_SHA256:
        raise HibariError(f"{path} is not the pinned hibari voice (sha256 {digest}); reinstall hibari-tts=={VERSION}")
    return hibari.Hibari(voice=VOICE, model=path, threads=1)


def synthesize(text: str, rng: np.random.Generator, length_scale: float = 1.0) -> np.ndarray:
    """Speak `text`; float32 samples at 16 kHz, peak 0.9, sentences joined by SENTENCE_SILENCE.

    length_scale > 1 speaks slower; the vocoder's noise is drawn from `rng`."""
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    voice = _voice()
    pieces = []
    for phonemes in voice.phonemize(text):
        try:
            audio = voice.from_ids(voice.ids(phonemes), 1.0 / length_scale, rng)  # (samples,) at 24 kHz
        except Exception as err:  # onnxruntime raises its own exception types
            raise HibariError(f"the hibari voice failed on {text!r}: {err}") from err
        pieces.append(np.asarray(audio, np.float32).reshape(-1))
    if not pieces:
        raise HibariError(f"the hibari voice found nothing to say in {text!r}")
    return speech.join_sentences(pieces, VOICE_RATE, SENTENCE_SILENCE)
