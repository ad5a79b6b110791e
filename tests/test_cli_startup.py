"""The `auralm` command answers at once: --help, usage errors and bad files come back before torch is imported,
and `python -m auralm` is the same command (issue 15, items 1 and 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from auralm.cli import main

START_UP_SECONDS = 1.5  # the target for --help and argument/file errors


def auralm(*argv: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the command in a fresh interpreter, as the console script does (`auralm.cli:main`); the best wall time
    of three runs, so another process's burst on a shared machine does not decide the result."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    code = "import sys; from auralm.cli import main; sys.exit(main())"
    best, proc = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, *argv], check=False, capture_output=True, text=True,
                              env=env)
        best = min(best, time.perf_counter() - start)
        if best < START_UP_SECONDS:
            break
    return proc, best


def test_importing_the_cli_imports_neither_torch_nor_numpy():
    probe = (
        "import sys, auralm.cli; auralm.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'soundfile', 'av') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_api_still_imports_on_first_use():
    probe = (
        "import sys, auralm; assert 'torch' not in sys.modules; "
        "from auralm import AudioLM, load; from auralm.model.audiolm import AudioLM as deep; "
        "assert deep is AudioLM and hasattr(deep, 'from_pretrained') and hasattr(deep, 'generate'); "
        "assert callable(auralm.load) and auralm.GenerationConfig and auralm.Processor and auralm.load_audio; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"


def test_the_public_class_has_the_bindings_whichever_module_loads_the_model_first():
    # checkpoint.hf loads the model module first; the public name still carries transformers' entry points, and the
    # bindings module is an ordinary import (no hook runs code when the model module loads).
    probe = (
        "import sys; from auralm.checkpoint.hf import load_audiolm; from auralm.model.audiolm import AudioLM as deep; "
        "assert 'auralm.bindings' not in sys.modules; from auralm import AudioLM; "
        "print(AudioLM is deep, all(hasattr(AudioLM, m) for m in ('from_pretrained', 'save_pretrained', 'generate')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True True"


def test_help_answers_at_once():
    proc, seconds = auralm("--help")
    assert proc.returncode == 0 and "usage: auralm" in proc.stdout
    assert seconds < START_UP_SECONDS, f"auralm --help took {seconds:.2f} s"


@pytest.mark.parametrize("argv, message", [
    (["transcribe", "/no/such/clip.wav"], "audio file /no/such/clip.wav does not exist"),
    (["transcribe", "--threads", "0", "clip.wav"], "argument --threads: expected a whole number >= 1, got 0"),
    (["chat", "--audio", "/no/such/clip.wav", "hi"], "audio file /no/such/clip.wav does not exist"),
    (["chat", "--model", "/no/such/model", "hi"], "model folder /no/such/model does not exist"),
    (["info", "/no/such/model"], "model folder /no/such/model does not exist"),
    (["demo", "--model", "/no/such/model"], "model folder /no/such/model does not exist"),
    (["serve", "--model", "/no/such/model"], "model folder /no/such/model does not exist"),
    (["eval", "--suite", "synthetic", "--data", "/no/such/world"], "data folder /no/such/world does not exist"),
])
def test_argument_and_file_errors_answer_at_once(argv, message):
    proc, seconds = auralm(*argv)
    assert proc.returncode != 0 and message in proc.stderr
    assert seconds < START_UP_SECONDS, f"auralm {' '.join(argv)} took {seconds:.2f} s"


def test_python_dash_m_auralm_is_the_auralm_command():
    proc = subprocess.run([sys.executable, "-m", "auralm", "--version"], check=False, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("auralm ")
    proc = subprocess.run([sys.executable, "-m", "auralm", "transcribe", "/no/such/clip.wav"], check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


@pytest.mark.parametrize("path, message", [
    ("/tmp", "/tmp is a directory"),
    ("/dev/zero", "/dev/zero is not a regular file"),
])
def test_a_path_that_is_no_audio_file_says_what_it_is(capsys, path, message):
    for argv in (["transcribe", path], ["chat", "--audio", path, "hi"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and "does not exist" not in err


def test_the_help_names_the_librarys_audio_limit():
    from auralm.audio import DEFAULT_MAX_SECONDS
    from auralm.cli import LIBRARY_MAX_MINUTES

    assert LIBRARY_MAX_MINUTES * 60 == DEFAULT_MAX_SECONDS


def test_the_synth_help_names_the_worlds_presets():
    from auralm.synth import world
    from auralm.synth.cli import PRESET_NAMES

    assert sorted(PRESET_NAMES) == sorted(world.PRESETS)


@pytest.mark.parametrize("command", ["transcribe", "chat", "demo", "eval", "serve"])
def test_every_model_command_takes_threads(command):
    from auralm.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert "--threads" in sub._option_string_actions
