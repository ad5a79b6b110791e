"""Evaluation tasks: a manifest, a prompt (tags, natural language or ChatML), a scorer, and answer handling.

A `Task` turns each manifest record into a prompt for the model and, after generation, scores the answers
against references taken from the records. Two ways to write the prompt:

- `template=None`: the record renders through `auralm.text.formats.render(record, style)`, the same prompt the
  model was trained with; the ideal answer is the rendering's `answer`. The synthetic suite works this way.
- `template="..."`: a prompt with `{field}` slots filled from the record (plus `language_name` and
  `target_language_name`), placed after the audio placeholder(s) (or in the user turn for ChatML). The papers'
  evaluation prompts are written this way; the ideal answer is the record's `reference_field`.

Scorers (`SCORERS`) read the records and the post-processed answers and return `Scores`. Units follow the
papers: error rates and accuracies in percent, BLEU 0-100, CIDEr-D on the COCO tools' scale (Qwen-Audio's
Clotho 0.441), average timestamp shift in milliseconds.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from auralm.data.manifest import AUDIO_MARKER
from auralm.text import formats

STYLES = formats.STYLES

# Language names for prompt templates ("Translate the {language_name} speech into {target_language_name}:").
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "zh": "Chinese",
    "yue": "Cantonese", "ja": "Japanese", "ko": "Korean", "ru": "Russian", "pt": "Portuguese", "nl": "Dutch",
    "ar": "Arabic", "ca": "Catalan", "fa": "Persian", "tr": "Turkish", "sv": "Swedish", "mn": "Mongolian",
    "cy": "Welsh", "et": "Estonian", "id": "Indonesian", "lv": "Latvian", "sl": "Slovenian", "ta": "Tamil",
}  # fmt: skip


class TaskError(ValueError):
    """A task definition or a record that cannot be turned into a prompt or a reference."""


@dataclass(frozen=True)
class Scores:
    """What a scorer found: every number, and which one is the headline."""

    values: dict[str, float | int | None]  # metric name -> value (None when undefined, e.g. nothing matched)
    primary: str  # the headline metric, a key of `values`
    higher_is_better: bool  # direction of the headline metric

    @property
    def value(self) -> float | None:
        return self.values[self.primary]


@dataclass(frozen=True)
class Task:
    """One evaluation: which records, how to prompt, how to score."""

    name: str  # unique within a suite; names the predictions file and the report row
    manifest: str  # JSONL manifest, relative to the suite's data folder unless absolute
    scorer: str  # key of SCORERS
    style: str = "nl"  # prompt convention: "tags" (Qwen-Audio), "nl" (Qwen2-Audio) or "chatml" (chat models)
    template: str | None = None  # prompt text with {field} slots; None = the formats module's training prompt
    reference_field: str | None = None  # record field holding the reference; None = the rendered answer
    record_task: str | None = None  # keep only records whose `task` is this (a manifest may mix tasks)
    require: tuple[str, ...] = ()  # keep only records where these fields are present and not null
    max_new_tokens: int = 256  # generation budget (the papers use 256 for Qwen2-Audio, less for v1 keywords)
    keep_special_tokens: bool = False  # decode with special tokens (time tokens, note tags, language tags)
    answer_prefix: str = ""  # text the prompt forces that belongs to the answer (Qwen-Audio SRWT: "<|0.00|>")
    language: str | None = None  # scoring language for records without a `language` field
    judge_question_field: str | None = None  # record field with the question text, for an LLM judge

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise TaskError(f"task {self.name!r}: unknown style {self.style!r}; expected one of {STYLES}")
        if self.scorer not in SCORERS:
            raise TaskError(
                f"task {self.name!r}: unknown scorer {self.scorer!r}; expected one of {sorted(SCORERS)}"
            )
        if self.max_new_tokens < 1:
            raise TaskError(f"task {self.name!r}: max_new_tokens must be >= 1, got {self.max_new_tokens}")

    # ---- which records ------------------------------------------------------------------------------------
    def selects(self, record: dict) -> bool:
        """Whether this task evaluates `record`."""
        if self.record_task is not None and record.get("task") != self.record_task:
            return False
        return all(record.get(name) is not None for name in self.require)

    # ---- prompts and references ---------------------------------------------------------------------------
    def prompt(self, record: dict) -> str:
        """The model input text of `record`, with one audio placeholder per audio. Raises TaskError."""
        n_audios = len(record.get("audios", []))
        try:
            if self.template is None:
                if "messages" in record:  # a conversation: everything before the last assistant reply
                    return formats.render_chatml(record["messages"]).prompt
                return formats.render(record, self.style).prompt
            text = self.template.format_map(_template_fields(record))
        except (formats.FormatError, KeyError, IndexError) as err:
            detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise TaskError(f"task {self.name!r}, record {record.get('id')!r}: {detail}") from None
        if self.style == "chatml":
            turn = [{"role": "user", "content": AUDIO_MARKER * n_audios + text}]
            return "".join(s.text for s in formats.chatml_segments(turn)) + f"{formats.IM_START}assistant\n"
        return formats.AUDIO_PLACEHOLDER * n_audios + text

    def reference(self, record: dict) -> str:
        """The reference text of `record`: its `reference_field`, or the rendered training answer."""
        if self.reference_field is not None:
            value = record.get(self.reference_field)
            if not isinstance(value, str):
                raise TaskError(
                    f"task {self.name!r}, record {record.get('id')!r}: reference field "
                    f"{self.reference_field!r} is {type(value).__name__}, expected a string"
                )
            return value
        try:
            if "messages" in record:
                return formats.render_chatml(record["messages"]).answer
            return formats.render(record, self.style).answer
        except formats.FormatError as err:
            raise TaskError(f"task {self.name!r}, record {record.get('id')!r}: {err}") from None

    def ideal_output(self, record: dict) -> str:
        """What a perfect model generates for `record` (the reference, without what the prompt forces)."""
        return self.reference(record)

    def answer(self, generated: str) -> str:
        """The answer to score from the generated text: the forced prefix put back, whitespace stripped."""
        return (self.answer_prefix + generated).strip()

    def record_language(self, record: dict) -> str:
        language = record.get("language") or self.language
        if not language:
            raise TaskError(f"task {self.name!r}, record {record.get('id')!r}: no language to score in")
        return language

    def score(self, records: list[dict], answers: list[str]) -> Scores:
        """Score post-processed answers (one per record) with this task's scorer."""
        if len(records) != len(answers):
            raise TaskError(f"{len(records)} records but {len(answers)} answers")
        if not records:
            raise TaskError(f"task {self.name!r}: nothing to score")
        return SCORERS[self.scorer](self, records, answers)

    def describe(self) -> dict:
        """The task's settings as JSON-ready data (for reports)."""
        return dataclasses.asdict(self)


