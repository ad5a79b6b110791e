"""The synthetic world's voice engines (piper, hibari, flite, Festival), the mixture and its held-out voices, the
speaker perturbation, the telephone band and the sentence pools. A handful of short clips each."""

import re
import shutil

import numpy as np
import pytest

from auralm.eval.real_speech import CLIPS
from auralm.synth import augment, everyday, festival, flite, speakers, speech, texts, voices
from auralm.synth.signals import SAMPLE_RATE

SENTENCE = "Turn on the lights in the kitchen, please."

needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite is not installed (scripts/system-deps.sh installs it)"
)
needs_festival = pytest.mark.skipif(
    shutil.which("festival") is None, reason="festival is not installed (scripts/system-deps.sh installs it)"
)


@pytest.fixture(scope="module")
def piper():
    """The piper module once its runtime and pinned voice are there; a clear skip otherwise."""
    pytest.importorskip(
        "onnxruntime", reason="the piper voice needs onnxruntime: pip install 'auralm[voices]'"
    )
    pytest.importorskip("onnx", reason="the piper voice needs onnx: pip install 'auralm[voices]'")
    from auralm.checkpoint import assets
    from auralm.synth import piper

    try:
        assets.fetch_all([assets.PIPER_JOE_ONNX, assets.PIPER_JOE_CONFIG])
    except assets.AssetUnavailableError as err:
        pytest.skip(f"the pinned piper voice cannot be fetched: {err}")
    return piper


@pytest.fixture(scope="module")
def hibari():
    """The hibari module once hibari-tts is installed; a clear skip otherwise."""
    pytest.importorskip("hibari", reason="the hibari voice needs hibari-tts: pip install 'auralm[voices]'")
    from auralm.synth import hibari

    return hibari


def plausible(audio: np.ndarray, words: int) -> None:
    """16 kHz float speech of a plausible length for `words` words (1.5-6 words per second), not silent."""
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
    seconds = speech.trim(audio).size / SAMPLE_RATE
    assert words / 6 < seconds < words / 1.5, seconds
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_piper_speaks_deterministically_from_the_rng(piper):
    a = piper.synthesize(SENTENCE, np.random.default_rng(0))
    plausible(a, 8)
    assert np.array_equal(a, piper.synthesize(SENTENCE, np.random.default_rng(0)))
    other = piper.synthesize(SENTENCE, np.random.default_rng(1))
    assert not np.array_equal(a, other)  # the noise is the rng's
    slow = piper.synthesize(SENTENCE, np.random.default_rng(0), length_scale=1.4)
    assert speech.trim(slow).size > 1.15 * speech.trim(a).size  # not exactly 1.4: the noise draws differ
    # piper's ids: BOS, PAD, then phoneme + PAD each, then EOS; a clause's mark follows its phonemes.
    table = piper.voice_config()["phoneme_id_map"]
    assert piper.phoneme_ids("a") == [*table["^"], *table["_"], *table["a"], *table["_"], *table["$"]]
    assert (
        piper.phonemize("Hello, Mr. Smith. Bye!")[0].endswith(".") and len(piper.phonemize("Hi. Bye!")) == 2
    )


@needs_flite
@pytest.mark.parametrize("voice", flite.VOICES)
def test_flite_voices(voice):
    a = flite.synthesize(SENTENCE, voice)
    plausible(a, 8)
    assert np.array_equal(a, flite.synthesize(SENTENCE, voice))
    slow = flite.synthesize(SENTENCE, voice, duration_stretch=1.4)
    assert speech.trim(slow).size > 1.25 * speech.trim(a).size


@needs_festival
def test_festival_voices_in_one_process():
    for voice in festival.VOICES:
        short, long = festival.synthesize_many(["Hello.", SENTENCE], voice)
        plausible(long, 8)
        assert speech.trim(short).size < speech.trim(long).size
        assert np.array_equal(long, festival.synthesize(SENTENCE, voice))
    quoted = festival.synthesize('He said "yes" and left\\.', "kal")  # Scheme string quoting
    plausible(quoted, 5)


def test_the_real_speech_evals_speakers_are_refused():
    for voice in ("awb", "awb_time", "slt"):  # checked before flite runs, so this needs no flite
        with pytest.raises(ValueError, match="real-speech eval"):
            flite.synthesize("hello", voice)
    for voice in ("cmu_us_slt_arctic_hts", "slt", "cmu_us_awb_cg"):
        with pytest.raises(ValueError, match="real-speech eval"):
            festival.synthesize("hello", voice)
    used = {v for pairs in speakers.NATURAL_VOICES.values() for _, v in pairs}
    assert not used & flite.FORBIDDEN and not any(bad in v for v in used for bad in festival.FORBIDDEN)


