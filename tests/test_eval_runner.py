"""The evaluation runner end to end on the synthetic world and a tiny random checkpoint: the suite runs and
reports, a perfect predictor scores perfectly (the plumbing from record to prompt to reference to metric is
consistent), a SIGKILLed run resumes without recomputing finished items, bad manifest lines and bad audio are
reported and skipped, and torchrun-style shards merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from train_data import make_tokenizer_dir

from auralm import AudioLM
from auralm.cli import main
from auralm.config import preset
from auralm.eval import runner, suites
from auralm.eval.metrics import cider
from auralm.eval.runner import ModelPredictor, RunConfig, evaluate
from auralm.infer.api import load
from auralm.processor import Processor
from auralm.synth import world

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth_world(tmp_path_factory, voice_engines) -> Path:
    out = tmp_path_factory.mktemp("world")
    world.generate(out, "tiny", seed=0, workers=2, scale=0.5)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = make_tokenizer_dir(tmp_path_factory.mktemp("model"))
    cfg = preset("tiny")
    cfg.audio_token_id = Processor.from_pretrained(folder).audio_token_id
    torch.manual_seed(0)
    AudioLM(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat(model_dir):
    return load(model_dir)


def _records(synth_world: Path) -> list[dict]:
    return [json.loads(line) for line in (synth_world / "test.jsonl").read_text().splitlines()]


def oracle(task, items):
    """A perfect model: it generates each record's reference, minus what the prompt already forces."""
    return [task.ideal_output(it.record) for it in items]


def test_a_perfect_predictor_scores_perfectly_in_every_convention(synth_world, tmp_path):
    for style in ("nl", "tags", "chatml"):
        tasks = suites.synthetic_suite(style)
        results = {r.task.name: r for r in evaluate(tasks, oracle, RunConfig(synth_world, tmp_path / style))}
        assert all(r.status == "scored" for r in results.values()), {n: r.error for n, r in results.items()}
        v = {name: r.scores.values for name, r in results.items()}
        assert v["asr"]["wer"] == 0.0 and v["asr"]["reference_units"] > 0
        assert v["s2tt"]["bleu"] == pytest.approx(100.0)
        # The model writes times on a 10 ms grid: the shift left is rounding (at most 5 ms per boundary).
        assert 0 <= v["srwt"]["aas_ms"] <= 10.0 and v["srwt"]["wer"] == 0.0 and v["srwt"]["unparsed"] == 0
        for name in ("lid", "sound_event", "scene", "aqa", "voice_chat", "mixed", "conversation", "speaker"):
            assert v[name]["accuracy"] == 100.0, (style, name)
        assert v["note"]["instrument_accuracy"] == v["note"]["pitch_accuracy"] == 100.0
        assert v["note"]["velocity_accuracy"] == 100.0
        # CIDEr-D's IDF comes from the corpus itself (one caption clip here), so compare with the metric directly.
        captions = [r["captions"] for r in _records(synth_world) if r["task"] == "caption"]
        assert v["caption"]["cider"] == pytest.approx(cider(captions, [c[0] for c in captions]))
        assert (v["note"]["qualities_map"] is not None) == (style == "tags")
        # The voice-chat task keeps only records with an answer; general questions (answer null) need a judge.
        answered = [r for r in _records(synth_world) if r["task"] == "voice_chat" and r["answer"] is not None]
        assert results["voice_chat"].count == len(answered) > 0


def test_scores_fall_when_the_answers_are_wrong(synth_world, tmp_path):
    def shifted(task, items):  # every item gets the reference of the next one
        answers = oracle(task, items)
        return answers[1:] + answers[:1]

    tasks = [t for t in suites.synthetic_suite("nl") if t.name in ("asr", "s2tt", "aqa")]
    results = {
        r.task.name: r.scores.values for r in evaluate(tasks, shifted, RunConfig(synth_world, tmp_path, 64))
    }
    assert results["asr"]["wer"] > 30 and results["s2tt"]["bleu"] < 60 and results["aqa"]["accuracy"] < 100


