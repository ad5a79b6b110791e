"""One builder per task family: `build(split, rng) -> Clip`, a clip of 16 kHz int16 audio and its record.

A builder draws everything it needs from `rng` and from the split's held-out pools (speakers.py, voices.py,
texts.py), so a clip is a pure function of (split, seed). The record holds the task fields of the manifest schema
(auralm.data.manifest); the world driver adds id, audios and duration.

Who speaks: English speech in ASR, translation, word timestamps, voice chat and mixed audio comes from the
mixture of engines (speakers.py: piper, hibari, flite, Festival, espeak-ng). Two tasks keep espeak-ng alone: language
identification, because the natural voices speak only English and would give the language away, and speaker
attributes, whose labels (gender, rate and pitch bands) are espeak-ng settings. German, French and Spanish are
espeak-ng's.
"""

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from auralm.synth import augment, phrases, signals, speakers, speech, texts
from auralm.synth.signals import SAMPLE_RATE, seconds
from auralm.synth.speakers import Speaker, sample_speaker
from auralm.synth.voices import LANGUAGE_NAMES, sample_voice


@dataclasses.dataclass
class Clip:
    """One generated example before it is written."""

    audio: np.ndarray  # (N,) int16 at 16 kHz
    record: dict  # task fields of the manifest record (no id/audios/duration yet)


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _pad(audio: np.ndarray, rng: np.random.Generator, lead=(0.1, 0.5), tail=(0.1, 0.5)) -> np.ndarray:
    """`audio` with random digital silence before and after (seconds drawn from the two ranges)."""
    before = np.zeros(seconds(rng.uniform(*lead)), np.float32)
    after = np.zeros(seconds(rng.uniform(*tail)), np.float32)
    return np.concatenate([before, audio.astype(np.float32), after])


def _background(audio: np.ndarray, rng: np.random.Generator, rms: float = 0.002) -> np.ndarray:
    """A faint noise floor (about -54 dBFS), so non-speech clips are not digitally silent between events."""
    color = _choice(rng, ("white", "pink", "brown"))
    return (audio + rms * signals.noise(audio.size, color, rng)).astype(np.float32)


def _gain(audio: np.ndarray, rng: np.random.Generator, low_db: float = -10.0) -> np.ndarray:
    """Random gain between `low_db` and 0 dB on signals whose peak is about 1, without renormalising."""
    return augment.to_int16(audio * 0.9 * 10 ** (rng.uniform(low_db, 0.0) / 20))


def _speech_clip(text: str, speaker: Speaker, rng: np.random.Generator, **allowed) -> tuple[np.ndarray, dict]:
    """Synthesized, padded, augmented and levelled speech; `allowed` switches augmentation steps off."""
    audio = _pad(speech.trim(speakers.speak(text, speaker, rng)), rng)
    audio, info = augment.augment(audio, rng, **allowed)
    return augment.finalize(audio, rng), info


# ---------------------------------------------------------------------------------------------------------
# Speech tasks.

ASR_SUBSETS = ("numbers", "home", "broad", "everyday", "wide", "numbers_de", "numbers_fr", "numbers_es")
# "wide" takes 6/10 of the ASR clips (world version 4: 3/7; version 5, whose pool grew by a quarter: 6/10); the
# others keep their version-3 shares of the other 4/10, so their clip counts stay (ASR's weight went from 4 to 7 to
# 10, world.TASK_WEIGHTS).
_V3_WEIGHTS = (0.15, 0.2, 0.25, 0.2, 0.0667, 0.0667, 0.0666)  # numbers, home, broad, everyday, numbers_de/fr/es
ASR_WEIGHTS = (*(w * 4 / 10 for w in _V3_WEIGHTS[:4]), 6 / 10, *(w * 4 / 10 for w in _V3_WEIGHTS[4:]))