def _template_fields(record: dict) -> dict:
    fields = dict(record)
    for key, name in (("language", "language_name"), ("target_language", "target_language_name")):
        code = record.get(key)
        if isinstance(code, str):
            fields[name] = LANGUAGE_NAMES.get(code.split("-")[0].split("_")[0].lower(), code)
    return fields


# ------------------------------------------------------------------------------------------------------------
# Scorers. Each takes (task, records, answers) and returns Scores. Metrics come from auralm.eval.metrics, imported
# inside each scorer: it needs the [eval] extra (jiwer, sacrebleu), which defining and listing tasks (the runner,
# `auralm eval --help`) does not.


def score_wer(task: Task, records: list[dict], answers: list[str]) -> Scores:
    """Corpus WER (per character for zh/yue, as the papers), summed over languages; `wer_<lang>` per language."""
    from auralm.eval.metrics import wer_details

    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for record, answer in zip(records, answers):
        refs, hyps = groups[task.record_language(record)]
        refs.append(record["text"] if task.reference_field is None else task.reference(record))
        hyps.append(answer)
    values: dict[str, float | int | None] = {}
    errors = length = 0
    for language, (refs, hyps) in sorted(groups.items()):
        counts = wer_details(refs, hyps, language)
        errors, length = errors + counts.errors, length + counts.reference_length
        if len(groups) > 1:
            values[f"wer_{language}"] = 100.0 * counts.rate
    values = {
        "wer": 100.0 * errors / length if length else None,
        "errors": errors,
        "reference_units": length,
        **values,
    }
    return Scores(values, "wer", higher_is_better=False)


