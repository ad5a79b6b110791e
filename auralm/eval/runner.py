"""Run tasks: build prompts from manifests, generate in batches, keep every prediction on disk, score.

Predictions go to `OUT/predictions/<task>.jsonl`, one line per item, appended as soon as a batch is decoded
(flush + fsync per batch), so a run killed at any moment loses at most the batch in flight. A rerun reads the
file and generates only the items without a prediction. Lines:

    {"id": "test-asr-000003", "prediction": "<generated text>"}
    {"id": "test-asr-000004", "error": "<why this item could not be run>"}     (retried on the next run)
    {"id": "test-asr-000003", "judge": {"scores": [7.0], "reply": "...", "requests": 1}}

Under torchrun each rank takes every world_size-th item of the length-sorted list and appends to its own
`<task>.rank<r>.jsonl`; after a barrier rank 0 merges the shards into `<task>.jsonl` and scores. Finished items
are read from every file of the task, so a rerun may use another number of processes. `check_run_identity`
keeps OUT/run.json so that a rerun with another model or other settings is refused instead of mixed in.

Decoding follows the papers' evaluation: greedy, at least one new token, left padding, batches of similar
length (sorted longest first, so a batch that does not fit in memory shows up at once).

A malformed manifest line is reported (file, line, field) and skipped; an item whose prompt cannot be built or
whose audio cannot be decoded is reported and skipped; a task whose manifest is missing is listed as missing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auralm.data.manifest import load_manifest
from auralm.eval.tasks import Scores, Task, TaskError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One record of a task, ready to run."""

    id: str  # the record's id
    record: dict  # the manifest record (audio paths absolute)
    prompt: str  # model input text with its audio placeholders

    @property
    def length(self) -> float:
        """Sort key for batching: seconds of audio."""
        return float(self.record.get("duration") or 0.0)


# A predictor answers a batch of items of one task with the generated texts, in order.
Predictor = Callable[[Task, list[Item]], list[str]]
# progress(task name, items done, items to do)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunConfig:
    """Where and how to run."""

    data_dir: Path  # manifests of relative task paths are looked up here
    out_dir: Path  # predictions/ and the report go here
    batch_size: int = 8  # items decoded together
    limit: int | None = None  # run only the first N selected records of each task (None: all)
    rank: int = 0  # this process's rank (torchrun)
    world_size: int = 1  # number of processes (torchrun)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")

    @property
    def predictions_dir(self) -> Path:
        return Path(self.out_dir) / "predictions"


@dataclass
class TaskResult:
    """What happened to one task."""

    task: Task
    manifest: str  # the manifest path used
    status: str  # "scored", "missing" (no manifest), "empty" (no record selected) or "error" (scoring failed)
    scores: Scores | None = None
    count: int = 0  # items scored
    failed: list[str] = field(default_factory=list)  # "id: reason" of items that could not be run
    manifest_errors: list[str] = field(default_factory=list)  # malformed manifest lines
    judge: dict | None = None  # judge summary (mean score, counts) when a judge ran
    error: str | None = None  # why scoring failed
    example_prompt: str | None = None  # the first item's prompt, as the model read it

    def to_json(self) -> dict:
        return {
            "status": self.status, "manifest": self.manifest, "scorer": self.task.scorer, "style": self.task.style,
            "primary": self.scores.primary if self.scores else None,
            "higher_is_better": self.scores.higher_is_better if self.scores else None,
            "value": self.scores.value if self.scores else None,
            "scores": self.scores.values if self.scores else {}, "count": self.count, "failed": self.failed,
            "manifest_errors": self.manifest_errors, "judge": self.judge, "error": self.error,
            "settings": self.task.describe(), "example_prompt": self.example_prompt,
        }  # fmt: skip


# ---- items -----------------------------------------------------------------------------------------------
def manifest_path(task: Task, data_dir: Path) -> Path:
    path = Path(task.manifest)
    return path if path.is_absolute() else Path(data_dir) / path


def load_items(
    task: Task, data_dir: Path, limit: int | None = None
) -> tuple[list[Item], list[str], list[str]]:
    """(items, manifest errors, records that could not be prompted) of a task; raises FileNotFoundError when
    the manifest does not exist."""
    records, errors = load_manifest(manifest_path(task, data_dir))
    items, unusable = [], []
    for record in records:
        if not task.selects(record):
            continue
        if limit is not None and len(items) >= limit:
            break
        try:
            if task.reference_field is not None:
                task.reference(record)  # a record without its reference is skipped here, not at scoring
            items.append(Item(record["id"], record, task.prompt(record)))
        except TaskError as err:
            unusable.append(f"{record['id']}: {err}")
    return items, [str(e) for e in errors], unusable


def count_items(tasks: list[Task], data_dir: Path, limit: int | None = None) -> int:
    """How many items the tasks select (missing manifests count none): the size of a run, before it starts."""
    total = 0
    for task in tasks:
        try:
            total += len(load_items(task, data_dir, limit)[0])
        except FileNotFoundError:
            continue
    return total


