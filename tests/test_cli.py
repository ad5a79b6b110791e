"""The CLI as a new user meets it: every command answers, errors are one clear line with a non-zero exit code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tiny_hf import build_hf_checkpoint, speechlike

from auralm.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_hf_checkpoint(tmp_path_factory.mktemp("cli"), n_mels=80, n_kv_heads=2)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    sf.write(path, speechlike(2.5, seed=9), 16000)
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("auralm: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", [[], ["transcribe"], ["chat"], ["info"]])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: auralm" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "COMMAND" in out


def test_info(capsys, folder):
    code, out, _ = run(capsys, "info", str(folder))
    assert code == 0
    assert "parameters:" in out and "float32" in out and "2 layers x 48" in out


def test_transcribe_formats(capsys, folder, wav):
    code, txt, _ = run(capsys, "transcribe", str(wav), "--model", str(folder), "--language", "en", "--quiet")
    assert code == 0
    code, out, _ = run(capsys, "transcribe", str(wav), "--model", str(folder), "--language", "en", "--format", "json",
                       "--quiet")
    assert code == 0 and set(json.loads(out)) == {"text", "language", "segments"}
    assert txt == json.loads(out)["text"] + "\n"  # txt prints the same (greedy) transcript as the JSON's text
    code, out, _ = run(capsys, "transcribe", str(wav), "--model", str(folder), "--format", "vtt", "--quiet")
    assert code == 0 and out.startswith("WEBVTT")


def test_chat_with_prompt(capsys, folder, wav):
    code, out, _ = run(capsys, "chat", "What's that sound?", "--audio", str(wav), "--model", str(folder),
                       "--max-new-tokens", "5")
    assert code == 0 and out.endswith("\n")


def test_missing_file(capsys, folder):
    code, _, err = run(capsys, "transcribe", "/no/such/file.wav", "--model", str(folder))
    assert code == 1 and "does not exist" in one_error_line(err)


def test_corrupt_file(capsys, folder, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    code, _, err = run(capsys, "transcribe", str(bad), "--model", str(folder))
    assert code == 1 and "bad.wav" in one_error_line(err)


def test_wrong_folder(capsys, tmp_path, wav):
    code, _, err = run(capsys, "info", str(tmp_path))
    assert code == 1 and "config.json" in one_error_line(err)
    code, _, err = run(capsys, "chat", "hi", "--model", str(tmp_path / "missing"))
    assert code == 1 and "does not exist" in one_error_line(err)


def test_bad_config_json(capsys, tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    code, _, err = run(capsys, "info", str(tmp_path))
    assert code == 1 and "not valid JSON" in one_error_line(err)


def test_interactive_chat(monkeypatch, capsys, folder, wav):
    lines = iter(["/audio " + str(wav), "/audio /missing.wav", "/what", "Describe the audio in detail.", "/reset", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    code, out, _ = run(capsys, "chat", "--model", str(folder), "--max-new-tokens", "3")
    assert code == 0
    assert "attached" in out and "no such file" in out and "unknown command" in out and "conversation cleared" in out
    assert "assistant>" in out


@pytest.mark.parametrize(("flags", "threshold", "compiles"), [
    ([], 3600.0, False),  # the default: a 2.5 s clip is a short job
    ([], 1.0, True),  # the default, the job counted long
    (["--no-compile"], 1.0, False),
])
def test_transcribe_compiles_only_long_jobs_by_default(capsys, monkeypatch, folder, wav, flags, threshold, compiles):
    """`auralm transcribe` turns the compiled step on by default when its files' audio reaches
    LONG_JOB_AUDIO_SECONDS and compiling pays, then transcribes as before; --no-compile never does."""
    from auralm.infer import compiled, long_jobs
    from auralm.infer.api import AudioChat

    calls = []
    monkeypatch.setattr(long_jobs, "LONG_JOB_AUDIO_SECONDS", threshold)
    monkeypatch.setattr(compiled, "compile_pays", lambda model: (True, "test"))
    monkeypatch.setattr(AudioChat, "use_compiled_decode", lambda self, warm=None: calls.append(warm))
    code, _, err = run(capsys, "transcribe", str(wav), "--model", str(folder), "--quiet", *flags)
    assert code == 0, err
    assert (len(calls) == 1) is compiles and ("compiling the decode step for 0 min of audio" in err) is compiles


def test_compile_switches_take_no_value(folder, wav):
    """`--compile` / `--no-compile` are switches: a file or prompt after them stays a file or prompt."""
    from auralm.cli import build_parser

    parse = build_parser().parse_args
    args = parse(["transcribe", "--compile", str(wav)])
    assert args.compile is True and args.files == [str(wav)]
    assert parse(["transcribe", str(wav)]).compile is None  # long jobs only
    assert parse(["transcribe", "--no-compile", str(wav)]).compile is False
    args = parse(["chat", "--compile", "hi"])
    assert args.compile is True and args.prompt == "hi" and parse(["chat", "hi"]).compile is False
    assert parse(["eval", "--suite", "synthetic", "--data", "d"]).compile is None
    assert parse(["eval", "--suite", "synthetic", "--data", "d", "--no-compile"]).compile is False
