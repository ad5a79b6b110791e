"""The assembled demo model is checked before use (issue 16.7): a truncated or same-size-corrupted file, a missing
one, or a folder from before the manifest gets the folder rebuilt with a line saying why; a rebuild that fails
names the folder to delete.

Assembly is the real `assemble` over a tiny model (its `build_base` replaced), so each rebuild takes a moment.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from safetensors.torch import save_file
from tiny_hf import build_hf_checkpoint

from auralm.checkpoint.hf import load_audiolm
from auralm.demo import locate, package
from auralm.processor import Processor


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return build_hf_checkpoint(tmp_path_factory.mktemp("tiny-base"), n_mels=80, n_kv_heads=2, seed=0)


@pytest.fixture
def demo(tiny_base, tmp_path, monkeypatch):
    """A shipped folder with an empty delta, the cache under tmp_path, and `builds` counting assemblies."""
    ship = tmp_path / "ship"
    ship.mkdir()
    save_file({}, str(ship / package.DELTA_NAME))
    (ship / package.META_NAME).write_text(json.dumps({"lora_scalings": [], "prompts": {"asr_prompt": "X"}}))
    builds = []

    def build_base():
        if builds and builds[-1] == "fail":
            raise OSError("no network")
        builds.append("built")
        return load_audiolm(tiny_base), Processor.from_pretrained(tiny_base)

    real_assemble = package.assemble
    monkeypatch.setattr(package, "build_base", build_base)
    monkeypatch.setattr(locate, "SHIPPED_DIR", ship)
    monkeypatch.setattr(locate, "assemble", lambda folder, shipped=None: real_assemble(folder, ship))
    monkeypatch.setattr(locate, "_HASHED", set(), raising=False)  # a process that has checked nothing yet
    monkeypatch.setenv("AURALM_CACHE", str(tmp_path / "cache"))
    return builds


def weights(folder: Path) -> Path:
    return next(folder.glob("*.safetensors"))


def new_process(monkeypatch) -> None:
    monkeypatch.setattr(locate, "_HASHED", set(), raising=False)


def test_a_fresh_assembly_records_and_passes_its_check(demo, monkeypatch):
    folder = locate.demo_model_dir()
    files = json.loads((folder / package.MANIFEST_NAME).read_text())["files"]
    assert {"config.json", "tokenizer.json", "auralm.json", weights(folder).name} <= set(files)
    assert all(len(f["sha256"]) == 64 and f["bytes"] == (folder / n).stat().st_size for n, f in files.items())
    assert locate.demo_model_dir() == folder
    new_process(monkeypatch)
    assert locate.demo_model_dir() == folder and demo == ["built"]  # a full check passes: nothing is rebuilt


def test_a_truncated_file_is_rebuilt(demo, caplog):
    folder = locate.demo_model_dir()
    good = weights(folder).read_bytes()
    with open(weights(folder), "r+b") as f:
        f.truncate(len(good) // 2)
    with caplog.at_level(logging.WARNING, logger="auralm.demo"):
        assert locate.demo_model_dir() == folder  # the same process: sizes are checked on every call
    assert demo == ["built", "built"]
    assert weights(folder).read_bytes() == good
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(folder) in line
    assert f"{weights(folder).name} is {len(good) // 2} bytes, {len(good)} expected" in line


def test_same_size_corruption_is_found_by_the_hash_and_rebuilt(demo, monkeypatch, caplog):
    folder = locate.demo_model_dir()
    good = weights(folder).read_bytes()
    with open(weights(folder), "r+b") as f:  # flip bytes in the tensor data, past the header
        f.seek(len(good) - 64)
        f.write(bytes(b ^ 0xFF for b in good[-64:]))
    assert weights(folder).stat().st_size == len(good)
    new_process(monkeypatch)  # the first call in a process hashes every file
    with caplog.at_level(logging.WARNING, logger="auralm.demo"):
        assert locate.demo_model_dir() == folder
    assert demo == ["built", "built"]
    assert weights(folder).read_bytes() == good
    assert "does not match the sha256" in caplog.records[0].getMessage()


def test_a_missing_file_is_rebuilt(demo):
    folder = locate.demo_model_dir()
    (folder / "tokenizer.json").unlink()
    locate.demo_model_dir()
    assert demo == ["built", "built"] and (folder / "tokenizer.json").is_file()


def test_a_folder_from_before_the_manifest_is_rebuilt_once(demo, monkeypatch, caplog):
    folder = locate.demo_model_dir()
    (folder / package.MANIFEST_NAME).unlink()  # as an older auralm left it
    new_process(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="auralm.demo"):
        locate.demo_model_dir()
    assert "assembled by an older auralm" in caplog.records[0].getMessage()
    new_process(monkeypatch)
    locate.demo_model_dir()
    assert demo == ["built", "built"] and (folder / package.MANIFEST_NAME).is_file()


def test_a_failed_rebuild_names_the_folder_to_delete(demo):
    folder = locate.demo_model_dir()
    with open(weights(folder), "r+b") as f:
        f.truncate(100)
    demo.append("fail")  # the next build_base raises, as when the pinned packages cannot be fetched
    with pytest.raises(RuntimeError) as err:
        locate.demo_model_dir()
    message = str(err.value)
    assert f"delete the folder {folder}" in message and "no network" in message and "100 bytes" in message