def build_asr(split: str, rng: np.random.Generator) -> Clip:
    """Speech recognition: English numbers, home-assistant requests, broad (book), everyday and wide-vocabulary
    sentences; de/fr/es numbers."""
    subset = ASR_SUBSETS[int(rng.choice(len(ASR_SUBSETS), p=ASR_WEIGHTS))]
    record: dict = {"task": "asr", "subset": subset}
    if subset.startswith("numbers"):
        language = subset.split("_")[1] if "_" in subset else "en"
        n = _choice(rng, texts.numbers(split))
        text = texts.number_words(n, language)
        record.update(text_itn=str(n), itn=bool(rng.random() < 0.5))
    elif subset == "home":
        language, text = "en", _choice(rng, texts.commands(split)).en
    elif subset == "everyday":
        language, text = "en", _choice(rng, texts.everyday(split))
    elif subset == "wide":
        language, text = "en", _choice(rng, texts.wide(split))
    else:
        language, text = "en", _choice(rng, texts.sentences(split))
    speaker = sample_speaker(rng, split) if language == "en" else sample_voice(rng, split, language)
    audio, info = _speech_clip(text, speaker, rng)
    record.update(language=language, text=text, augment=info, **speakers.fields(speaker))
    return Clip(audio, record)


def build_s2tt(split: str, rng: np.random.Generator) -> Clip:
    """Speech translation: English numbers and home-assistant requests into German, French or Spanish text."""
    target = _choice(rng, ("de", "fr", "es"))
    if rng.random() < 0.3:
        n = _choice(rng, texts.numbers(split))
        subset, text, translation = "numbers", texts.number_words(n), texts.number_words(n, target)
    else:
        command = _choice(rng, texts.commands(split))
        subset, text, translation = "home", command.en, command.text(target)
    speaker = sample_speaker(rng, split)
    audio, info = _speech_clip(text, speaker, rng)
    record = {"task": "s2tt", "subset": subset, "language": "en", "target_language": target, "text": text,
              "translation": translation, "augment": info, **speakers.fields(speaker)}  # fmt: skip
    return Clip(audio, record)


def build_srwt(split: str, rng: np.random.Generator) -> Clip:
    """Word timestamps: an English utterance spoken word by word with known silences between the words.

    Every engine can do this: each word is spoken alone and trimmed, so the times are exact for any voice. Only
    the level changes afterwards (no noise, room or speed), so the word spans stay exact.
    """
    source = rng.random()
    if source < 0.4:
        text = _choice(rng, texts.commands(split)).en
    elif source < 0.7:
        text = _choice(rng, texts.everyday(split))
    else:
        text = _choice(rng, _short_sentences(split))
    words = texts.words_of(text)
    speaker = sample_speaker(rng, split)
    gaps = [round(float(g), 3) for g in rng.uniform(0.05, 0.4, size=len(words) - 1)]
    sounds = [speech.trim(a) for a in speakers.speak_many(words, speaker, rng)]
    audio, timings = speech.join_words(
        words,
        sounds,
        gaps,
        lead=round(float(rng.uniform(0.1, 0.5)), 3),
        tail=round(float(rng.uniform(0.1, 0.5)), 3),
    )
    record = {
        "task": "srwt", "language": "en", "text": text,
        "words": [{"word": t.word, "start": t.start, "end": t.end} for t in timings],
        **speakers.fields(speaker),
    }  # fmt: skip
    return Clip(augment.finalize(audio, rng), record)


@functools.cache
def _short_sentences(split: str) -> tuple[str, ...]:
    """The book sentences of `split` with at most 12 words (word timestamps)."""
    return tuple(s for s in texts.sentences(split) if len(s.split()) <= 12)


