"""One trainer per run folder: a second refuses with the holder's PID; a lock left by a dead trainer is taken over."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from train_data import base_config, make_beep_world, make_tokenizer_dir, write_yaml

from auralm.train.checkpointing import LOCK_FILE, RunLock, RunLocked
from auralm.train.config import load_config
from auralm.train.recipes import train

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

HOLDER = textwrap.dedent("""
    import sys
    from auralm.train.checkpointing import RunLock

    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the parent closes stdin
""")


class Holder:
    """Another process holding the run folder's lock."""

    def __init__(self, folder: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def __enter__(self) -> Self:
        assert self.proc.stdout.readline().strip() == "locked"
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def test_a_second_trainer_refuses_while_the_first_holds_the_folder(tmp_path):
    with Holder(tmp_path / "run") as holder:
        with pytest.raises(RunLocked, match=f"PID {holder.proc.pid}") as err:
            RunLock(tmp_path / "run").acquire()
        assert "another trainer" in str(err.value) and str(tmp_path / "run") in str(err.value)
    with RunLock(tmp_path / "run"):  # free once the first has finished
        pass


def test_a_lock_left_by_a_dead_trainer_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    with Holder(folder) as holder:
        holder.proc.kill()  # dies without releasing anything
        holder.proc.wait(30)
        dead = holder.proc.pid
    assert (folder / LOCK_FILE).read_text().strip() == str(dead)
    lock = RunLock(folder)
    lock.acquire()
    try:
        import os

        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert lock.taken_over_from == dead
    finally:
        lock.release()


def test_a_fake_stale_pid_in_the_lock_file_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("4194999\n")  # above any default pid_max: no such process
    with RunLock(folder) as lock:
        assert lock.taken_over_from == 4194999


def test_train_refuses_a_folder_another_trainer_holds(tmp_path):
    tok = make_tokenizer_dir(tmp_path / "tok")
    data = make_beep_world(tmp_path / "world", n_clips=4)
    out = tmp_path / "run"
    cfg = load_config(write_yaml(tmp_path / "cfg.yaml", base_config(out, tok, data, steps=1)))
    with Holder(out) as holder:
        with pytest.raises(RunLocked, match=f"PID {holder.proc.pid}"):
            train(cfg)
        assert not (out / "config.yaml").exists()  # refused before writing anything into the folder
    result = train(cfg)  # the folder is free again
    assert result.steps == 1
