"""Task formats: every manifest record rendered as model input (`prompt`) and training target (`target`).

Three conventions:

- ``"tags"``: Qwen-Audio's hierarchical tags (fact sheet §4.3, §5.1): start tag (`<|startoftranscript|>` for
  ASR/S2TT/timestamps/language id, `<|startofanalysis|>` otherwise), audio language or `<|unknown|>`, task
  tag, text language, `<|timestamps|>`/`<|notimestamps|>`, then output-instruction tags. Prompts match the
  released evaluation prompts where one exists (ASR, S2TT, SRWT, caption, scene, AQA, note analysis).
- ``"nl"``: Qwen2-Audio's natural-language pre-training prompts (§3.2), e.g. the ASR instruction of
  `auralm.text.prompts` with target "<|en|>...". Voice chat and mixed audio have no text prompt at all.
- ``"chatml"``: a ChatML conversation as the Qwen2-Audio chat template writes it (§3.1), with
  "Audio k: <|audio_bos|><|AUDIO|><|audio_eos|>\\n" for the k-th `<audio>` marker of the messages.

In every rendering the audio placeholder is AUDIO_PLACEHOLDER (the processor expands `<|AUDIO|>` to the
clip's frame count later), and `target` is exactly the text the loss covers: the answer followed by its stop
token (`<|endoftext|>` for tags/nl, `<|im_end|>` for ChatML). Tokenize `prompt` and `target` separately and
concatenate: the split between them is then exact.

Conventions of our own where no released format exists (documented so that a model trained here is
consistent): language id is `<|startoftranscript|>` -> `<|xx|>` (Whisper's language detection); speaker
attributes use `<|keyword|>...<|speaker_meta|>`; voice chat and mixed audio in tags are
`<|startofanalysis|><|en|><|question|><|answer|>` (an empty text question: the question is spoken).
"""

import dataclasses
import re
from collections.abc import Iterable

from auralm.text.prompts import ASR_INSTRUCTION, SRWT_INSTRUCTION, chat_instruction
from auralm.text.tokens import AUDIO_MARKER, AUDIO_PLACEHOLDER

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
DEFAULT_SYSTEM = "You are a helpful assistant."
STYLES = ("tags", "nl", "chatml")

LANGUAGE_TAG_CODES = ("en", "de", "es", "fr")
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish"}
MAX_TIME = 30.0  # seconds covered by the time tokens
TIME_TOKENS = tuple(f"<|{i // 100}.{i % 100:02d}|>" for i in range(int(MAX_TIME * 100) + 1))
SOT, SOA = "<|startoftranscript|>", "<|startofanalysis|>"

# Every special tag the formats emit, for the tokenizer to add (in Qwen-Audio's released order).
TAG_TOKENS = (
    SOT, SOA, "<|translate|>", "<|transcribe|>", "<|caption|>", "<|keyword|>", "<|unknown|>",
    *(f"<|{code}|>" for code in LANGUAGE_TAG_CODES),
    "<|notimestamps|>", "<|sil|>", "<|timestamps|>", *TIME_TOKENS,
    "<|caption_plain|>", "<|itn|>", "<|wo_itn|>", "<|note_analysis|>", "<|pitch|>",
    *(f"<|midi_pitch_{i}|>" for i in range(128)), "<|velocity|>", *(f"<|midi_velocity_{i}|>" for i in range(128)),
    "<|sonic|>", "<|instrument|>", "<|speaker_meta|>", "<|question|>", "<|answer|>", "<|scene|>", "<|event|>",
)  # fmt: skip


