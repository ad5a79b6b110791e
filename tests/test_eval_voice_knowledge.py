"""Voice-chat knowledge evaluation: scoring, sentence trimming, and a run of the command on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from train_data import base_config, make_beep_world, make_tokenizer_dir

from auralm.checkpoint.hf import save_audiolm
from auralm.eval.voice_knowledge import first_sentences, main, numeric_accuracy, score
from auralm.processor import Processor
from auralm.train.config import TrainConfig
from auralm.train.recipes import build_model


def test_score_exact_and_chrf():
    refs = ["Paris is the capital of France.", "Water boils at 100 degrees."]
    assert score(refs, ["paris is the capital of france", "Water boils at 100 degrees!"])["exact"] == 100.0
    same = score(refs, refs)
    assert same["exact"] == 100.0 and same["chrf"] > 99.9
    half = score(refs, ["paris, is the capital of france!", "It is cold."])
    assert half["exact"] == 50.0 and half["chrf"] < same["chrf"]


def test_numeric_accuracy_takes_the_last_number():
    rows = [{"answer": "42"}, {"answer": "7"}, {"answer": "3"}]
    assert numeric_accuracy(rows, ["Six times seven is 42.", "It is 8.", "3 minus 0 is 3"]) == 200.0 / 3


def test_first_sentences_keeps_two_and_ends_them():
    assert first_sentences("One. Two. Three.") == "One. Two."
    assert first_sentences("No stop at the end") == "No stop at the end."
    assert first_sentences("Line\nbreak. Done!") == "Line break. Done!"


def test_command_answers_every_general_question(tmp_path, capsys):
    world = make_beep_world(tmp_path / "world", n_clips=4)
    cfg = TrainConfig.from_dict(base_config(tmp_path / "run", make_tokenizer_dir(tmp_path / "tok"), world))
    folder = tmp_path / "model"
    processor = Processor.from_pretrained(tmp_path / "tok")
    save_audiolm(build_model(cfg, processor), folder)
    processor.save_pretrained(folder)
    rows = []
    for i, q in enumerate(["what is the capital of france", "why is the sky blue", "who wrote hamlet"]):
        path = tmp_path / f"q{i}.flac"
        sf.write(path, (0.1 * np.sin(np.arange(8000) * (0.05 + 0.01 * i))).astype(np.float32), 16000)
        rows.append({"id": f"q{i}", "task": "voice_chat", "kind": "general", "audios": [str(path)], "duration": 0.5,
                     "language": "en", "text_question": q, "answer": None})
    rows.append({**rows[0], "id": "arith", "kind": "arithmetic", "answer": "4"})  # not a general question
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "vk.json"
    assert main([str(folder), "--llm", str(folder), "--manifest", str(manifest), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["id"] for r in report["rows"]] == ["q0", "q1", "q2", "arith"]
    assert report["scores"]["numeric"]["rows"] == 1 and report["rows"][-1]["reference"] == "4"
    hit = float(numeric_accuracy([{"answer": "4"}], [report["rows"][-1]["answer"]]))
    assert report["scores"]["numeric"]["spoken_accuracy"] == hit
    assert report["scores"]["rows"] == 3 and 0.0 <= report["scores"]["chrf"] <= 100.0
    printed = capsys.readouterr().out
    assert "3 spoken general questions" in printed and "1 questions with a numeric answer" in printed
    assert main([str(folder), "--llm", str(folder), "--manifest", str(tmp_path / "missing.jsonl")]) == 2
