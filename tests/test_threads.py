"""The thread count is chosen deliberately: `load(threads=N)` sets it, and the default leaves the cores other
processes keep busy to them (issue 15, item 2)."""

from __future__ import annotations

import pytest
import torch
from tiny_hf import build_hf_checkpoint

from auralm.infer import threads
from auralm.infer.api import load


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_hf_checkpoint(tmp_path_factory.mktemp("threads"), n_mels=80, n_kv_heads=2)


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cpus, load_average, expected", [
    (2, 0.05, 2),  # a quiet 2-core machine: both cores
    (2, 0.9, 1),  # one other busy process: the core it leaves
    (2, 7.7, 1),  # a machine busy several times over: one thread, never zero
    (8, 3.2, 5),
])
def test_the_default_takes_the_cores_other_processes_leave_idle(monkeypatch, cpus, load_average, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load_average, 0.0, 0.0))
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", cpus)
    assert threads.default_threads() == expected


def test_the_default_never_exceeds_torchs_own_choice(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 16)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 8)  # e.g. physical cores of a machine with SMT
    assert threads.default_threads() == 8


def test_omp_num_threads_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 3)  # what torch read from it at import
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (50.0, 0.0, 0.0))
    assert threads.default_threads() == 3


def test_load_sets_the_threads_it_is_given(folder, keep_threads):
    load(folder, threads=1)
    assert torch.get_num_threads() == 1
    load(folder, threads=2)
    assert torch.get_num_threads() == 2


def test_load_without_threads_applies_the_default(folder, keep_threads, monkeypatch):
    monkeypatch.setattr(threads, "default_threads", lambda: 1)
    torch.set_num_threads(2)
    load(folder)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_a_bad_thread_count_is_refused_before_loading(bad, tmp_path):
    with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
        load(tmp_path / "not-loaded", threads=bad)
