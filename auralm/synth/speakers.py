"""Who speaks the world's English: a mixture of voice engines, whole voices held out per split, and the
perturbations that turn each natural voice into many speakers.

Engines: a piper neural voice (`piper.py`), hibari's Kokoro-distilled voice (`hibari.py`), CMU flite
(`flite.py`), Festival (`festival.py`) and espeak-ng (`voices.py`, `speech.py`). A voice is an engine plus one of
its voices, written `engine+voice` in manifests (`piper+joe`, `hibari+heart`, `flite+kal16`, `festival+ked`;
espeak-ng voices keep their `accent+variant` names).

The partition holds whole voices out: dev and test hear voices that train never hears, whatever the perturbation.
flite's kal, kal16 and Festival's kal are one speaker (Kevin Lenzo's diphones), so all three are train voices;
piper and hibari have one voice each, which train keeps (a pitch-shifted joe in test would still be joe). dev gets
Festival's ked and test flite's rms, an ARCTIC speaker who is not in the real-speech eval; flite's awb and slt and
Festival's slt are the eval's speakers and are refused by their modules. espeak-ng keeps its own rule (variants
partitioned by split, see voices.py). hibari's heart is the one female natural voice; the others are male, and
espeak-ng adds more women.

A natural voice becomes a speaker by a pitch-and-formant factor and a tempo, both drawn from the clip's generator:
the engine speaks `tempo * pitch` times slower and the result is played `pitch` times faster (resampling), so the
voice's pitch and formants move together by `pitch` (a larger or smaller vocal tract) at the drawn tempo. Room,
noise and the telephone band come after, from `augment.augment`, as for every voice.
"""

import dataclasses
import functools
import subprocess

import numpy as np

from auralm.checkpoint import assets
from auralm.synth import augment, festival, flite, hibari, piper, speech, voices
from auralm.synth.voices import Voice

ENGINES = ("piper", "hibari", "flite", "festival", "espeak")
# Natural voices (engine, voice) of each split; no dev or test voice is ever heard in train.
NATURAL_VOICES = {
    "train": (("piper", "joe"), ("hibari", "heart"), ("flite", "kal"), ("flite", "kal16"), ("festival", "kal")),
    "dev": (("festival", "ked"),),
    "test": (("flite", "rms"),),
}
# How often each engine speaks an English clip, per split. Train hears mostly natural voices; dev and test
# have one natural voice each, so they weigh it against the held-out espeak-ng speakers.
ENGINE_WEIGHTS = {
    "train": {"piper": 0.3, "hibari": 0.25, "flite": 0.15, "festival": 0.15, "espeak": 0.15},
    "dev": {"festival": 0.6, "espeak": 0.4},
    "test": {"flite": 0.6, "espeak": 0.4},
}
FEMALE_VOICES = {("hibari", "heart")}  # the other natural voices are male
# Pitch-and-formant factors: multiples of 1/20 because augment.change_speed resamples by n/20.
PITCH_FACTORS = (0.9, 0.95, 1.0, 1.05, 1.1, 1.15)
TEMPO_RANGE = (0.85, 1.2)  # duration factor of the utterance (> 1 slower)


def _check_partition() -> None:
    """The tables above are consistent, and none of the eval's ARCTIC speakers is in them (check_voice raises)."""
    seen: dict[tuple[str, str], str] = {}
    for split, pairs in NATURAL_VOICES.items():
        for engine, voice in pairs:
            if engine == "flite":
                flite.check_voice(voice)
            elif engine == "festival":
                festival.check_voice(voice)
            assert seen.setdefault((engine, voice), split) == split, f"{engine}+{voice} in two splits"
        assert set(ENGINE_WEIGHTS[split]) == {e for e, _ in pairs} | {"espeak"}, split
        assert abs(sum(ENGINE_WEIGHTS[split].values()) - 1.0) < 1e-9, split


_check_partition()


@dataclasses.dataclass(frozen=True)
class NaturalVoice:
    """One natural voice of piper, hibari, flite or Festival, perturbed into a speaker."""

    engine: str  # "piper", "hibari", "flite" or "festival"
    voice: str  # the engine's voice, e.g. "kal16"
    gender: str  # "female" for hibari's heart, "male" for the others (FEMALE_VOICES)
    pitch: float  # pitch-and-formant factor (1 = the voice as shipped), one of PITCH_FACTORS
    tempo: float  # duration factor (> 1 slower)

    @property
    def name(self) -> str:
        """The voice id written in manifests, e.g. "flite+kal16" (the perturbation is in separate fields)."""
        return f"{self.engine}+{self.voice}"


Speaker = Voice | NaturalVoice


