"""Generate a synthetic audio world: presets, the job plan, worker processes, resume, manifests and stats.

Output layout under `out`::

    world.json                  the settings (preset, seed, counts) and whether the run completed
    {split}.jsonl               one manifest per split (schema: auralm.data.manifest)
    audio/{split}/{task}/{id}.flac
    stats.json                  counts, hours and task balance per split (stats.py)
    .parts/{split}/{id}.json    per-clip records while the run is in progress (removed at the end)

Every clip is a pure function of (seed, split, task, index): its random generator is seeded from exactly
these, so the bytes do not depend on the number of workers or on the order in which clips finish. A clip is
finished when its record file exists; the FLAC is written first and both are renamed into place, so an
interrupted run resumes by skipping finished clips.
"""

import dataclasses
import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import soundfile as sf

from auralm.data.manifest import write_manifest
from auralm.synth import derived, speakers, stats, voices
from auralm.synth.speech import SAMPLE_RATE
from auralm.synth.tasks import BUILDERS

SPLITS = voices.SPLITS
# Bump when a change makes old worlds differ from new ones for the same seed (2: the mixture of voice engines;
# 3: hibari's female voice joins it; 4: wide-vocabulary ASR sentences, ASR 4 -> 7; 5: a second wide pass, twice the
# wide clips, ASR 7 -> 10).
WORLD_VERSION = 5
# Relative number of clips per task (ASR gets the most: it carries the vocabulary).
TASK_WEIGHTS = {
    "asr": 10.0, "s2tt": 1.5, "srwt": 1.0, "lid": 1.0, "speaker": 1.0, "sound_event": 1.0, "scene": 1.0,
    "caption": 1.0, "aqa": 1.5, "note": 1.0, "voice_chat": 1.5, "mixed": 1.0,
}  # fmt: skip
CHUNK = 16  # clips per worker job: large enough to amortise process hand-off, small for a smooth progress bar


class WorldError(ValueError):
    """Bad settings, or an output folder that holds a different world."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """How big a world is."""

    name: str  # preset name
    train_unit: int  # train clips per unit of task weight
    eval_unit: int  # dev and test clips (each) per unit of task weight
    conversations: tuple[int, int, int]  # conversation records for train, dev, test
    preferences: tuple[int, int, int]  # preference pairs for train, dev, test

    def clips(self, split: str) -> dict[str, int]:
        """Clip count per task in `split`."""
        unit = self.train_unit if split == "train" else self.eval_unit
        return {task: max(1, math.ceil(weight * unit)) for task, weight in TASK_WEIGHTS.items()}

    def derived_counts(self, split: str) -> dict[str, int]:
        """Conversation and preference counts of `split`."""
        i = SPLITS.index(split)
        return {"conversation": self.conversations[i], "preference": self.preferences[i]}


PRESETS = {
    # A few hundred clips in seconds: tests and CI.
    "tiny": Preset("tiny", train_unit=8, eval_unit=2, conversations=(16, 4, 4), preferences=(16, 4, 4)),
    # About 30k clips (~25 h of audio): enough to train the demo model; scale with --scale.
    "demo": Preset("demo", train_unit=1600, eval_unit=100, conversations=(4000, 200, 200), preferences=(4000, 200, 200)),
}  # fmt: skip


def preset(name: str, scale: float = 1.0) -> Preset:
    """Preset `name` with every count multiplied by `scale` (at least one clip per task and split)."""
    if name not in PRESETS:
        raise WorldError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    if not scale > 0:
        raise WorldError(f"scale must be > 0, got {scale}")
    p = PRESETS[name]
    if scale == 1.0:
        return p
    return Preset(
        p.name,
        max(1, round(p.train_unit * scale)),
        max(1, round(p.eval_unit * scale)),
        tuple(round(n * scale) for n in p.conversations),
        tuple(round(n * scale) for n in p.preferences),
    )


@dataclasses.dataclass(frozen=True)
class Job:
    """One clip to generate."""

    split: str
    task: str
    index: int

    @property
    def id(self) -> str:
        return f"{self.split}-{self.task}-{self.index:06d}"

    @property
    def audio_path(self) -> str:
        """Path of the FLAC relative to the world folder."""
        return f"audio/{self.split}/{self.task}/{self.id}.flac"


def _stream(name: str) -> int:
    """A stable number for a name, used in seeds (crc32 is the same in every process and Python version)."""
    return zlib.crc32(name.encode())


def job_rng(seed: int, split: str, task: str, index: int) -> np.random.Generator:
    """The generator of one clip, seeded from (seed, split, task, index) only."""
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_stream(split), _stream(task), index))
    )


def plan(p: Preset) -> list[Job]:
    """Every clip of preset `p`, in manifest order."""
    return [Job(s, t, i) for s in SPLITS for t, n in p.clips(s).items() for i in range(n)]


def write_flac(path: Path, audio: np.ndarray) -> None:
    """Write 16 kHz mono int16 `audio` as FLAC, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def run_job(out: Path, seed: int, job: Job) -> float:
    """Generate, write and record one clip; returns its duration in seconds."""
    clip = BUILDERS[job.task](job.split, job_rng(seed, job.split, job.task, job.index))
    assert clip.audio.dtype == np.int16 and clip.audio.ndim == 1, (clip.audio.dtype, clip.audio.shape)
    flac = out / job.audio_path
    flac.parent.mkdir(parents=True, exist_ok=True)
    write_flac(flac, clip.audio)
    duration = round(clip.audio.size / SAMPLE_RATE, 4)
    record = {"id": job.id, "task": job.task, "audios": [job.audio_path], "duration": duration, **clip.record}
    _write_json(out / ".parts" / job.split / f"{job.id}.json", record)
    return duration


