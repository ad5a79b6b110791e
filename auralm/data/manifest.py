"""JSONL manifests: the record schema, its validation, and a loader that reports bad lines and keeps the rest.

One JSON object per line. Two shapes share the file:

**Task records** (what `auralm synth` writes for single-audio tasks)::

    {"id": "train-asr-000007", "task": "asr", "audios": ["audio/train/asr/train-asr-000007.flac"],
     "duration": 2.31, "language": "en", "text": "four thousand two hundred and seven", ...}

  Common fields: `id` (str, unique in the file), `task` (one of TASK_FIELDS), `audios` (list of paths,
  relative to the manifest's folder unless absolute), `duration` (total seconds of the audios, > 0) and
  `language` (ISO code of the speech, or null for non-speech audio). Each task adds the fields in
  TASK_FIELDS (type-checked; extra fields such as `voice`, `augment` or `events` are kept as they are).
  `srwt.words` is a list of {"word", "start", "end"} in seconds, in order, inside the clip.

**Conversation records** in the `messages` + `audios` convention of ms-swift and LLaMA-Factory::

    {"messages": [{"role": "user", "content": "<audio>What is that sound?"},
                  {"role": "assistant", "content": "A siren."}],
     "audios": ["clips/siren.flac"]}

  `role` is system (first message only), user or assistant; `content` is a string in which each `<audio>`
  marks where the next file of `audios` goes, so the number of markers equals len(audios). `task` is
  "conversation" (optional in users' files; `id` is optional too and defaults to `<file stem>-<line>`).
  **Preference pairs** for DPO use ms-swift's field names: `messages` ends with the chosen assistant reply and
  `rejected_response` holds the rejected one (task "preference"). LLaMA-Factory's `chosen`/`rejected` (strings
  or {"role": "assistant", "content": ...} messages) are accepted and converted to that form on load.

A malformed line becomes a ManifestError naming the file, the 1-based line number and the field; the other
lines still load.
"""

import dataclasses
import json
import os
from pathlib import Path

from auralm.text.tokens import AUDIO_MARKER

ROLES = ("system", "user", "assistant")
_NUMBER = (int, float)
_OPT_STR = (str, type(None))

# Required fields of each task record beyond the common ones, with their JSON types.
TASK_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "asr": {"text": (str,)},
    "s2tt": {"text": (str,), "translation": (str,), "target_language": (str,)},
    "srwt": {"text": (str,), "words": (list,)},
    "lid": {"text": (str,)},
    "speaker": {"gender": (str,), "rate": (str,), "pitch": (str,), "quality": (str,)},
    "sound_event": {"label": (str,)},
    "scene": {"label": (str,)},
    "caption": {"captions": (list,)},
    "aqa": {"question": (str,), "answer": (str,), "qtype": (str,)},
    "note": {"instrument": (str,), "midi_pitch": (int,), "midi_velocity": (int,), "velocity": (str,)},
    "voice_chat": {"text_question": (str,), "answer": _OPT_STR},
    "mixed": {"text_question": (str,), "answer": (str,)},
}
CHAT_TASKS = ("conversation", "preference")
TASKS = tuple(TASK_FIELDS) + CHAT_TASKS


@dataclasses.dataclass(frozen=True)
class ManifestError:
    """One problem in a manifest line."""

    path: str  # the manifest file
    line: int  # 1-based line number
    field: str  # the offending field, e.g. "words[2].end", or "<json>" when the line does not parse
    message: str  # what is wrong

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


class ManifestFormatError(ValueError):
    """Raised by write_manifest when a record does not match the schema."""


def validate_record(record: object) -> list[tuple[str, str]]:
    """Problems of one record as (field, message) pairs; an empty list means the record is valid.

    Checks the shape the record claims: conversation/preference (it has `messages`) or a task record.
    """
    if not isinstance(record, dict):
        return [("<record>", f"expected a JSON object, got {type(record).__name__}")]
    if "messages" in record or record.get("task") in CHAT_TASKS:
        return _validate_chat(record)
    problems = []
    _check(problems, record, "id", (str,))
    task = record.get("task")
    if task not in TASK_FIELDS:
        problems.append(("task", f"unknown task {task!r}; expected one of {', '.join(TASKS)}"))
    _check_audios(problems, record, required=True)
    if _check(problems, record, "duration", _NUMBER) and not record["duration"] > 0:
        problems.append(("duration", f"must be > 0, got {record['duration']}"))
    _check(problems, record, "language", _OPT_STR)
    for name, types in TASK_FIELDS.get(task, {}).items():
        _check(problems, record, name, types)
    if task == "srwt" and isinstance(record.get("words"), list):
        _check_words(problems, record["words"], record.get("duration"))
    captions = record.get("captions")
    if (
        task == "caption"
        and isinstance(captions, list)
        and not (captions and all(isinstance(c, str) and c for c in captions))
    ):
        problems.append(("captions", "must be a non-empty list of non-empty strings"))
    if task == "note" and isinstance(record.get("midi_pitch"), int) and not 0 <= record["midi_pitch"] <= 127:
        problems.append(("midi_pitch", f"must be in 0..127, got {record['midi_pitch']}"))
    return problems


def _check(problems: list, record: dict, name: str, types: tuple[type, ...]) -> bool:
    """Append a problem unless record[name] exists with one of `types`; True when it is fine."""
    if name not in record:
        problems.append((name, "missing"))
        return False
    value = record[name]
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        problems.append((name, f"expected {expected}, got {type(value).__name__}"))
        return False
    return True