def test_hibari_speaks_deterministically_from_the_rng_in_a_womans_pitch(hibari):
    a = hibari.synthesize(SENTENCE, np.random.default_rng(0))
    plausible(a, 8)
    assert np.array_equal(a, hibari.synthesize(SENTENCE, np.random.default_rng(0)))
    assert not np.array_equal(a, hibari.synthesize(SENTENCE, np.random.default_rng(1)))  # the noise is the rng's
    slow = hibari.synthesize(SENTENCE, np.random.default_rng(0), length_scale=1.4)
    assert speech.trim(slow).size / speech.trim(a).size == pytest.approx(1.4, rel=0.1)
    assert 165 < f0(a) < 300  # Hz: the world's one female natural voice
    two = hibari.synthesize("Hello there. Good bye!", np.random.default_rng(0))
    hibari.SENTENCE_SILENCE, pause = 0.0, hibari.SENTENCE_SILENCE
    try:
        joined = hibari.synthesize("Hello there. Good bye!", np.random.default_rng(0))
    finally:
        hibari.SENTENCE_SILENCE = pause
    assert two.size - joined.size == round(pause * SAMPLE_RATE)  # the pause between the two sentences
    with pytest.raises(ValueError, match="empty"):
        hibari.synthesize("  ", np.random.default_rng(0))


def test_hibari_speakers_are_drawn_as_women_and_spoken_through_the_mixture(hibari):
    draw = [speakers.sample_speaker(np.random.default_rng(s), "train") for s in range(200)]
    heart = [s for s in draw if isinstance(s, speakers.NaturalVoice) and s.engine == "hibari"]
    assert heart and all(s.gender == "female" and s.name == "hibari+heart" for s in heart)
    assert all(s.gender == "male" for s in draw if isinstance(s, speakers.NaturalVoice) and s.engine != "hibari")
    speaker = speakers.NaturalVoice("hibari", "heart", "female", 1.1, 1.0)
    audio = speakers.speak(SENTENCE, speaker, np.random.default_rng(0))
    plain = hibari.synthesize(SENTENCE, np.random.default_rng(0), length_scale=1.1)  # spoken 1.1x slower ...
    assert np.array_equal(audio, augment.change_speed(plain, 1.1))  # ... and played 1.1x faster


def test_a_changed_hibari_voice_file_is_refused(hibari, monkeypatch):
    monkeypatch.setattr(hibari, "VOICE_SHA256", "0" * 64)
    hibari._voice.cache_clear()
    try:
        with pytest.raises(hibari.HibariError, match="not the pinned hibari voice"):
            hibari.synthesize(SENTENCE, np.random.default_rng(0))
        monkeypatch.setattr(hibari, "VERSION", "9.9")
        hibari._voice.cache_clear()
        with pytest.raises(hibari.HibariError, match="hibari-tts 0.2.1 is installed"):
            hibari.synthesize(SENTENCE, np.random.default_rng(0))
    finally:
        hibari._voice.cache_clear()


def test_held_out_voices_never_reach_train():
    owner = {}
    for split in voices.SPLITS:
        for name in speakers.split_voices(split):
            assert owner.setdefault(name, split) == split
    assert speakers.split_voices("test") and speakers.split_voices("dev")
    heard = {split: set() for split in voices.SPLITS}
    for split in voices.SPLITS:
        rng = np.random.default_rng(0)
        for _ in range(300):
            heard[split].add(speakers.sample_speaker(rng, split).name)
    assert not (heard["train"] & heard["test"]) and not (heard["train"] & heard["dev"])
    assert not (heard["dev"] & heard["test"])
    assert set(speakers.split_voices("train")) <= heard["train"]  # every engine of the mixture is drawn
    assert set(speakers.split_voices("test")) <= heard["test"]
    # espeak-ng keeps its rule: held-out variants
    espeak = {
        s: {n.split("+")[1] for n in heard[s] if "+" in n and n.split("+")[0].startswith("en")} for s in heard
    }
    assert espeak["test"] and not (espeak["train"] & espeak["test"])


def test_speaker_draws_are_reproducible_and_plain_speakers_unperturbed():
    draw = [speakers.sample_speaker(np.random.default_rng(s), "train") for s in range(40)]
    assert draw == [speakers.sample_speaker(np.random.default_rng(s), "train") for s in range(40)]
    natural = [s for s in draw if isinstance(s, speakers.NaturalVoice)]
    assert {s.pitch for s in natural} > {1.0} and all(0.85 <= s.tempo <= 1.2 for s in natural)
    plain = [speakers.sample_speaker(np.random.default_rng(s), "test", plain=True) for s in range(20)]
    assert all(s.pitch == 1.0 and s.tempo == 1.0 for s in plain if isinstance(s, speakers.NaturalVoice))
    fields = speakers.fields(speakers.NaturalVoice("flite", "rms", "male", 1.1, 0.9))
    assert fields == {"voice": "flite+rms", "gender": "male", "engine": "flite", "voice_pitch": 1.1,
                      "voice_tempo": 0.9}  # fmt: skip


