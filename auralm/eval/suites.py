"""Named suites: lists of tasks over a data folder, and the papers' published numbers for them.

- `synthetic`: one task per task family on the synthetic world's test split (`DATA/test.jsonl`, written by
  `auralm synth`), prompted in the convention the model was trained with (`style`, default "nl").
- `qwen2-audio`: the Qwen2-Audio paper's tables with its evaluation prompts (natural language, fact sheet §3.2
  and §5.2) on data imported by `auralm data import` into DATA (LibriSpeech, Common Voice 15, FLEURS zh,
  AISHELL-2, CoVoST2, MELD, VocalSound).
- `qwen-audio`: the Qwen-Audio paper's tables with its hierarchical-tag prompts (fact sheet §5.1): the same
  speech sets plus AISHELL-1, Clotho, CochlScene, ClothoAQA and NSynth.

Imported-data tasks read `DATA/<dataset>/<subset>.jsonl` (the importers' output names); a task whose manifest
is missing is skipped by the runner and listed in the report, so a suite runs on whatever has been imported.

`PUBLISHED` holds the papers' numbers per task name in this module's units (percent for WER and accuracy,
BLEU 0-100, CIDEr as reported), for `auralm.eval.report.paper_table`.
"""

from __future__ import annotations

from auralm.eval.tasks import Task, TaskError
from auralm.text.prompts import ASR_INSTRUCTION_WITH_LANGUAGE

AUDIO_FAMILIES = (
    "asr", "s2tt", "srwt", "lid", "speaker", "sound_event", "scene", "caption", "aqa", "note", "voice_chat", "mixed",
)  # fmt: skip
SCORER_OF_FAMILY = {
    "asr": "wer", "s2tt": "bleu", "srwt": "srwt", "lid": "accuracy", "speaker": "speaker",
    "sound_event": "accuracy", "scene": "accuracy", "caption": "cider", "aqa": "accuracy", "note": "note",
    "voice_chat": "answer_match", "mixed": "answer_match",
}  # fmt: skip
# Generation budgets: long enough for the longest synthetic answer of each family, short enough to be fast.
SYNTHETIC_MAX_NEW_TOKENS = {
    "asr": 96, "s2tt": 96, "srwt": 192, "lid": 8, "speaker": 40, "sound_event": 16, "scene": 16,
    "caption": 48, "aqa": 16, "note": 40, "voice_chat": 48, "mixed": 16, "conversation": 48,
}  # fmt: skip


def synthetic_suite(style: str = "nl", manifest: str = "test.jsonl") -> list[Task]:
    """One task per family of the synthetic world, plus its multi-turn conversations (always ChatML)."""
    tasks = []
    for family in AUDIO_FAMILIES:
        tags = style == "tags"
        tasks.append(Task(
            name=family, manifest=manifest, scorer=SCORER_OF_FAMILY[family], style=style, record_task=family,
            require=("answer",) if family == "voice_chat" else (),
            max_new_tokens=SYNTHETIC_MAX_NEW_TOKENS[family],
            # Time tokens always carry the answer; tags also carry the language id and the note fields.
            keep_special_tokens=family == "srwt" or (tags and family in ("lid", "note")),
            answer_prefix="<|0.00|>" if family == "srwt" and tags else "",
            judge_question_field="text_question" if family == "voice_chat" else None,
        ))  # fmt: skip
    tasks.append(Task(
        name="conversation", manifest=manifest, scorer="answer_match", style="chatml", record_task="conversation",
        max_new_tokens=SYNTHETIC_MAX_NEW_TOKENS["conversation"],
    ))  # fmt: skip
    return tasks


# ---- the papers' prompts ------------------------------------------------------------------------------------
NL_ASR = ASR_INSTRUCTION_WITH_LANGUAGE
NL_S2TT = (
    "Translate the {language_name} speech into {target_language_name}:"  # third-party; unverified (§3.2)
)
NL_SER = "Recognize the emotion with keywords in English:"
NL_VSC = "Classify the human vocal sound to VocalSound in English:"

TAGS_ASR = "<|startoftranscript|><|{language}|><|transcribe|><|{language}|><|notimestamps|><|wo_itn|>"
TAGS_S2TT = "<|startoftranscript|><|{language}|><|translate|><|{target_language}|><|notimestamps|><|itn|>"
TAGS_CAPTION = "<|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_clotho|>"
TAGS_SCENE = "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>"
TAGS_SER = "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>"
TAGS_AQA = "<|startofanalysis|><|en|><|question|>{question}<|answer|>"
TAGS_VSC = "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|vocal_classification|>"
TAGS_NOTE = "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>"

LIBRISPEECH = ("dev-clean", "dev-other", "test-clean", "test-other")
COMMON_VOICE = ("en", "zh", "yue", "fr")
AISHELL2 = ("mic", "ios", "android")
COVOST2_QWEN2 = ("en-de", "de-en", "en-zh", "zh-en", "es-en", "fr-en", "it-en")


def _asr(name: str, manifest: str, style: str, template: str) -> Task:
    return Task(name, manifest, "wer", style, template, reference_field="text", record_task="asr")


def _s2tt(pair: str, style: str, template: str) -> Task:
    return Task(f"covost2_{pair}", f"covost2/{pair}-test.jsonl", "bleu", style, template,
                reference_field="translation", record_task="s2tt")  # fmt: skip