def _check_audios(problems: list, record: dict, required: bool) -> None:
    if "audios" not in record and not required:
        return
    if _check(problems, record, "audios", (list,)):
        for i, path in enumerate(record["audios"]):
            if not isinstance(path, str) or not path:
                problems.append((f"audios[{i}]", "must be a non-empty path string"))
        if required and not record["audios"]:
            problems.append(("audios", "a task record needs at least one audio"))


def _check_words(problems: list, words: list, duration: object) -> None:
    previous_end = 0.0
    for i, w in enumerate(words):
        if not isinstance(w, dict) or not isinstance(w.get("word"), str) or not w["word"]:
            problems.append((f"words[{i}]", 'expected {"word": str, "start": seconds, "end": seconds}'))
            continue
        start, end = w.get("start"), w.get("end")
        if not isinstance(start, _NUMBER) or not isinstance(end, _NUMBER):
            problems.append((f"words[{i}]", "start and end must be numbers"))
            continue
        if not previous_end <= start < end:
            problems.append(
                (f"words[{i}].start", f"words must be in order with start < end ({start}, {end})")
            )
        if isinstance(duration, _NUMBER) and end > duration + 1e-6:
            problems.append((f"words[{i}].end", f"{end} is past the clip's duration {duration}"))
        previous_end = end


def _validate_chat(record: dict) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if "id" in record:
        _check(problems, record, "id", (str,))
    _check_audios(problems, record, required=False)
    if "duration" in record and _check(problems, record, "duration", _NUMBER) and record["duration"] < 0:
        problems.append(("duration", f"must be >= 0, got {record['duration']}"))
    if not _check(problems, record, "messages", (list,)):
        return problems
    messages = record["messages"]
    if not messages:
        problems.append(("messages", "must not be empty"))
    markers = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append((f"messages[{i}]", "expected an object with role and content"))
            continue
        if m.get("role") not in ROLES:
            problems.append((f"messages[{i}].role", f"expected one of {ROLES}, got {m.get('role')!r}"))
        elif m["role"] == "system" and i != 0:
            problems.append((f"messages[{i}].role", "a system message may only come first"))
        if not isinstance(m.get("content"), str):
            problems.append((f"messages[{i}].content", "expected a string"))
        else:
            markers += m["content"].count(AUDIO_MARKER)
    audios = record.get("audios", [])
    if isinstance(audios, list) and markers != len(audios):
        problems.append(("audios", f"{markers} {AUDIO_MARKER} markers in messages but {len(audios)} audios"))
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if roles and roles[-1] != "assistant":
        problems.append(("messages", "the last message must be the assistant's reply"))
    is_pair = record.get("task") == "preference" or "rejected_response" in record
    if is_pair and not isinstance(record.get("rejected_response"), str):
        problems.append(("rejected_response", "a preference pair needs the rejected reply as a string"))
    return problems


def _from_llamafactory_pair(record: dict) -> dict:
    """LLaMA-Factory's chosen/rejected fields -> messages ending with the chosen reply + rejected_response."""
    out = {k: v for k, v in record.items() if k not in ("chosen", "rejected")}

    def text(value: object) -> object:
        return value.get("content") if isinstance(value, dict) else value

    out["messages"] = list(record.get("messages", [])) + [
        {"role": "assistant", "content": text(record["chosen"])}
    ]
    out["rejected_response"] = text(record["rejected"])
    return out


def normalize_record(record: dict, default_id: str) -> dict:
    """Fill in what users' messages+audios files may leave out: id, task, audios; convert chosen/rejected."""
    if "messages" not in record:
        return record
    if "chosen" in record and "rejected" in record:
        record = _from_llamafactory_pair(record)
    record = dict(record)
    record.setdefault("id", default_id)
    record.setdefault("task", "preference" if "rejected_response" in record else "conversation")
    record.setdefault("audios", [])
    return record


def load_manifest(
    path: str | os.PathLike, resolve_audios: bool = True, check_files: bool = False
) -> tuple[list[dict], list[ManifestError]]:
    """Read a JSONL manifest; returns (valid records, errors). Blank lines are skipped.

    resolve_audios: rewrite relative audio paths to absolute ones, relative to the manifest's folder.
    check_files: also report audio files that do not exist.
    Raises FileNotFoundError only when the manifest itself is missing.
    """
    path = Path(path)
    base = path.parent.resolve()
    records: list[dict] = []
    errors: list[ManifestError] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                errors.append(
                    ManifestError(
                        str(path), number, "<json>", f"not valid JSON: {err.msg} at column {err.colno}"
                    )
                )
                continue
            record = normalize_record(raw, f"{path.stem}-{number}") if isinstance(raw, dict) else raw
            problems = validate_record(record)
            if not problems and record["id"] in seen:
                problems = [("id", f"duplicate id {record['id']!r} (first on line {seen[record['id']]})")]
            if not problems and (resolve_audios or check_files):
                absolute = [str(p if Path(p).is_absolute() else base / p) for p in record["audios"]]
                if check_files:
                    problems = [
                        (f"audios[{i}]", f"file not found: {p}")
                        for i, p in enumerate(absolute)
                        if not Path(p).is_file()
                    ]
                if resolve_audios:
                    record = {**record, "audios": absolute}
            if problems:
                errors.extend(ManifestError(str(path), number, field, message) for field, message in problems)
                continue
            seen[record["id"]] = number
            records.append(record)
    return records, errors


def write_manifest(path: str | os.PathLike, records: list[dict]) -> None:
    """Validate every record and write them as JSONL, atomically (a temporary file renamed into place).

    Raises ManifestFormatError naming the record id and field of the first invalid record.
    """
    lines = []
    for i, record in enumerate(records):
        problems = validate_record(record)
        if problems:
            field, message = problems[0]
            raise ManifestFormatError(f"record {i} ({record.get('id')!r}): {field}: {message}")
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
