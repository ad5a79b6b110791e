"""A disk cache of frozen-encoder outputs: when the encoder does not train, each clip is encoded once.

The cache stores what `model.audio_tower` returns for each 30 s window of a clip (pooled, normalised, before the
projector), so the projector and everything after it still train. Entries are keyed by the audio file (absolute
path, size, mtime) inside a folder named by a fingerprint of the encoder's weights and the mel settings: a
different encoder, or an edited file, never reads a stale entry. Files are written atomically (temp + rename), so
concurrent ranks and killed runs leave only complete entries.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from auralm.audio.chunking import split_audio
from auralm.data.dataset import DataError, TrainingDataset


def encoder_fingerprint(model: torch.nn.Module) -> str:
    """SHA-1 of the encoder's weights, their dtype and the mel bins: equal fingerprints mean equal outputs."""
    h = hashlib.sha1()
    tower = model.audio_tower
    h.update(f"n_mels={tower.cfg.n_mels}".encode())
    for name, t in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EncoderCache:
    """Per-clip encoder outputs under `folder/<fingerprint>/`; `load(path)` -> list of (N_w, De) per window."""

    def __init__(self, folder: str | Path, fingerprint: str, dtype: torch.dtype = torch.float32):
        self.folder = Path(folder) / fingerprint[:16]
        self.dtype = dtype

    def _file(self, audio: str) -> Path:
        st = os.stat(audio)
        key = hashlib.sha1(f"{Path(audio).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.safetensors"

    def has(self, audio: str) -> bool:
        return self._file(audio).is_file()

    def load(self, audio: str) -> list[torch.Tensor]:
        path = self._file(audio)
        if not path.is_file():
            raise DataError(f"the encoder cache has no entry for {audio}; fill it first (fill_cache)")
        tensors = load_file(str(path))
        return [tensors[f"window_{i}"] for i in range(len(tensors))]

    def store(self, audio: str, windows: list[torch.Tensor]) -> None:
        path = self._file(audio)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({f"window_{i}": w.to(self.dtype).contiguous() for i, w in enumerate(windows)}, str(tmp))
        os.replace(tmp, path)


def fill_cache(
    cache: EncoderCache,
    dataset: TrainingDataset,
    model: torch.nn.Module,
    rank: int = 0,
    world_size: int = 1,
    max_windows: int = 16,
    progress: bool = False,
) -> int:
    """Encode every clip of `dataset` missing from the cache (this rank's share); returns how many were encoded."""
    seconds: dict[str, float] = {}
    for ex in dataset.examples:
        for a in ex.audios:
            seconds[a] = (ex.duration or 0.0) / len(ex.audios)
    return encode_clips(cache, dataset.processor, model, seconds, rank, world_size, max_windows, progress)


@torch.no_grad()
def encode_clips(
    cache: EncoderCache,
    processor,
    model: torch.nn.Module,
    seconds: dict[str, float],
    rank: int = 0,
    world_size: int = 1,
    max_windows: int = 16,
    progress: bool = False,
) -> int:
    """Encode the audio files of `seconds` (path -> approximate length, for sorting) missing from the cache, this
    rank's share; returns how many were encoded.

    Clips are sorted by length and encoded `max_windows` windows at a time, so padding stays small.
    """
    audios = sorted(seconds)  # the same order on every rank, so the shares do not overlap
    todo = [a for i, a in enumerate(audios) if i % world_size == rank and not cache.has(a)]
    todo.sort(key=lambda a: seconds[a])
    if not todo:
        return 0
    was_training = model.training
    model.eval()
    tower = model.audio_tower
    device = next(tower.parameters()).device
    bar = _progress(len(todo), progress)
    for chunk in _chunks(todo, max_windows):
        waves = [processor.prepare_audio(a) for a in chunk]
        feats, mask, _ = processor.features(waves)  # (Nw, M, F), (Nw, F)
        lengths = mask.sum(-1)  # (Nw,)
        hidden, n_out = tower(
            feats.to(device=device, dtype=tower.conv1.weight.dtype), lengths.to(device)
        )  # (Nw, A', De)
        windows = [hidden[w, : int(n_out[w])].cpu() for w in range(hidden.shape[0])]
        # processor.features lists the windows clip by clip; give each clip its own.
        i = 0
        for audio, wave in zip(chunk, waves):
            k = len(split_audio(wave))
            cache.store(audio, windows[i : i + k])
            i += k
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return len(todo)


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


def _progress(total: int, enabled: bool) -> tqdm:
    return tqdm(total=total, desc="encoding audio for the cache", unit="clip", disable=not enabled)