def shard(items: list[Item], rank: int, world_size: int) -> list[Item]:
    """This rank's share: every world_size-th item of the list sorted longest first (ids break ties)."""
    ordered = sorted(items, key=lambda it: (-it.length, it.id))
    return ordered[rank::world_size]


# ---- the predictions file --------------------------------------------------------------------------------
def prediction_files(directory: Path, task_name: str) -> list[Path]:
    """Every predictions file of a task: the merged one and any per-rank shards."""
    return sorted(p for p in [directory / f"{task_name}.jsonl", *directory.glob(f"{task_name}.rank*.jsonl")]
                  if p.is_file())  # fmt: skip


def read_entries(paths: Iterable[Path]) -> dict[str, dict]:
    """Merge the JSONL lines of `paths` by id; later lines add to or replace earlier fields. A line that does not
    parse (a write cut short by a kill) is skipped."""
    entries: dict[str, dict] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                try:
                    entry = json.loads(line)
                    key = entry["id"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    if line.strip():
                        log.warning("%s:%d: skipping an unreadable predictions line", path, number)
                    continue
                entries.setdefault(key, {}).update(entry)
                if "prediction" in entry:  # a fresh prediction clears an older error
                    entries[key].pop("error", None)
    return entries


def _trim_torn_tail(path: Path) -> None:
    """Cut a last line that a kill left without its newline, so the next append starts on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


class PredictionLog:
    """Appends entries to a predictions file durably: each `write` is flushed and fsynced."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _trim_torn_tail(path)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open across batches; close() ends it)

    def write(self, entries: list[dict]) -> None:
        self._file.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# ---- running ----------------------------------------------------------------------------------------------
def predict_task(task: Task, items: list[Item], predictor: Predictor, cfg: RunConfig,
                 progress: Progress | None = None) -> int:  # fmt: skip
    """Generate this rank's unfinished items of `task`, appending each batch to its predictions file.
    Returns the number of items generated now."""
    directory = cfg.predictions_dir
    done = {k for k, e in read_entries(prediction_files(directory, task.name)).items() if "prediction" in e}
    todo = [it for it in shard(items, cfg.rank, cfg.world_size) if it.id not in done]
    if not todo:
        return 0
    name = f"{task.name}.jsonl" if cfg.world_size == 1 else f"{task.name}.rank{cfg.rank}.jsonl"
    out = PredictionLog(directory / name)
    try:
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start : start + cfg.batch_size]
            out.write(_run_batch(task, batch, predictor))
            if progress:
                progress(task.name, start + len(batch), len(todo))
    finally:
        out.close()
    return len(todo)


def _run_batch(task: Task, batch: list[Item], predictor: Predictor) -> list[dict]:
    """Predictions for a batch; when the batch fails on bad input (an undecodable audio), each item runs alone
    so that only the bad one is reported."""
    try:
        texts = predictor(task, batch)
    except ValueError as err:  # AudioError and the processor's input errors are ValueErrors
        if len(batch) == 1:
            log.warning("task %s, item %s failed: %s", task.name, batch[0].id, err)
            return [{"id": batch[0].id, "error": str(err)}]
        return [entry for item in batch for entry in _run_batch(task, [item], predictor)]
    if len(texts) != len(batch):
        raise RuntimeError(f"the predictor returned {len(texts)} answers for {len(batch)} items")
    return [{"id": item.id, "prediction": text} for item, text in zip(batch, texts)]


def merge_shards(directory: Path, task_name: str) -> None:
    """Fold the per-rank files of a task into `<task>.jsonl` (atomically) and remove them."""
    shards = [p for p in prediction_files(directory, task_name) if p.name != f"{task_name}.jsonl"]
    if not shards:
        return
    merged = directory / f"{task_name}.jsonl"
    entries = read_entries(prediction_files(directory, task_name))
    tmp = merged.with_name(merged.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries.values()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, merged)
    for path in shards:
        path.unlink()


def score_task(task: Task, items: list[Item], entries: dict[str, dict], manifest: str) -> TaskResult:
    """Score the items that have a prediction; the others are listed as failed."""
    result = TaskResult(task, manifest, "scored")
    scored = [it for it in items if "prediction" in entries.get(it.id, {})]
    result.failed = [f"{it.id}: {entries.get(it.id, {}).get('error', 'no prediction')}" for it in items
                     if it not in scored]  # fmt: skip
    result.count = len(scored)
    if not scored:
        result.status = "empty"
        return result
    answers = [task.answer(entries[it.id]["prediction"]) for it in scored]
    try:
        result.scores = task.score([it.record for it in scored], answers)
    except (ValueError, ImportError) as err:  # MetricInputError and TaskError are ValueErrors
        result.status, result.error = "error", str(err)
    return result