class FormatError(ValueError):
    """A record that cannot be rendered in the asked convention (missing answer, wrong shape, ...)."""


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A rendered example: the model reads `prompt` and is trained to produce `target`."""

    prompt: str  # everything before the trained text, including the audio placeholder(s)
    target: str  # the trained text: the answer and its stop token

    @property
    def answer(self) -> str:
        """`target` without its stop token, i.e. what generation should return."""
        for stop in (ENDOFTEXT, IM_END):
            if self.target.endswith(stop):
                return self.target[: -len(stop)]
        return self.target


@dataclasses.dataclass(frozen=True)
class Segment:
    """A piece of a rendered conversation and whether the loss covers it."""

    text: str
    trained: bool


# ---------------------------------------------------------------------------------------------------------
# Time tokens and the SRWT (word timestamp) string.


def time_token(seconds: float) -> str:
    """The 0.01 s time token for `seconds`, e.g. 1.234 -> "<|1.23|>"; raises FormatError outside 0-30 s."""
    centis = round(seconds * 100)
    if not 0 <= centis <= len(TIME_TOKENS) - 1:
        raise FormatError(f"time {seconds} s is outside the time tokens' range 0-{MAX_TIME:g} s")
    return TIME_TOKENS[centis]


def srwt_string(words: list[dict], duration: float | None = None) -> str:
    """Words with their times in Qwen-Audio's SRWT output format (fact sheet §4.3)::

        <|0.00|><|sil|><|0.54|>turn<|0.86|><|sil|><|1.02|>on<|1.17|>...<|sil|><|2.01|>

    Each word sits between its start and end token, a `<|sil|>` fills every pause (including a leading one
    and, when `duration` is given, the trailing one), and neighbours without a pause share the boundary.
    """
    out = [time_token(0.0)]
    cursor = 0
    for w in words:
        start, end = round(w["start"] * 100), round(w["end"] * 100)
        if start < cursor or end <= start:
            raise FormatError(f"word {w['word']!r} at {w['start']}-{w['end']} s overlaps or is empty")
        if start > cursor:
            out += ["<|sil|>", time_token(start / 100)]
        out += [w["word"], time_token(end / 100)]
        cursor = end
    if duration is not None and round(duration * 100) > cursor:
        out += ["<|sil|>", time_token(duration)]
    return "".join(out)


_SRWT_PIECE = re.compile(r"<\|(\d+\.\d\d)\|>|(<\|[^|>]*\|>)|([^<]+)")
_TAG = re.compile(r"<\|[^|<>\s]*\|>")  # a special tag as decoded text: <|en|>, <|0.54|>, <|sil|>, <|endoftext|>
_LEADING_TAG = re.compile(r"\s*<\|([^|<>\s]*)\|>")
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")  # the shape of Whisper's and Qwen-Audio's language tags (en, yue, haw)
NOT_LANGUAGE_TAGS = frozenset({"sil", "itn"})  # tags of that shape that name no language


def answer_language(text: str) -> str | None:
    """The language code of the first language tag among the tags an answer starts with, or None: ASR answers of
    the Qwen-Audio family name the detected language first ("<|en|>hello" -> "en"; also after
    "<|startoftranscript|>"). `text` is decoded with its special tokens."""
    pos = 0
    while match := _LEADING_TAG.match(text, pos):
        name = match.group(1)
        if _LANGUAGE_CODE.fullmatch(name) and name not in NOT_LANGUAGE_TAGS:
            return name
        pos = match.end()
    return None


def special_pattern(specials: Iterable[str] = ()) -> re.Pattern[str]:
    """A pattern for the special tokens in decoded text: every `<|...|>` tag and the given strings (a tokenizer's
    other special tokens, e.g. SmolLM2's `<jupyter_code>`)."""
    extra = sorted({t for t in specials if t and not _TAG.fullmatch(t)}, key=len, reverse=True)
    return re.compile("|".join([_TAG.pattern, *map(re.escape, extra)]))


def strip_tags(text: str, pattern: re.Pattern[str] = _TAG) -> str:
    """Text decoded with its special tokens, without them (`special_pattern` names a tokenizer's own): what
    decoding with `skip_special_tokens` gives."""
    return pattern.sub("", text).strip()


def parse_srwt(text: str) -> list[tuple[str, float, float]]:
    """(word, start, end) triples from SRWT output; `<|sil|>` spans, other tags and words without an end
    time (cut-off output) are skipped. Inverse of srwt_string up to the 0.01 s quantization."""
    triples = []
    last_time: float | None = None
    pending: str | None = None
    for match in _SRWT_PIECE.finditer(text):
        time, _tag, word = match.groups()
        if time is not None:
            if pending is not None and last_time is not None:
                triples.append((pending, last_time, float(time)))
            pending, last_time = None, float(time)
        elif word is not None and word.strip():
            pending = word.strip()
    return triples


# ---------------------------------------------------------------------------------------------------------
# Single-audio task records: tags and natural-language renderings.


def _lang_tag(code: str | None) -> str:
    if code is None:
        return "<|unknown|>"
    if code not in LANGUAGE_TAG_CODES:
        raise FormatError(f"no language tag for {code!r}; expected one of {LANGUAGE_TAG_CODES}")
    return f"<|{code}|>"


def _answer(record: dict) -> str:
    answer = record.get("answer")
    if answer is None:
        raise FormatError(f"record {record.get('id')!r} has no answer yet (answer is null); fill it in first")
    return answer


def _speaker_text(record: dict) -> str:
    return (
        f"gender: {record['gender']}, speaking rate: {record['rate']}, pitch: {record['pitch']}, "
        f"voice quality: {record['quality']}"
    )


def _note_text(record: dict) -> str:
    return (
        f"{record['instrument']}, {record['note_name']} (MIDI {record['midi_pitch']}), {record['velocity']}"
    )


def _analysis(audio_lang: str, task_tag: str, output_tag: str) -> str:
    return f"{SOA}{audio_lang}{task_tag}<|en|><|notimestamps|>{output_tag}"


def tags_prompt_target(record: dict) -> tuple[str, str]:
    """The tag prompt (without audio) and the answer text (without stop token) of a task record."""
    task = record["task"]
    lang = record.get("language")
    if task == "asr":
        itn = bool(record.get("itn")) and "text_itn" in record
        prompt = f"{SOT}{_lang_tag(lang)}<|transcribe|>{_lang_tag(lang)}<|notimestamps|>"
        return prompt + ("<|itn|>" if itn else "<|wo_itn|>"), record["text_itn"] if itn else record["text"]
    if task == "s2tt":
        prompt = f"{SOT}{_lang_tag(lang)}<|translate|>{_lang_tag(record['target_language'])}<|notimestamps|><|itn|>"
        return prompt, record["translation"]
    if task == "srwt":
        full = srwt_string(record["words"], record.get("duration"))
        first = time_token(0.0)  # the released SRWT prompt forces the first time token
        return f"{SOT}{_lang_tag(lang)}<|transcribe|>{_lang_tag(lang)}<|timestamps|>{first}", full[
            len(first) :
        ]
    if task == "lid":
        return SOT, _lang_tag(lang)
    if task == "speaker":
        return _analysis(_lang_tag(lang), "<|keyword|>", "<|speaker_meta|>"), _speaker_text(record)
    if task == "sound_event":
        return _analysis("<|unknown|>", "<|keyword|>", "<|event|>"), record["label_name"]
    if task == "scene":
        return _analysis("<|unknown|>", "<|keyword|>", "<|scene|>"), record["label_name"]
    if task == "caption":
        return _analysis("<|unknown|>", "<|caption|>", "<|caption_plain|>"), record["captions"][0]
    if task == "aqa":
        return f"{SOA}<|en|><|question|>{record['question']}<|answer|>", record["answer"]
    if task == "note":
        target = (
            f"<|pitch|><|midi_pitch_{record['midi_pitch']}|><|velocity|><|midi_velocity_{record['midi_velocity']}|>"
            f"<|instrument|>{record['instrument']}<|sonic|>{', '.join(record.get('sonic', []))}"
        )
        return _analysis("<|unknown|>", "<|keyword|>", "<|note_analysis|>"), target
    if task in ("voice_chat", "mixed"):
        return f"{SOA}{_lang_tag(lang)}<|question|><|answer|>", _answer(record)
    raise FormatError(
        f"task {task!r} has no tag rendering; conversations and preference pairs render as chatml"
    )


def nl_prompt_target(record: dict) -> tuple[str, str]:
    """The natural-language instruction (without audio) and the answer text of a task record."""
    task = record["task"]
    if task == "asr":
        return ASR_INSTRUCTION, f"{_lang_tag(record['language'])}{record['text']}"
    if task == "s2tt":
        source, target = LANGUAGE_NAMES[record["language"]], LANGUAGE_NAMES[record["target_language"]]
        return f"Translate the {source} speech into {target}:", record["translation"]
    if task == "srwt":
        return SRWT_INSTRUCTION, srwt_string(record["words"], record.get("duration"))
    if task == "lid":
        return "Identify the language spoken in the audio:", LANGUAGE_NAMES[record["language"]]
    if task == "speaker":
        return "Describe the speaker's gender, speaking rate, pitch and voice quality:", _speaker_text(record)
    if task == "sound_event":
        return "Classify the sound event in English:", record["label_name"]
    if task == "scene":
        return "Classify the acoustic scene in English:", record["label_name"]
    if task == "caption":
        return "Generate the caption in English:", record["captions"][0]
    if task == "aqa":
        return record["question"], record["answer"]
    if task == "note":
        return "Identify the instrument, pitch and loudness of the note:", _note_text(record)
    if task in ("voice_chat", "mixed"):
        return "", _answer(record)
    raise FormatError(f"task {task!r} has no natural-language rendering; conversations render as chatml")


def to_messages(record: dict) -> list[dict]:
    """A task record as messages (`<audio>` marks the clip): the nl instruction as the user's text (an
    ending ":" becomes "."), or no text for voice chat and mixed audio. Conversation and preference
    records return their own messages (the chosen reply last)."""
    if "messages" in record:
        return list(record["messages"])
    instruction, answer = nl_prompt_target(record)
    instruction = chat_instruction(instruction)
    if record["task"] == "asr":
        answer = record["text"]  # no language tag inside a chat reply
    return [{"role": "user", "content": AUDIO_MARKER + instruction}, {"role": "assistant", "content": answer}]


def render(record: dict, style: str) -> Rendered:
    """Render one manifest record in `style` ("tags", "nl" or "chatml")."""
    if style == "tags":
        prompt, answer = tags_prompt_target(record)
        return Rendered(AUDIO_PLACEHOLDER * len(record["audios"]) + prompt, answer + ENDOFTEXT)
    if style == "nl":
        prompt, answer = nl_prompt_target(record)
        return Rendered(AUDIO_PLACEHOLDER * len(record["audios"]) + prompt, answer + ENDOFTEXT)
    if style == "chatml":
        return render_chatml(to_messages(record))
    raise FormatError(f"unknown style {style!r}; expected one of {STYLES}")


# ---------------------------------------------------------------------------------------------------------
# ChatML conversations.


def chatml_segments(messages: list[dict], system: str | None = DEFAULT_SYSTEM) -> list[Segment]:
    """The Qwen2-Audio chat template as segments; assistant replies (with their `<|im_end|>`) are trained.

    `system` is used when the messages have no system message of their own (None: no system turn).
    Each `<audio>` becomes "Audio k: <|audio_bos|><|AUDIO|><|audio_eos|>\\n", k counting from 1 across the
    whole conversation.
    """
    segments: list[Segment] = []
    if system is not None and (not messages or messages[0].get("role") != "system"):
        segments.append(Segment(f"{IM_START}system\n{system}{IM_END}\n", False))
    k = 0
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "assistant":
            segments.append(Segment(f"{IM_START}assistant\n", False))
            segments.append(Segment(content + IM_END, True))
            segments.append(Segment("\n", False))
            continue
        parts = content.split(AUDIO_MARKER)
        text = parts[0]
        for part in parts[1:]:
            k += 1
            text += f"Audio {k}: {AUDIO_PLACEHOLDER}\n" + part
        segments.append(Segment(f"{IM_START}{role}\n{text}{IM_END}\n", False))
    return segments


def render_chatml(messages: list[dict], system: str | None = DEFAULT_SYSTEM) -> Rendered:
    """The conversation as one Rendered: the last assistant reply is the target, the rest is the prompt."""
    if not messages or messages[-1].get("role") != "assistant":
        raise FormatError("a conversation to render must end with an assistant message")
    segments = chatml_segments(messages, system)
    last = max(i for i, s in enumerate(segments) if s.trained)
    return Rendered("".join(s.text for s in segments[:last]), segments[last].text)


def render_preference(record: dict, system: str | None = DEFAULT_SYSTEM) -> tuple[Rendered, Rendered]:
    """(chosen, rejected) renderings of a preference record; both share the prompt."""
    if "rejected_response" not in record:
        raise FormatError(f"record {record.get('id')!r} is not a preference pair (no rejected_response)")
    chosen = render_chatml(record["messages"], system)
    return chosen, Rendered(chosen.prompt, record["rejected_response"] + IM_END)