def _run_chunk(out: str, seed: int, jobs: list[Job]) -> int:
    for job in jobs:
        run_job(Path(out), seed, job)
    return len(jobs)


def _is_done(out: Path, job: Job) -> bool:
    return (out / ".parts" / job.split / f"{job.id}.json").is_file()


def _settings(p: Preset, seed: int) -> dict:
    """The settings that define a world, in their JSON form (tuples become lists) so they compare equal
    to what world.json holds."""
    settings = {
        "version": WORLD_VERSION,
        "preset": dataclasses.asdict(p),
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
    }
    return json.loads(json.dumps(settings))


@dataclasses.dataclass
class Report:
    """What a run did."""

    clips: int  # clips in the world
    generated: int  # clips generated by this run (the rest were already done)
    seconds: float  # wall time of this run
    stats: dict  # stats.json content

    @property
    def clips_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0


def generate(
    out: str | os.PathLike,
    preset_name: str = "tiny",
    seed: int = 0,
    workers: int = 1,
    scale: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Generate (or finish) the world `preset_name` with `seed` in folder `out`.

    workers: processes that generate clips (1 = in this process). progress(done, total) is called as clips
    finish. Raises WorldError when `out` holds a world made with other settings.
    """
    if workers < 1:
        raise WorldError(f"workers must be >= 1, got {workers}")
    speakers.check_installed()
    p = preset(preset_name, scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(p, seed)
    meta_path = out / "world.json"
    if meta_path.exists():
        try:
            previous = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise WorldError(f"{meta_path} is not valid JSON ({err.msg}); use an empty folder") from err
        if {k: previous.get(k) for k in settings} != settings:
            raise WorldError(
                f"{out} holds a world made with other settings (preset {previous.get('preset', {}).get('name')!r}, "
                f"seed {previous.get('seed')}); use an empty folder or the same --preset/--seed/--scale"
            )
        if previous.get("complete"):
            summary = json.loads((out / "stats.json").read_text())
            return Report(len(plan(p)), 0, 0.0, summary)
    _write_json(meta_path, {**settings, "complete": False})
    for split in SPLITS:
        (out / ".parts" / split).mkdir(parents=True, exist_ok=True)

    jobs = plan(p)
    todo = [j for j in jobs if not _is_done(out, j)]
    start = time.perf_counter()
    done = len(jobs) - len(todo)
    if progress:
        progress(done, len(jobs))
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    if workers == 1:
        for chunk in chunks:
            done += _run_chunk(str(out), seed, chunk)
            if progress:
                progress(done, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_chunk, str(out), seed, chunk) for chunk in chunks]
            try:
                for future in as_completed(futures):
                    done += future.result()
                    if progress:
                        progress(done, len(jobs))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # stop now; finished clips are kept for resume
                raise
    elapsed = time.perf_counter() - start
    for leftover in out.glob("audio/*/*/*.tmp"):  # files an interrupted run was writing
        leftover.unlink()

    summary = {}
    for split in SPLITS:
        split_jobs = [j for j in jobs if j.split == split]
        records = [
            json.loads((out / ".parts" / split / f"{j.id}.json").read_text("utf-8")) for j in split_jobs
        ]
        records += derived_records(seed, split, records, p.derived_counts(split))
        write_manifest(out / f"{split}.jsonl", records)
        summary[split] = stats.split_stats(records)
    _write_json(out / "stats.json", summary)
    shutil.rmtree(out / ".parts")
    _write_json(meta_path, {**settings, "complete": True})
    return Report(len(jobs), len(todo), elapsed, summary)


def derived_records(seed: int, split: str, records: list[dict], counts: dict[str, int]) -> list[dict]:
    """The conversation and preference records of `split`, seeded from (seed, split, kind) only."""
    out = []
    grouped = derived.pools(records)
    for kind, make in (("conversation", derived.conversation), ("preference", derived.preference)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_stream(split), _stream(kind))))
        for i in range(counts[kind]):
            out.append({"id": f"{split}-{kind}-{i:06d}", **make(rng, grouped)})
    return out