def test_cli_runs_the_synthetic_suite_and_resumes_without_work(synth_world, model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["eval", "--model", str(model_dir), "--suite", "synthetic", "--data", str(synth_world), "--out", str(out),
            "--max-new-tokens", "3", "--batch-size", "4", "--limit", "2", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert set(report["tasks"]) == {t.name for t in suites.synthetic_suite()}
    assert report["config"]["model"] == str(model_dir.resolve()) and report["config"]["suite"] == "synthetic"
    assert (
        report["config"]["generation"]["do_sample"] is False
        and report["config"]["generation"]["min_new_tokens"] == 1
    )
    assert report["auralm_version"]
    records = _records(synth_world)
    for task in suites.synthetic_suite():
        entry = report["tasks"][task.name]
        expected = min(2, sum(task.selects(r) for r in records))
        assert entry["status"] == "scored" and entry["count"] == expected, (task.name, entry)
        assert entry["primary"] in entry["scores"] and entry["settings"]["style"] in ("nl", "chatml")
        assert "<|audio_bos|><|AUDIO|><|audio_eos|>" in entry["example_prompt"]
        lines = (out / "predictions" / f"{task.name}.jsonl").read_text().splitlines()
        assert len(lines) == expected
    assert report["tasks"]["lid"]["value"] == 0.0  # a random model knows nothing
    assert (out / "report.md").read_text().count("\n| ") >= 13 and "| asr | wer ↓ |" in printed
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = {p.name: p.read_bytes() for p in (out / "predictions").iterdir()}
    assert main(argv + ["--compare", str(out / "report.json")]) == 0
    assert {p.name: p.read_bytes() for p in (out / "predictions").iterdir()} == before  # nothing recomputed
    comparison = (out / "comparison.md").read_text()
    assert "| asr | wer ↓ |" in comparison and "| = |" in comparison
    capsys.readouterr()

    # Resuming into a folder that holds another run's predictions is refused, in one line.
    assert main(argv[:-1] + ["--quiet", "--max-new-tokens", "5"]) == 1
    err = capsys.readouterr().err
    assert "holds predictions of another run" in err and err.count("\n") == 1


KILLABLE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from auralm.eval import runner, suites
    from auralm.infer.api import load

    model, data, out, calls = sys.argv[1:5]
    chat = load(model)
    generate = chat.generate_texts

    def counted(inputs, cfg, skip_special_tokens=True):
        texts = generate(inputs, cfg, skip_special_tokens)
        with open(calls, "a") as f:
            f.write(f"{len(texts)}\\n")
        time.sleep(0.4)  # time for the test to kill this process between batches
        return texts

    chat.generate_texts = counted
    tasks = [t for t in suites.synthetic_suite() if t.name in ("asr", "s2tt", "aqa")]
    runner.evaluate(tasks, runner.ModelPredictor(chat, max_new_tokens=3), runner.RunConfig(Path(data), Path(out), 1))
""")


@pytest.mark.slow
def test_a_killed_evaluation_resumes_without_recomputing(synth_world, model_dir, chat, tmp_path):
    script, out, calls = tmp_path / "run.py", tmp_path / "out", tmp_path / "calls.txt"
    script.write_text(KILLABLE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(model_dir), str(synth_world), str(out), str(calls)],
                            env=env, stderr=subprocess.PIPE)  # fmt: skip
    asr_file = out / "predictions" / "asr.jsonl"
    deadline = time.monotonic() + 90
    while not (asr_file.is_file() and len(asr_file.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the evaluation made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()

    tasks = [t for t in suites.synthetic_suite() if t.name in ("asr", "s2tt", "aqa")]
    cfg = RunConfig(synth_world, out, 1)
    items = {t.name: runner.load_items(t, synth_world)[0] for t in tasks}
    total = sum(len(v) for v in items.values())
    saved = {t.name: runner.read_entries(runner.prediction_files(cfg.predictions_dir, t.name)) for t in tasks}
    finished = sum(len(v) for v in saved.values())
    assert 2 <= finished < total  # killed mid-run

    predictor = ModelPredictor(chat, max_new_tokens=3)
    seen: list[str] = []

    def counting(task, batch):
        seen.extend(it.id for it in batch)
        return predictor(task, batch)

    results = evaluate(tasks, counting, cfg)
    assert len(seen) == total - finished  # only the unfinished items ran again
    assert not set(seen) & {key for v in saved.values() for key in v}
    for task in tasks:
        entries = runner.read_entries(runner.prediction_files(cfg.predictions_dir, task.name))
        assert set(entries) == {it.id for it in items[task.name]}
        for key, entry in saved[task.name].items():
            assert entries[key]["prediction"] == entry["prediction"]  # the first run's answers are kept
        lines = (cfg.predictions_dir / f"{task.name}.jsonl").read_text().splitlines()
        assert len(lines) == len(items[task.name])  # one line per item: nothing written twice
    assert all(r.status == "scored" and r.count == len(items[r.task.name]) for r in results)


def test_malformed_manifest_lines_and_bad_audio_are_reported_and_skipped(synth_world, chat, tmp_path):
    lines = (synth_world / "test.jsonl").read_text().splitlines()
    asr = [json.loads(line) for line in lines if json.loads(line)["task"] == "asr"]
    broken = dict(asr[1], audios=[str(tmp_path / "missing.flac")])  # valid line, audio not there
    rows = [json.dumps(asr[0]), "{not json", json.dumps({**asr[2], "text": 7}), json.dumps(broken),
            json.dumps({k: v for k, v in asr[3].items() if k != "duration"})]  # fmt: skip
    manifest = tmp_path / "mixed-up.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    for rel in {p for r in asr for p in r["audios"]}:  # audio paths in the world are relative to its folder
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).symlink_to(synth_world / rel)
    task = suites.Task("asr", str(manifest), "wer", record_task="asr", max_new_tokens=2)
    (result,) = evaluate([task], ModelPredictor(chat), RunConfig(tmp_path, tmp_path / "out", 8))
    assert result.status == "scored" and result.count == 1
    assert [e.split(": ")[0].rsplit(":", 1)[1] for e in result.manifest_errors] == ["2", "3", "5"]
    assert "text" in result.manifest_errors[1] and "duration" in result.manifest_errors[2]
    assert (
        len(result.failed) == 1
        and result.failed[0].startswith(broken["id"])
        and "missing.flac" in result.failed[0]
    )
    # The failed item is retried on the next run (an error line is not a finished prediction).
    (again,) = evaluate([task], ModelPredictor(chat), RunConfig(tmp_path, tmp_path / "out", 8))
    assert again.count == 1 and len(again.failed) == 1


def test_shards_of_a_torchrun_job_merge_and_a_torn_line_is_repaired(synth_world, tmp_path):
    tasks = [t for t in suites.synthetic_suite() if t.name in ("asr", "aqa")]
    calls: list[tuple[int, str]] = []

    def by_rank(rank):
        def predict(task, items):
            calls.extend((rank, it.id) for it in items)
            return oracle(task, items)

        return predict

    # Rank 1 first: without a process group there is no barrier, and rank 0 merges once it is done.
    evaluate(tasks, by_rank(1), RunConfig(synth_world, tmp_path, 2, rank=1, world_size=2))
    shards = sorted(p.name for p in (tmp_path / "predictions").iterdir())
    assert shards == ["aqa.rank1.jsonl", "asr.rank1.jsonl"]
    results = evaluate(tasks, by_rank(0), RunConfig(synth_world, tmp_path, 2, rank=0, world_size=2))
    ids = [i for _, i in calls]
    assert len(ids) == len(set(ids)) == sum(r.count for r in results)  # each item ran on exactly one rank
    assert {r for r, _ in calls} == {0, 1}
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["aqa.jsonl", "asr.jsonl"]
    assert [r.scores.value for r in results] == [0.0, 100.0]

    # A later one-process run finds everything done.
    calls.clear()
    evaluate(tasks, by_rank(0), RunConfig(synth_world, tmp_path, 2))
    assert calls == []

    # A kill in the middle of a write leaves half a line: it is cut off and that item runs again.
    path = tmp_path / "predictions" / "asr.jsonl"
    text = path.read_text()
    last = text.splitlines()[-1]
    path.write_text(text[: -len(last) - 1] + last[: len(last) // 2])
    evaluate(tasks, by_rank(0), RunConfig(synth_world, tmp_path, 2))
    assert calls == [(0, json.loads(last)["id"])]
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()][-1] == json.loads(last)["id"]


def test_paper_suites_list_what_is_not_imported(tmp_path):
    results = evaluate(suites.suite("qwen2-audio"), oracle, RunConfig(tmp_path, tmp_path / "out"))
    assert {r.status for r in results} == {"missing"}
    assert results[0].manifest.endswith("librispeech/dev-clean.jsonl")


def test_eval_compiles_the_decode_step_for_long_runs_only(synth_world, model_dir, tmp_path, monkeypatch, capsys):
    """`auralm eval` turns the compiled step on by default when the run selects LONG_JOB_ITEMS items or more and
    compiling pays; a shorter run, or --no-compile, decodes eagerly."""
    from auralm.infer import compiled, long_jobs
    from auralm.infer.api import AudioChat

    calls = []
    monkeypatch.setattr(compiled, "compile_pays", lambda model: (True, "test"))
    monkeypatch.setattr(AudioChat, "use_compiled_decode", lambda self, warm=None: calls.append(warm))
    argv = ["eval", "--model", str(model_dir), "--suite", "synthetic", "--data", str(synth_world), "--tasks", "asr",
            "--max-new-tokens", "2", "--limit", "2", "--quiet"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0 and calls == []  # 2 items: short
    monkeypatch.setattr(long_jobs, "LONG_JOB_ITEMS", 2)
    assert main([*argv, "--out", str(tmp_path / "b"), "--no-compile"]) == 0 and calls == []
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0 and len(calls) == 1
    assert "compiling the decode step for 2 items" in capsys.readouterr().err