def f0(audio: np.ndarray) -> float:
    """Median autocorrelation pitch (60-400 Hz) over the loud 40 ms frames."""
    frame = 640
    out = []
    for i in range(0, audio.size - frame, frame // 2):
        s = audio[i : i + frame].astype(np.float64)
        if np.sqrt(np.mean(s**2)) < 0.2 * np.abs(audio).max() / 3:
            continue
        c = np.correlate(s - s.mean(), s - s.mean(), "full")[frame - 1 :]
        lag = 40 + int(np.argmax(c[40:267]))
        out.append(SAMPLE_RATE / lag)
    return float(np.median(out))


def kal16(pitch: float, tempo: float) -> np.ndarray:
    speaker = speakers.NaturalVoice("flite", "kal16", "male", pitch, tempo)
    return speech.trim(speakers.speak(SENTENCE, speaker, np.random.default_rng(0)))


@needs_flite
def test_perturbation_moves_pitch_at_the_drawn_tempo():
    plain, high, slow = kal16(1.0, 1.0), kal16(1.15, 1.0), kal16(1.0, 1.2)
    assert high.size == pytest.approx(plain.size, rel=0.08)  # the pitch shift keeps the tempo
    assert f0(high) / f0(plain) == pytest.approx(1.15, rel=0.06)
    assert slow.size / plain.size == pytest.approx(1.2, rel=0.08)


def test_telephone_band():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SAMPLE_RATE).astype(np.float32)
    y = augment.telephone(x)
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    hz = np.fft.rfftfreq(y.size, 1 / SAMPLE_RATE)
    inside = spectrum[(hz > 600) & (hz < 3000)].mean()
    assert spectrum[hz < 100].mean() < 0.01 * inside and spectrum[hz > 5000].mean() < 0.01 * inside


def test_sentence_pools_grow_and_stay_held_out():
    pool = everyday.all_everyday()
    assert len(pool) > 60_000 and len(set(pool)) == len(pool)
    assert len(texts.all_sentences()) + len(pool) > 15 * 3_811 and everyday.all_everyday() == pool
    parts = {s: set(texts.everyday(s)) for s in voices.SPLITS}
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["dev"])
    assert 0.07 < len(parts["test"]) / len(pool) < 0.13
    for sentence in pool[:: len(pool) // 50]:  # speakable: ASCII words, no digits, one final mark
        assert sentence[0].isupper() and sentence[-1] in ".?" and sentence.isascii()
        assert not any(c.isdigit() for c in sentence)
    # No transcript of the real-speech eval is anywhere in what the world says.
    spoken = {s.lower().strip(".?!") for s in (*pool, *texts.all_sentences())}
    assert not {clip.reference.lower().strip(".?!") for clip in CLIPS} & spoken


def test_the_wide_pool_brings_new_words_and_stays_held_out():
    wide = texts.all_wide()
    assert len(wide) > 2_000 and len(set(wide)) == len(wide)
    parts = {s: set(texts.wide(s)) for s in voices.SPLITS}
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["dev"])
    assert 0.07 < len(parts["test"]) / len(wide) < 0.13
    for sentence in wide:  # speakable: ASCII words, no digits, one final mark, at most 20 words
        assert sentence[0].isupper() and sentence[-1] in ".?!" and sentence.isascii() and len(sentence.split()) <= 20
        assert not any(c.isdigit() for c in sentence)

    def words(text):
        return re.findall(r"[a-z']+", text.lower())

    old = {w for s in (*texts.all_sentences(), *everyday.all_everyday()) for w in words(s)}
    new = {w for s in wide for w in words(s)} - old
    assert len(new) > 2_000  # words the book and everyday pools never say
    # The second pass (world version 5) brings names and nations, which the first one's lower-case list left out.
    names = {w for s in wide for w in re.findall(r"(?<=\s)[A-Z][a-z]{2,}", s)}
    assert len(names) > 300
    # No run of 5 words of a real-speech eval transcript is said (the eval stays held out).
    held_out = {tuple(ws[i : i + 5]) for c in CLIPS for ws in [words(c.reference)] for i in range(len(ws) - 4)}
    assert not any(tuple(ws[i : i + 5]) in held_out for s in wide for ws in [words(s)] for i in range(len(ws) - 4))

