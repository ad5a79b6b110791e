"""Unit tests of the synthetic world's parts: signals, speech, augmentation, texts, voices and task builders."""

import itertools

import numpy as np
import pytest

from auralm.synth import augment, signals, speech, tasks, texts, voices
from auralm.synth.signals import SAMPLE_RATE


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), n=1 << 18))
    return float(np.fft.rfftfreq(1 << 18, 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def runs(x: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample spans where x is non-zero."""
    nz = np.concatenate([[0], (x != 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(nz))
    return list(zip(edges[::2], edges[1::2]))


def test_beep_is_a_sine_in_range():
    for seed in range(20):
        audio, info = signals.beep(rng(seed))
        assert 0.1 <= audio.size / SAMPLE_RATE <= 0.3
        assert 400 <= info["freq_hz"] <= 2000
        assert abs(dominant_hz(audio) - info["freq_hz"]) < 2.0


def test_beep_sequence_gaps_and_count():
    for seed in range(10):
        audio, marks = signals.beep_sequence(rng(seed), 4)
        spans = runs(audio)
        assert len(spans) == len(marks) == 4
        gaps = [(b[0] - a[1]) / SAMPLE_RATE for a, b in itertools.pairwise(spans)]
        assert all(0.099 <= g <= 0.501 for g in gaps), gaps
        for (s, e), m in zip(spans, marks):
            assert abs(s / SAMPLE_RATE - m["start"]) < 2e-3 and abs(e / SAMPLE_RATE - m["end"]) < 2e-3


@pytest.mark.parametrize("color,slope_db", [("white", 0.0), ("pink", -10.0), ("brown", -20.0)])
def test_noise_colors_have_their_spectral_slope(color, slope_db):
    x = signals.noise(SAMPLE_RATE * 4, color, rng(1))
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    band = lambda lo, hi: power[(f >= lo) & (f < hi)].mean()
    measured = 10 * np.log10(band(1800, 2200) / band(180, 220))  # one decade
    assert abs(measured - slope_db) < 1.5
    assert abs(np.sqrt(np.mean(x**2)) - 1.0) < 1e-3


def test_every_event_scene_and_instrument_sounds():
    for label in signals.EVENT_CLASSES:
        audio, _ = signals.event(label, rng(2))
        assert audio.dtype == np.float32 and np.isfinite(audio).all()
        assert (np.abs(audio).max() > 0.1) == (label != "silence"), label
    for label in signals.SCENE_CLASSES:
        audio = signals.scene(label, 3.0, rng(3))
        assert audio.size == 3 * SAMPLE_RATE and np.isfinite(audio).all() and np.abs(audio).max() > 0.5
    with pytest.raises(ValueError, match="unknown sound event"):
        signals.event("dog", rng())


def lowest_strong_partial(x: np.ndarray) -> float:
    """Frequency of the lowest spectral peak that reaches 30% of the strongest one: the fundamental for
    these timbres, whose partials fall with their number."""
    n = 1 << 18
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), n=n))
    spectrum[: int(30 * n / SAMPLE_RATE)] = 0.0
    first = int(np.argmax(spectrum > 0.3 * spectrum.max()))
    window = int(15 * n / SAMPLE_RATE)  # the peak lies within 15 Hz of where the lobe crosses 30%
    return (first + int(np.argmax(spectrum[first : first + window]))) * SAMPLE_RATE / n


@pytest.mark.parametrize("instrument", sorted(signals.INSTRUMENTS))
def test_note_pitch_matches_midi(instrument):
    for midi in (36, 48, 60, 69, 84, 96):
        audio = signals.note(instrument, midi, "medium", 1.0, rng(midi))
        f0 = signals.midi_to_hz(midi)
        # Within a quarter semitone: the synthesis adds a few cents of tuning error and vibrato on purpose.
        cents = 1200 * np.log2(lowest_strong_partial(audio) / f0)
        assert abs(cents) < 25, (instrument, midi, cents)


def test_note_names_velocity_and_range():
    assert signals.note_name(60) == "C4" and signals.note_name(61) == "C#4" and signals.note_name(36) == "C2"
    soft = signals.note("organ", 60, "soft", 1.0, rng())
    loud = signals.note("organ", 60, "loud", 1.0, rng())
    assert np.abs(loud).max() > 3 * np.abs(soft).max()
    with pytest.raises(ValueError, match="outside"):
        signals.note("organ", 100, "soft", 1.0, rng())
    assert (
        len(signals.INSTRUMENTS) >= 6 and len(signals.EVENT_CLASSES) >= 10 and len(signals.SCENE_CLASSES) >= 6
    )


def test_add_noise_reaches_the_requested_snr():
    clean = signals.tone(440.0, 1.0, 0.5)
    for snr in augment.SNRS_DB:
        noisy = augment.add_noise(clean, snr, "pink", rng(4))
        noise = noisy.astype(np.float64) - clean
        active = np.abs(clean) > 0.02 * np.abs(clean).max()
        measured = 10 * np.log10(np.mean(clean[active].astype(np.float64) ** 2) / np.mean(noise**2))
        assert abs(measured - snr) < 0.5


def test_speed_and_reverb():
    x = signals.tone(500.0, 1.0)
    fast = augment.change_speed(x, 1.1)
    assert abs(fast.size - x.size / 1.1) <= 2
    assert abs(dominant_hz(fast) - 550.0) < 3.0
    wet = augment.reverb(x, 0.5, 0.4, rng())
    assert wet.size == x.size and np.isfinite(wet).all() and not np.allclose(wet, x)
    assert augment.to_int16(np.array([2.0, -2.0, 0.5])).tolist() == [32767, -32768, 16384]


VOICE = voices.Voice("en-us", "m1", "male", "en", 170, "normal", 50, "mid")


def test_espeak_synthesis_is_16k_and_deterministic():
    a = speech.synthesize("turn on the lights", VOICE)
    b = speech.synthesize("turn on the lights", VOICE)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert 0.6 < a.size / SAMPLE_RATE < 3.0 and np.abs(a).max() > 0.1
    slow = speech.synthesize(
        "turn on the lights", voices.Voice("en-us", "m1", "male", "en", 120, "slow", 50, "mid")
    )
    assert speech.trim(slow).size > 1.2 * speech.trim(a).size
    with pytest.raises(ValueError):
        speech.synthesize("  ", VOICE)


def test_word_by_word_timings_are_exact():
    words = ["set", "a", "timer"]
    audio, timings = speech.synthesize_words(words, VOICE, gaps=[0.2, 0.1], lead=0.3, tail=0.25)
    assert [t.word for t in timings] == words
    assert timings[0].start == pytest.approx(0.3)
    assert timings[1].start - timings[0].end == pytest.approx(0.2)
    assert timings[2].start - timings[1].end == pytest.approx(0.1)
    assert audio.size / SAMPLE_RATE - timings[-1].end == pytest.approx(0.25)
    # Every sample outside the word spans is digital silence; each span starts and ends on sound.
    inside = np.zeros(audio.size, bool)
    for t in timings:
        s, e = round(t.start * SAMPLE_RATE), round(t.end * SAMPLE_RATE)
        inside[s:e] = True
        assert audio[s] != 0 and audio[e - 1] != 0
    assert not audio[~inside].any()


def periodicity(x: np.ndarray) -> float:
    """Mean normalised autocorrelation peak at 60-400 Hz lags over loud frames (1 = perfectly periodic)."""
    peaks = []
    for i in range(0, x.size - 1024, 512):
        s = x[i : i + 1024].astype(np.float64)
        if np.sqrt(np.mean(s**2)) < 0.1 * np.abs(x).max() / 3:
            continue
        s = s - s.mean()
        c = np.correlate(s, s, "full")[1023:]
        peaks.append(c[40:267].max() / c[0])
    return float(np.mean(peaks))


def test_whisper_removes_voicing_and_creak_gates():
    voiced = speech.trim(speech.synthesize("a lovely morning over the valley", VOICE))
    whispered = speech.whisper(voiced, rng())
    assert whispered.size == voiced.size and np.isfinite(whispered).all()
    assert periodicity(voiced) > 0.45 and periodicity(whispered) < 0.7 * periodicity(voiced)
    creaky = speech.creak(voiced, rng())
    assert creaky.size == voiced.size and not np.allclose(creaky, voiced)


def test_holdout_partitions_are_disjoint_and_stable():
    for pool in (texts.numbers, texts.commands, texts.sentences, texts.arithmetic, texts.general_questions):
        parts = [set(pool(s)) for s in voices.SPLITS]
        assert all(parts), pool
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    total = len(texts.NUMBER_RANGE)
    assert 0.07 < len(texts.numbers("test")) / total < 0.13
    assert texts.holdout_split("number:1234") == texts.holdout_split("number:1234")


def test_texts_content():
    assert texts.number_words(4207) == "four thousand two hundred and seven"
    assert texts.number_words(21, "de") == "einundzwanzig"
    assert len(texts.all_commands()) > 200
    vocabulary = {w.lower() for s in texts.all_sentences() for w in texts.words_of(s)}
    assert len(vocabulary) >= 5000
    assert texts.words_of("Turn on the lights, please!") == ["Turn", "on", "the", "lights", "please"]
    assert all(texts.arithmetic_answer(a, op, b) >= 0 for a, op, b in texts.arithmetic("train"))


def test_voices_are_held_out_by_speaker():
    voices.check_installed()
    sets = {s: {v for g in voices.VARIANTS[s].values() for v in g} for s in voices.SPLITS}
    assert (
        not (sets["train"] & sets["dev"])
        and not (sets["train"] & sets["test"])
        and not (sets["dev"] & sets["test"])
    )
    for split in voices.SPLITS:
        assert voices.VARIANTS[split]["female"] and voices.VARIANTS[split]["male"]
        v = voices.sample_voice(rng(), split, "fr")
        assert v.variant in sets[split] and v.accent in voices.ACCENTS["fr"]


@pytest.mark.parametrize("task", sorted(tasks.BUILDERS))
def test_each_builder_gives_int16_audio_and_a_record(task, request):
    if task in ("asr", "s2tt", "srwt", "voice_chat", "mixed"):  # English from the mixture of engines
        request.getfixturevalue("voice_engines")
    clip = tasks.BUILDERS[task]("dev", rng(7))
    assert clip.audio.dtype == np.int16 and clip.audio.ndim == 1
    assert 0.3 < clip.audio.size / SAMPLE_RATE < 30.0
    assert clip.record["task"] == task
    again = tasks.BUILDERS[task]("dev", rng(7))
    assert np.array_equal(clip.audio, again.audio) and clip.record == again.record
