"""`auralm.load()` without a folder: infer's registry holds the default, the package root names the demo model."""

from __future__ import annotations

import hashlib

import pytest

import auralm
from auralm.demo.package import DELTA_NAME, SHIPPED_DIR, write_manifest
from auralm.infer import registry


def test_the_package_root_makes_the_demo_model_the_default(tmp_path, monkeypatch):
    if not (SHIPPED_DIR / DELTA_NAME).is_file():
        pytest.skip("this build ships no demo model")
    monkeypatch.setenv("AURALM_CACHE", str(tmp_path))
    digest = hashlib.sha256((SHIPPED_DIR / DELTA_NAME).read_bytes()).hexdigest()[:12]
    folder = tmp_path / f"demo-model-{digest}"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    write_manifest(folder)  # already assembled, and its check passes: nothing is built
    assert registry.default_model_dir() == folder


def test_load_opens_the_registered_default(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_provider", None)
    with pytest.raises(FileNotFoundError, match="pass a model folder"):
        auralm.load()
    registry.set_default_model(lambda: tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):  # the registered folder is the one opened
        auralm.load()