def score_bleu(task: Task, records: list[dict], answers: list[str]) -> Scores:
    """sacrebleu corpus BLEU with the target language's tokenizer, and `bleu_<target>` per target language.
    Targets that share a tokenizer are scored as one corpus; the headline is the mean over tokenizers (one
    corpus BLEU in the usual case of a single target language)."""
    from auralm.eval.metrics import bleu, bleu_tokenizer

    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for record, answer in zip(records, answers):
        target = record.get("target_language") or task.language
        if not target:
            raise TaskError(f"task {task.name!r}, record {record.get('id')!r}: no target_language")
        refs, hyps = groups[target]
        refs.append(task.reference(record) if task.reference_field else record["translation"])
        hyps.append(answer)
    by_tokenizer: dict[str, tuple[list[str], list[str], str]] = {}
    for target, (refs, hyps) in groups.items():
        all_refs, all_hyps, _ = by_tokenizer.setdefault(bleu_tokenizer(target), ([], [], target))
        all_refs += refs
        all_hyps += hyps
    corpus = [bleu(refs, hyps, target) for refs, hyps, target in by_tokenizer.values()]
    values: dict[str, float | int | None] = {"bleu": sum(corpus) / len(corpus)}
    if len(groups) > 1:
        values.update({f"bleu_{t}": bleu(refs, hyps, t) for t, (refs, hyps) in sorted(groups.items())})
    return Scores(values, "bleu", higher_is_better=True)


def score_accuracy(task: Task, records: list[dict], answers: list[str]) -> Scores:
    """Exact-match accuracy (the papers' keyword tasks); `yes_no_accuracy` too when references hold yes/no."""
    from auralm.eval.metrics import accuracy, yes_no_accuracy

    refs = [task.reference(r) for r in records]
    values: dict[str, float | int | None] = {"accuracy": 100.0 * accuracy(refs, answers)}
    if any(r.lower() in ("yes", "no") for r in refs):
        values["yes_no_accuracy"] = 100.0 * yes_no_accuracy(refs, answers)
    return Scores(values, "accuracy", higher_is_better=True)


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_TRAILING = re.compile(r"[\s.!?,;:]+$")


def answers_match(reference: str, answer: str) -> bool:
    """A chat answer is right when, for a numeric reference, the last number it states is that number, and
    otherwise when it equals the reference up to case, surrounding whitespace and final punctuation."""
    if NUMBER.fullmatch(reference.strip()):
        numbers = NUMBER.findall(answer.replace(",", ""))
        return bool(numbers) and float(numbers[-1]) == float(reference)
    return _TRAILING.sub("", answer.strip()).casefold() == _TRAILING.sub("", reference.strip()).casefold()


def score_answer_match(task: Task, records: list[dict], answers: list[str]) -> Scores:
    """Accuracy of spoken-question answers: number match for numeric references (arithmetic, counts), text
    match otherwise (see `answers_match`)."""
    refs = [task.reference(r) for r in records]
    hits = [answers_match(r, a) for r, a in zip(refs, answers)]
    numeric = [h for r, h in zip(refs, hits) if NUMBER.fullmatch(r.strip())]
    text = [h for r, h in zip(refs, hits) if not NUMBER.fullmatch(r.strip())]
    values: dict[str, float | int | None] = {
        "accuracy": 100.0 * sum(hits) / len(hits),
        "number_accuracy": 100.0 * sum(numeric) / len(numeric) if numeric else None,
        "text_accuracy": 100.0 * sum(text) / len(text) if text else None,
        "numeric_items": len(numeric),
    }
    return Scores(values, "accuracy", higher_is_better=True)


def score_cider(task: Task, records: list[dict], answers: list[str]) -> Scores:
    """CIDEr-D against every reference caption of each record (the `captions` field)."""
    from auralm.eval.metrics import cider

    return Scores({"cider": cider([r["captions"] for r in records], answers)}, "cider", higher_is_better=True)


def score_srwt(task: Task, records: list[dict], answers: list[str]) -> Scores:
    """Word timestamps: average absolute shift (ms) of the words aligned to the record's `words`, and the WER
    of the text without its time tokens. Answers without any time token count in `unparsed`."""
    from auralm.eval.metrics import aas_details, parse_timestamped_words, wer

    refs = [[(w["word"], float(w["start"]), float(w["end"])) for w in r["words"]] for r in records]
    parsed = [parse_timestamped_words(a) for a in answers]
    shift = aas_details(refs, [p or [] for p in parsed])
    languages = {task.record_language(r) for r in records}
    if len(languages) != 1:
        raise TaskError(f"task {task.name!r}: SRWT records mix languages {sorted(languages)}")
    values: dict[str, float | int | None] = {
        "aas_ms": 1000.0 * shift.average if shift.matched_words else None,
        "wer": 100.0 * wer([r["text"] for r in records], answers, languages.pop()),
        "matched_words": shift.matched_words,
        "unparsed": sum(p is None for p in parsed),
    }
    return Scores(values, "aas_ms", higher_is_better=False)