def judge_task(task: Task, items: list[Item], entries: dict[str, dict], client: Any, path: Path) -> dict:
    """Ask the judge about every predicted item without a cached verdict; append verdicts to `path`. Returns the
    summary: mean score over judged items, and how many the judge could not score."""
    out = PredictionLog(path)
    try:
        for item in items:
            entry = entries.get(item.id, {})
            if "prediction" not in entry or "judge" in entry:
                continue
            verdict = client.judge(
                item.record[task.judge_question_field],
                task.reference(item.record),
                [task.answer(entry["prediction"])],
            )
            entry["judge"] = verdict.to_json()
            out.write([{"id": item.id, "judge": entry["judge"]}])
    finally:
        out.close()
    scores = [entries[it.id]["judge"]["scores"] for it in items if "judge" in entries.get(it.id, {})]
    usable = [s[0] for s in scores if s]
    return {"mean_score": sum(usable) / len(usable) if usable else None, "judged": len(usable),
            "unscored": len(scores) - len(usable)}  # fmt: skip


def evaluate(
    tasks: list[Task], predictor: Predictor, cfg: RunConfig, judge: Any = None,
    progress: Progress | None = None, barrier: Callable[[], None] | None = None,
) -> list[TaskResult]:  # fmt: skip
    """Run every task (this rank's share), then on rank 0 merge the shards and score. `judge` (a JudgeClient)
    scores the tasks that name a `judge_question_field`. `barrier` waits for all ranks (torchrun). Returns the
    results on rank 0 and an empty list on the other ranks."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise TaskError(f"task names must be unique, got {names}")
    loaded: dict[str, tuple[list[Item], list[str], list[str]] | None] = {}
    for task in tasks:
        try:
            loaded[task.name] = load_items(task, cfg.data_dir, cfg.limit)
        except FileNotFoundError:
            loaded[task.name] = None
            if cfg.rank == 0:
                log.warning(
                    "task %s: manifest %s not found; skipped", task.name, manifest_path(task, cfg.data_dir)
                )
            continue
        items, manifest_errors, unusable = loaded[task.name]
        if cfg.rank == 0:
            for problem in manifest_errors:
                log.warning("skipping a malformed manifest line: %s", problem)
            for problem in unusable:
                log.warning("task %s: skipping record %s", task.name, problem)
        predict_task(task, items, predictor, cfg, progress)
    if barrier is not None:
        barrier()
    if cfg.rank != 0:
        return []
    results = []
    for task in tasks:
        manifest = str(manifest_path(task, cfg.data_dir))
        if loaded[task.name] is None:
            results.append(TaskResult(task, manifest, "missing"))
            continue
        items, manifest_errors, unusable = loaded[task.name]
        merge_shards(cfg.predictions_dir, task.name)
        entries = read_entries(prediction_files(cfg.predictions_dir, task.name))
        result = score_task(task, items, entries, manifest)
        result.manifest_errors = manifest_errors
        result.example_prompt = items[0].prompt if items else None
        result.failed = unusable + result.failed
        if judge is not None and task.judge_question_field and result.count:
            try:
                result.judge = judge_task(
                    task, items, entries, judge, cfg.predictions_dir / f"{task.name}.jsonl"
                )
            except RuntimeError as err:  # JudgeClientError: the verdicts so far stay cached for a rerun
                log.warning("task %s: judging stopped: %s", task.name, err)
                result.judge = {"error": str(err)}
        results.append(result)
    return results


def check_run_identity(out_dir: Path, identity: dict) -> None:
    """Refuse to resume into a folder whose predictions came from another model or other settings: `identity`
    is kept in OUT/run.json and compared on every later run while predictions exist. Raises ValueError."""
    path = Path(out_dir) / "run.json"
    has_predictions = any((Path(out_dir) / "predictions").glob("*.jsonl"))
    if path.is_file() and has_predictions:
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
        if changed:
            detail = ", ".join(f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in changed)
            raise ValueError(
                f"{out_dir} holds predictions of another run ({detail}); pass another --out or delete that folder"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class ModelPredictor:
    """Generates with an `AudioChat` (auralm.load): greedy unless told otherwise, at least one new token."""

    def __init__(self, chat: Any, max_new_tokens: int | None = None, **generation: Any):
        self.chat = chat
        self.max_new_tokens = max_new_tokens  # overrides every task's budget when given
        self.generation = {"min_new_tokens": 1, **generation}

    def __call__(self, task: Task, items: list[Item]) -> list[str]:
        audios = [path for it in items for path in it.record.get("audios", [])]
        inputs = self.chat.processor(text=[it.prompt for it in items], audio=audios or None)
        generation = self.generation
        if task.scorer == "wer" and not task.keep_special_tokens:  # a transcript: decoded as `transcribe` decodes
            generation = {**self.chat.asr_decoding(generation), **generation}
        cfg = self.chat.config(max_new_tokens=self.max_new_tokens or task.max_new_tokens, **generation)
        inputs = inputs.to(self.chat.model.device)
        return self.chat.generate_texts(inputs, cfg, skip_special_tokens=not task.keep_special_tokens)

    def settings(self) -> dict:
        """The generation settings, for the report."""
        cfg = self.chat.config(**self.generation)
        return {k: v for k, v in vars(cfg).items() if k != "max_new_tokens"} | {
            "max_new_tokens": self.max_new_tokens or "per task"
        }
