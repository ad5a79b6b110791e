import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def voice_engines() -> None:
    """Skip unless every voice engine of the synthetic world is installed (flite, festival and its two voices,
    onnxruntime + onnx and the pinned piper voice); scripts/test.sh, run by .ci/run, installs them all."""
    from auralm.synth import speakers

    try:
        speakers.check_installed()
    except RuntimeError as err:  # also AssetUnavailableError: the piper voice could not be fetched
        pytest.skip(f"a voice engine of the synthetic world is missing: {err}")
