import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def voice_engines() -> None:
    """Skip unless every voice engine of the synthetic world is installed (flite, festival and its two voices,
    onnxruntime + onnx and the pinned piper voice, hibari-tts and its checked voice); scripts/test.sh, run by
    .ci/run, installs them all."""
    from auralm.synth import speakers

    try:
        speakers.check_installed()
    except RuntimeError as err:  # also AssetUnavailableError: the piper voice could not be fetched
        pytest.skip(f"a voice engine of the synthetic world is missing: {err}")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): a tiny model's ops
    take microseconds, and two threads on a shared 2-core machine make them 20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