def qwen2_audio_suite() -> list[Task]:
    """Qwen2-Audio's tables: greedy, 256 new tokens, natural-language prompts (fact sheet §5.2)."""
    tasks = [_asr(f"librispeech_{s}", f"librispeech/{s}.jsonl", "nl", NL_ASR) for s in LIBRISPEECH]
    tasks += [
        _asr(f"commonvoice_{lang}", f"commonvoice/{lang}-test.jsonl", "nl", NL_ASR) for lang in COMMON_VOICE
    ]
    tasks.append(_asr("fleurs_zh", "fleurs/zh-test.jsonl", "nl", NL_ASR))
    tasks += [_asr(f"aishell2_{d}", f"aishell2/{d}-test.jsonl", "nl", NL_ASR) for d in AISHELL2]
    tasks += [_s2tt(pair, "nl", NL_S2TT) for pair in COVOST2_QWEN2]
    tasks.append(Task("meld", "meld/test.jsonl", "accuracy", "nl", NL_SER, reference_field="label"))
    tasks.append(
        Task("vocalsound", "vocalsound/test.jsonl", "accuracy", "nl", NL_VSC, reference_field="label")
    )
    return tasks


def qwen_audio_suite() -> list[Task]:
    """Qwen-Audio's tables with the released hierarchical-tag prompts and budgets (fact sheet §5.1)."""
    tasks = [_asr(f"librispeech_{s}", f"librispeech/{s}.jsonl", "tags", TAGS_ASR) for s in LIBRISPEECH]
    tasks += [_asr(f"aishell1_{s}", f"aishell1/{s}.jsonl", "tags", TAGS_ASR) for s in ("dev", "test")]
    tasks += [_asr(f"aishell2_{d}", f"aishell2/{d}-test.jsonl", "tags", TAGS_ASR) for d in AISHELL2]
    tasks += [_s2tt(pair, "tags", TAGS_S2TT) for pair in COVOST2_QWEN2]
    tasks += [
        Task("clotho", "clotho/evaluation.jsonl", "cider", "tags", TAGS_CAPTION, max_new_tokens=30),
        Task("cochlscene", "cochlscene/test.jsonl", "accuracy", "tags", TAGS_SCENE, reference_field="label",
             max_new_tokens=10),
        Task("meld", "meld/test.jsonl", "accuracy", "tags", TAGS_SER, reference_field="label", max_new_tokens=4),
        Task("clothoaqa", "clothoaqa/test.jsonl", "accuracy", "tags", TAGS_AQA, reference_field="answer",
             max_new_tokens=4),
        Task("vocalsound", "vocalsound/test.jsonl", "accuracy", "tags", TAGS_VSC, reference_field="label",
             max_new_tokens=4),
        Task("nsynth", "nsynth/test.jsonl", "note", "tags", TAGS_NOTE, max_new_tokens=30, keep_special_tokens=True),
    ]  # fmt: skip
    return tasks


SUITES = {"synthetic": synthetic_suite, "qwen2-audio": qwen2_audio_suite, "qwen-audio": qwen_audio_suite}


def suite(name: str, style: str | None = None) -> list[Task]:
    """The tasks of suite `name`; `style` re-prompts the synthetic suite in another convention."""
    if name not in SUITES:
        raise TaskError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    if name == "synthetic":
        return synthetic_suite(style or "nl")
    if style is not None:
        raise TaskError(
            f"suite {name!r} uses its paper's own prompts; --style applies to the synthetic suite only"
        )
    return SUITES[name]()


# ---- published numbers (fact sheet §5.3), in this module's units --------------------------------------------
PUBLISHED: dict[str, dict[str, float]] = {
    "qwen2-audio": {
        "librispeech_dev-clean": 1.3, "librispeech_dev-other": 3.4,
        "librispeech_test-clean": 1.6, "librispeech_test-other": 3.6,
        "commonvoice_en": 8.6, "commonvoice_zh": 6.9, "commonvoice_yue": 5.9, "commonvoice_fr": 9.6,
        "fleurs_zh": 7.5, "aishell2_mic": 3.0, "aishell2_ios": 3.0, "aishell2_android": 2.9,
        "covost2_en-de": 29.9, "covost2_de-en": 35.2, "covost2_en-zh": 45.2, "covost2_zh-en": 24.4,
        "covost2_es-en": 40.0, "covost2_fr-en": 38.5, "covost2_it-en": 36.3,
        "meld": 55.3, "vocalsound": 93.92,
    },
    "qwen-audio": {
        "librispeech_dev-clean": 1.8, "librispeech_dev-other": 4.0,
        "librispeech_test-clean": 2.0, "librispeech_test-other": 4.2,
        "aishell1_dev": 1.2, "aishell1_test": 1.3,
        "aishell2_mic": 3.3, "aishell2_ios": 3.1, "aishell2_android": 3.3,
        "covost2_en-de": 25.1, "covost2_de-en": 33.9, "covost2_en-zh": 41.5, "covost2_zh-en": 15.7,
        "covost2_es-en": 39.7, "covost2_fr-en": 38.5, "covost2_it-en": 36.0,
        "clotho": 0.441, "cochlscene": 79.5, "meld": 55.7, "clothoaqa": 57.9, "vocalsound": 92.89, "nsynth": 78.82,
    },
}  # fmt: skip