_NL_NOTE = re.compile(r"^\s*(?P<instrument>[^,]+),\s*[^,(]*\(MIDI (?P<pitch>\d+)\),\s*(?P<velocity>\w+)")


def _parse_note(answer: str):
    """A note answer in Qwen-Audio's tag format, or in the natural-language format of `auralm.text.formats`
    ("clarinet, E4 (MIDI 64), soft"; the loudness word maps to the synthetic world's MIDI velocity)."""
    from auralm.eval.metrics import NoteAnalysis, parse_note_analysis
    from auralm.synth.signals import VELOCITIES  # here, not at the top: synth.signals loads scipy (~2 s)

    tagged = parse_note_analysis(answer)
    found = _NL_NOTE.match(answer)
    if tagged.pitch is not None or tagged.instrument or not found:
        return tagged
    return NoteAnalysis(
        int(found["pitch"]), VELOCITIES.get(found["velocity"]), found["instrument"].strip(), frozenset()
    )


def score_note(task: Task, records: list[dict], answers: list[str]) -> Scores:
    """NSynth-style note analysis: pitch top-1 and chroma, velocity, instrument accuracy; the qualities' macro
    AP only for the tag convention (the natural-language answer does not name qualities)."""
    from auralm.eval.metrics import NSYNTH_QUALITIES, NoteAnalysis, note_metrics

    refs = [
        NoteAnalysis(
            int(r["midi_pitch"]), int(r["midi_velocity"]), r["instrument"],
            frozenset(r.get("sonic") or ()) & frozenset(NSYNTH_QUALITIES),
        )
        for r in records
    ]  # fmt: skip
    m = note_metrics(refs, [_parse_note(a) for a in answers])
    values: dict[str, float | int | None] = {
        "instrument_accuracy": 100.0 * m.instrument_accuracy,
        "pitch_accuracy": 100.0 * m.pitch_accuracy,
        "chroma_accuracy": 100.0 * m.chroma_accuracy,
        "velocity_accuracy": 100.0 * m.velocity_accuracy,
        "qualities_map": m.qualities_map if task.style == "tags" else None,
    }
    return Scores(values, "instrument_accuracy", higher_is_better=True)


SPEAKER_ATTRIBUTES = {
    "gender": "gender",
    "rate": "speaking rate",
    "pitch": "pitch",
    "quality": "voice quality",
}


def score_speaker(task: Task, records: list[dict], answers: list[str]) -> Scores:
    """Speaker attributes ("gender: male, speaking rate: fast, pitch: low, voice quality: whisper"): accuracy
    of each attribute, their mean (the headline) and the share of answers with all four right."""
    right = {field: 0 for field in SPEAKER_ATTRIBUTES}
    all_right = 0
    for record, answer in zip(records, answers):
        said = dict(re.findall(r"([a-z ]+):\s*([^,]+)", answer.lower()))
        said = {k.strip(): v.strip() for k, v in said.items()}
        hits = [said.get(label) == str(record[field]).lower() for field, label in SPEAKER_ATTRIBUTES.items()]
        for field, hit in zip(SPEAKER_ATTRIBUTES, hits):
            right[field] += hit
        all_right += all(hits)
    n = len(records)
    values: dict[str, float | int | None] = {f"{field}_accuracy": 100.0 * c / n for field, c in right.items()}
    values = {"accuracy": sum(values.values()) / len(values), **values, "all_correct": 100.0 * all_right / n}
    return Scores(values, "accuracy", higher_is_better=True)


SCORERS: dict[str, Callable[[Task, list[dict], list[str]], Scores]] = {
    "wer": score_wer,
    "bleu": score_bleu,
    "accuracy": score_accuracy,
    "answer_match": score_answer_match,
    "cider": score_cider,
    "srwt": score_srwt,
    "note": score_note,
    "speaker": score_speaker,
}