def build_lid(split: str, rng: np.random.Generator) -> Clip:
    """Language identification: numbers or home-assistant requests in English, German, French or Spanish
    (espeak-ng voices in every language, so the voice does not give the language away)."""
    language = _choice(rng, texts.LANGUAGES)
    if rng.random() < 0.4:
        text = texts.number_words(_choice(rng, texts.numbers(split)), language)
    else:
        text = _choice(rng, texts.commands(split)).text(language)
    voice = sample_voice(rng, split, language)
    audio, info = _speech_clip(text, voice, rng)
    record = {"task": "lid", "language": language, "language_name": LANGUAGE_NAMES[language], "text": text,
              "augment": info, **speakers.fields(voice)}  # fmt: skip
    return Clip(audio, record)


VOICE_QUALITIES = ("modal", "whisper", "creaky")


def build_speaker(split: str, rng: np.random.Generator) -> Clip:
    """Speaker attributes: gender, speaking-rate band, pitch band and voice quality of an English utterance.

    espeak-ng voices only: the labels are its settings. No speed change (it would move rate and pitch); whisper
    and creak are transforms of the voiced speech.
    """
    text = (
        _choice(rng, texts.commands(split)).en if rng.random() < 0.5 else _choice(rng, texts.sentences(split))
    )
    voice = sample_voice(rng, split, "en")
    quality = VOICE_QUALITIES[int(rng.choice(3, p=(0.5, 0.25, 0.25)))]
    audio = speech.trim(speech.synthesize(text, voice))
    if quality == "whisper":
        audio = speech.whisper(audio, rng)
    elif quality == "creaky":
        audio = speech.creak(audio, rng)
    audio, info = augment.augment(_pad(audio, rng), rng, speed=False)
    record = {
        "task": "speaker", "language": "en", "text": text, "rate": voice.rate_band, "rate_wpm": voice.rate,
        "pitch": voice.pitch_band, "pitch_value": voice.pitch, "quality": quality, "augment": info,
        **speakers.fields(voice),
    }  # fmt: skip
    return Clip(augment.finalize(audio, rng), record)


# ---------------------------------------------------------------------------------------------------------
# Sound and music tasks.

SOUND_LABELS = tuple(label for label in signals.EVENT_CLASSES if label != "silence")