def split_voices(split: str) -> tuple[str, ...]:
    """The natural voice ids (`engine+voice`) of `split`."""
    if split not in NATURAL_VOICES:
        raise ValueError(f"unknown split {split!r}; expected one of {voices.SPLITS}")
    return tuple(f"{e}+{v}" for e, v in NATURAL_VOICES[split])


def sample_speaker(rng: np.random.Generator, split: str, plain: bool = False) -> Speaker:
    """An English speaker of `split`: an engine by ENGINE_WEIGHTS, then a voice and its perturbation.

    plain=True gives an easy-to-understand speaker: espeak-ng at normal rate and mid pitch, or a natural voice
    as shipped (pitch 1, tempo 1).
    """
    split_voices(split)
    weights = ENGINE_WEIGHTS[split]
    names = sorted(weights)
    engine = names[int(rng.choice(len(names), p=[weights[n] for n in names]))]
    if engine == "espeak":
        return voices.sample_plain_voice(rng, split) if plain else voices.sample_voice(rng, split, "en")
    options = [v for e, v in NATURAL_VOICES[split] if e == engine]
    voice = options[int(rng.integers(len(options)))]
    gender = "female" if (engine, voice) in FEMALE_VOICES else "male"
    if plain:
        return NaturalVoice(engine, voice, gender, 1.0, 1.0)
    pitch = PITCH_FACTORS[int(rng.integers(len(PITCH_FACTORS)))]
    tempo = round(float(rng.uniform(*TEMPO_RANGE)), 2)
    return NaturalVoice(engine, voice, gender, pitch, tempo)


def speak_many(texts: list[str], speaker: Speaker, rng: np.random.Generator) -> list[np.ndarray]:
    """Each text spoken by `speaker`: float32 at 16 kHz, with the engine's own silences (see speech.trim).

    piper and hibari draw their noise from `rng`; the other engines are deterministic.
    """
    if isinstance(speaker, Voice):
        return [speech.synthesize(t, speaker) for t in texts]
    stretch = speaker.tempo * speaker.pitch  # the resampling below shortens by 1 / pitch
    if speaker.engine == "piper":
        raw = [piper.synthesize(t, rng, length_scale=stretch) for t in texts]
    elif speaker.engine == "hibari":
        raw = [hibari.synthesize(t, rng, length_scale=stretch) for t in texts]
    elif speaker.engine == "flite":
        raw = [flite.synthesize(t, speaker.voice, stretch) for t in texts]
    elif speaker.engine == "festival":
        raw = festival.synthesize_many(texts, speaker.voice, stretch)
    else:
        raise ValueError(f"unknown engine {speaker.engine!r}; expected one of {ENGINES}")
    return [augment.change_speed(a, speaker.pitch) for a in raw]


def speak(text: str, speaker: Speaker, rng: np.random.Generator) -> np.ndarray:
    """`text` spoken by `speaker` (see `speak_many`)."""
    return speak_many([text], speaker, rng)[0]


def fields(speaker: Speaker) -> dict:
    """The manifest fields that describe the speaker of a clip."""
    if isinstance(speaker, Voice):
        return {"voice": speaker.name, "gender": speaker.gender, "engine": "espeak"}
    return {"voice": speaker.name, "gender": speaker.gender, "engine": speaker.engine,
            "voice_pitch": speaker.pitch, "voice_tempo": speaker.tempo}  # fmt: skip


@functools.cache
def check_installed() -> None:
    """Raise a clear error when an engine or voice the world uses is missing; fetch the piper voice once here,
    before worker processes would each download it, and check the hibari voice's file."""
    voices.check_installed()
    try:
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=True).stdout.split()
    except (FileNotFoundError, subprocess.CalledProcessError) as err:
        raise RuntimeError(
            "flite is not installed; run scripts/system-deps.sh (apt-get install flite)"
        ) from err
    missing = sorted(set(flite.VOICES) - set(listed))
    if missing:
        raise RuntimeError(f"flite lacks the voices {missing}; install Debian's flite 2.2 or newer")
    for voice in festival.VOICES:  # also fails when festival itself is missing
        try:
            festival.synthesize("a", voice)
        except festival.FestivalError as err:
            raise RuntimeError(
                f"festival cannot speak with {voice!r}; run scripts/system-deps.sh (apt-get install festival "
                "festvox-kallpc16k festvox-kdlpc16k)"
            ) from err
    try:  # imported here only to say what is missing; piper's session is built in each worker
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"the piper voice needs {err.name}: pip install 'auralm[voices]'") from err
    assets.fetch_all([assets.PIPER_JOE_ONNX, assets.PIPER_JOE_CONFIG])
    try:  # loads the voice (version and sha256 checked) in this process; forked workers inherit it
        hibari.synthesize("a", np.random.default_rng(0))
    except hibari.HibariError as err:
        raise RuntimeError(str(err)) from err