def _sequence(
    parts: list[np.ndarray], rng: np.random.Generator, gap=(0.2, 0.8)
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate sounds with random gaps; returns the audio and each part's (start, end) in seconds."""
    pieces, spans, cursor = [], [], 0
    for i, part in enumerate(parts):
        spans.append((cursor / SAMPLE_RATE, (cursor + part.size) / SAMPLE_RATE))
        pieces.append(part)
        cursor += part.size
        if i < len(parts) - 1:
            pieces.append(np.zeros(seconds(rng.uniform(*gap)), np.float32))
            cursor += pieces[-1].size
    return np.concatenate(pieces), spans


def _shift(spans: list[tuple[float, float]], offset: float) -> list[tuple[float, float]]:
    return [(round(a + offset, 4), round(b + offset, 4)) for a, b in spans]


def build_sound_event(split: str, rng: np.random.Generator) -> Clip:
    """Sound-event classification: one event class (beeps come as a sequence of 1-4) in a faint noise floor."""
    label = _choice(rng, signals.EVENT_CLASSES)
    sound, details = signals.event(label, rng)
    lead = round(float(rng.uniform(0.2, 1.0)), 3)
    audio = _pad(sound, rng, lead=(lead, lead), tail=(0.2, 1.0))
    start = seconds(lead) / SAMPLE_RATE
    record = {
        "task": "sound_event", "language": None, "label": label, "label_name": signals.EVENT_NAMES[label],
        "events": [{"label": label, "start": round(start, 4), "end": round(start + sound.size / SAMPLE_RATE, 4)}],
        **details,
    }  # fmt: skip
    if "beeps" in record:
        record["beeps"] = [
            {**b, "start": round(b["start"] + start, 4), "end": round(b["end"] + start, 4)}
            for b in record["beeps"]
        ]
    return Clip(_gain(_background(audio, rng), rng), record)


def build_scene(split: str, rng: np.random.Generator) -> Clip:
    """Acoustic-scene classification: 4-8 s of one scene."""
    label = _choice(rng, signals.SCENE_CLASSES)
    audio = signals.scene(label, float(rng.uniform(4.0, 8.0)), rng)
    record = {"task": "scene", "language": None, "label": label, "label_name": signals.SCENE_NAMES[label]}
    return Clip(augment.finalize(audio, rng), record)


def build_caption(split: str, rng: np.random.Generator) -> Clip:
    """Audio captioning: 1-4 events in sequence, or two overlapping, with three phrasings of the caption."""
    count = int(rng.integers(1, 5))
    labels = [_choice(rng, SOUND_LABELS) for _ in range(count)]
    sounds, beep_counts = [], []
    for label in labels:
        sound, details = signals.event(label, rng)
        sounds.append(sound)
        beep_counts.append(details.get("count", 1))
    overlap = count == 2 and rng.random() < 0.4
    if overlap:
        first, second = sounds
        offset = int(rng.integers(0, max(first.size // 2, 1)))
        audio = np.zeros(max(first.size, offset + second.size), np.float32)
        audio[: first.size] += first
        audio[offset : offset + second.size] += 0.8 * second
        spans = [
            (0.0, first.size / SAMPLE_RATE),
            (offset / SAMPLE_RATE, (offset + second.size) / SAMPLE_RATE),
        ]
    else:
        audio, spans = _sequence(sounds, rng)
    lead = round(float(rng.uniform(0.1, 0.5)), 3)
    audio = _pad(audio, rng, lead=(lead, lead))
    variant = int(rng.integers(3))
    described = [phrases.event_phrase(lab, variant, n) for lab, n in zip(labels, beep_counts)]
    first_style = int(rng.integers(3))
    captions = [phrases.caption(described, overlap, (first_style + k) % 3) for k in range(3)]
    record = {
        "task": "caption", "language": None, "captions": captions, "overlap": overlap,
        "events": [{"label": lab, "start": a, "end": b} for lab, (a, b) in zip(labels, _shift(spans, seconds(lead) / SAMPLE_RATE))],
    }  # fmt: skip
    return Clip(_gain(_background(audio / (np.abs(audio).max() + 1e-12), rng), rng), record)


AQA_TYPES = ("count", "order", "presence", "comparison", "duration")


def build_aqa(split: str, rng: np.random.Generator) -> Clip:
    """Audio question answering over simple sounds: counting, order, presence, comparison and duration."""
    qtype = _choice(rng, AQA_TYPES)
    events: list[dict] = []
    if qtype == "count":
        count = int(rng.integers(1, 7))
        audio, marks = signals.beep_sequence(rng, count)
        question = _choice(
            rng, ("How many beeps are there?", "How many times does the beep sound?", "Count the beeps.")
        )
        answer = str(count)
        events = [{"label": "beep", "start": m["start"], "end": m["end"]} for m in marks]
    elif qtype == "order":
        labels = [str(x) for x in rng.choice(SOUND_LABELS, size=int(rng.integers(2, 4)), replace=False)]
        audio, spans = _sequence([signals.event(lab, rng)[0] for lab in labels], rng)
        i, j = sorted(rng.choice(len(labels), size=2, replace=False))
        a, b = (labels[i], labels[j]) if rng.random() < 0.5 else (labels[j], labels[i])
        question = f"Which comes first, the {signals.EVENT_NAMES[a]} or the {signals.EVENT_NAMES[b]}?"
        answer = signals.EVENT_NAMES[labels[i]]
        events = [{"label": lab, "start": s, "end": e} for lab, (s, e) in zip(labels, spans)]
    elif qtype == "presence":
        labels = [str(x) for x in rng.choice(SOUND_LABELS, size=int(rng.integers(1, 4)), replace=False)]
        audio, spans = _sequence([signals.event(lab, rng)[0] for lab in labels], rng)
        present = rng.random() < 0.5
        asked = (
            _choice(rng, labels)
            if present
            else _choice(rng, [lab for lab in SOUND_LABELS if lab not in labels])
        )
        question = f"Can you hear {phrases.event_phrase(asked, 0)}?"
        answer = "yes" if present else "no"
        events = [{"label": lab, "start": s, "end": e} for lab, (s, e) in zip(labels, spans)]
    elif qtype == "comparison":
        low = float(round(rng.uniform(400, 1200)))
        high = float(round(low * rng.uniform(1.3, 1.8)))
        higher_first = rng.random() < 0.5
        freqs = (high, low) if higher_first else (low, high)
        audio, spans = _sequence([signals.beep(rng, f, 0.3)[0] for f in freqs], rng, gap=(0.2, 0.5))
        question = "Which beep is higher, the first or the second?"
        answer = "first" if higher_first else "second"
        events = [{"label": "beep", "start": s, "end": e, "freq_hz": f} for (s, e), f in zip(spans, freqs)]
    else:
        duration = float(rng.choice(np.arange(0.5, 4.01, 0.5)))
        audio = signals.tone(float(round(rng.uniform(300, 1500))), duration, 0.8)
        question = "How long does the tone last, in seconds?"
        answer = f"{duration:g}"
        events = [{"label": "tone", "start": 0.0, "end": duration}]
    lead = round(float(rng.uniform(0.2, 0.6)), 3)
    audio = _pad(audio, rng, lead=(lead, lead))
    offset = seconds(lead) / SAMPLE_RATE
    events = [
        {**e, "start": round(e["start"] + offset, 4), "end": round(e["end"] + offset, 4)} for e in events
    ]
    record = {
        "task": "aqa",
        "language": None,
        "qtype": qtype,
        "question": question,
        "answer": answer,
        "events": events,
    }
    return Clip(_gain(_background(audio / (np.abs(audio).max() + 1e-12), rng), rng), record)


def _note_sound(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    instrument = _choice(rng, signals.INSTRUMENTS)
    midi = int(rng.integers(signals.MIDI_RANGE[0], signals.MIDI_RANGE[1] + 1))
    velocity = _choice(rng, tuple(signals.VELOCITIES))
    audio = signals.note(instrument, midi, velocity, float(rng.uniform(1.0, 2.0)), rng)
    sonic = list(signals.INSTRUMENT_QUALITIES[instrument])
    sonic.append({"soft": "dark", "medium": None, "loud": "bright"}[velocity])
    if rng.random() < 0.3:
        peak = np.abs(audio).max()
        audio = augment.reverb(audio, float(rng.uniform(0.6, 1.2)), 0.35, rng)
        audio *= peak / (np.abs(audio).max() + 1e-12)
        sonic.append("reverb")
    fields = {
        "instrument": instrument, "midi_pitch": midi, "note_name": signals.note_name(midi), "velocity": velocity,
        "midi_velocity": signals.VELOCITIES[velocity], "sonic": sorted(s for s in sonic if s),
    }  # fmt: skip
    return audio, fields


def build_note(split: str, rng: np.random.Generator) -> Clip:
    """Music-note analysis: instrument, pitch (MIDI 36-96 and its name) and loudness of one note.

    The clip keeps the note's own level (soft notes stay quiet), so loudness is audible.
    """
    audio, fields = _note_sound(rng)
    audio = _pad(audio, rng, lead=(0.05, 0.3), tail=(0.1, 0.3))
    return Clip(
        augment.to_int16(0.9 * _background(audio, rng, rms=0.0005)),
        {"task": "note", "language": None, **fields},
    )


# ---------------------------------------------------------------------------------------------------------
# Spoken instructions: voice chat and mixed audio (no text prompt; the question is in the audio).

VOICE_CHAT_KINDS = ("arithmetic", "home", "general")


def build_voice_chat(split: str, rng: np.random.Generator) -> Clip:
    """A spoken request answered without a text prompt: arithmetic (answer: the number), home-assistant
    requests (a brief reply) and general questions (answer None: the training recipe asks the LLM)."""
    kind = VOICE_CHAT_KINDS[int(rng.choice(3, p=(0.4, 0.4, 0.2)))]
    if kind == "arithmetic":
        a, op, b = _choice(rng, texts.arithmetic(split))
        template = _choice(rng, texts.ARITHMETIC_TEMPLATES)
        question = template.format(a=texts.number_words(a), op=op, b=texts.number_words(b))
        answer: str | None = str(texts.arithmetic_answer(a, op, b))
    elif kind == "home":
        command = _choice(rng, texts.commands(split))
        question, answer = command.en, command.reply
    else:
        question, answer = _choice(rng, texts.general_questions(split)), None
    speaker = sample_speaker(rng, split)
    audio, info = _speech_clip(question, speaker, rng, speed=False)
    record = {"task": "voice_chat", "language": "en", "kind": kind, "text_question": question, "answer": answer,
              "augment": info, **speakers.fields(speaker)}  # fmt: skip
    return Clip(audio, record)


MIXED_KINDS = ("count", "instrument", "note_name", "loudness", "event")


def build_mixed(split: str, rng: np.random.Generator) -> Clip:
    """A sound or a note, then a spoken question about it, answered without a text prompt."""
    kind = _choice(rng, MIXED_KINDS)
    fields: dict = {}
    if kind == "count":
        count = int(rng.integers(1, 6))
        sound, _ = signals.beep_sequence(rng, count)
        sound *= 0.5
        question, answer = "How many beeps did you hear?", str(count)
        fields = {"label": "beep", "count": count}
    elif kind == "event":
        label = _choice(rng, SOUND_LABELS)
        sound, _ = signals.event(label, rng)
        sound = 0.5 * sound / (np.abs(sound).max() + 1e-12)
        question, answer = "What was that sound?", signals.EVENT_NAMES[label]
        fields = {"label": label}
    else:
        sound, fields = _note_sound(rng)
        sound *= 0.6  # keeps the velocity level: a loud note peaks at 0.6, a soft one at 0.15
        question, answer = {
            "instrument": ("What instrument was that?", fields["instrument"]),
            "note_name": ("What note was that?", fields["note_name"]),
            "loudness": ("Was that note soft, medium or loud?", fields["velocity"]),
        }[kind]
    speaker = sample_speaker(rng, split, plain=True)
    spoken = speech.trim(speakers.speak(question, speaker, rng))
    spoken = 0.5 * spoken / (np.abs(spoken).max() + 1e-12)
    lead = round(float(rng.uniform(0.1, 0.4)), 3)
    gap = np.zeros(seconds(rng.uniform(0.3, 0.7)), np.float32)
    before = _pad(sound, rng, lead=(lead, lead), tail=(0.0, 0.0))
    audio = np.concatenate([before, gap, spoken, np.zeros(seconds(rng.uniform(0.1, 0.4)), np.float32)])
    record = {
        "task": "mixed", "language": "en", "kind": kind, "text_question": question, "answer": answer,
        "question_start": round((before.size + gap.size) / SAMPLE_RATE, 4), "sound": fields, **speakers.fields(speaker),
    }  # fmt: skip
    return Clip(augment.to_int16(_background(audio, rng, rms=0.0005)), record)


BUILDERS: dict[str, Callable[[str, np.random.Generator], Clip]] = {
    "asr": build_asr,
    "s2tt": build_s2tt,
    "srwt": build_srwt,
    "lid": build_lid,
    "speaker": build_speaker,
    "sound_event": build_sound_event,
    "scene": build_scene,
    "caption": build_caption,
    "aqa": build_aqa,
    "note": build_note,
    "voice_chat": build_voice_chat,
    "mixed": build_mixed,
}
