"""GPTQ rounding (auralm.model.gptq, auralm.data.calibration, `auralm quantize --calibration`): the same int8 / int4
formats, codes chosen to keep each layer's outputs on calibration inputs."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from auralm.model.gptq import gptq_quantize, hessians
from auralm.model.quant import QuantLinear, quantize_int4, quantize_int8


def _dequantize(bits: int, q, s, z) -> torch.Tensor:
    if bits == 8:
        return q.float() * s.float()[:, None] + z.float()[:, None]
    N, G = s.shape
    return ((q.float().view(N, G, -1) - 8) * s.float()[..., None] + z.float()[..., None]).view(N, -1)


def _nearest(bits: int, w: torch.Tensor):
    return quantize_int8(w, torch.bfloat16) if bits == 8 else quantize_int4(w, 64, torch.bfloat16)


@pytest.mark.parametrize("bits", [8, 4])
def test_uncorrelated_inputs_give_round_to_nearest(bits):
    """With H = I no column's error can be compensated by another: GPTQ's codes are the nearest ones, exactly."""
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(0))
    got = gptq_quantize(w, torch.eye(256), bits, 64, torch.bfloat16)
    for a, b in zip(got, _nearest(bits, w)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bits", [8, 4])
def test_correlated_inputs_lower_the_output_error(bits):
    """On inputs with correlated features, GPTQ's ||X (W_q - W)^T||^2 is well below round-to-nearest's, with the
    same scales for int8 (each row's [min, max]) and codes in range."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 256, generator=g) * 0.05
    X = torch.randn(4000, 256, generator=g) @ torch.randn(256, 256, generator=g) * 0.2 + torch.randn(4000, 256, generator=g)
    lin = torch.nn.Linear(256, 64, bias=False)
    with hessians({"lin": lin}) as sums:  # the hook's H is the one a layer sees
        lin(X[:2500])
        lin(X[2500:])
    H, count = sums["lin"]
    assert count == 4000 and torch.allclose(H, X.T @ X, rtol=1e-4, atol=1e-2)
    q, s, z = gptq_quantize(w, H, bits, 64, torch.bfloat16)
    if bits == 8:
        assert torch.equal(s, _nearest(8, w)[1])
    else:
        assert int(q.max()) <= 15
    err_gptq = ((X @ (_dequantize(bits, q, s, z) - w).T) ** 2).mean()
    err_nearest = ((X @ (_dequantize(bits, *_nearest(bits, w)) - w).T) ** 2).mean()
    assert err_gptq < 0.85 * err_nearest, (float(err_gptq), float(err_nearest))


def test_cli_quantize_with_calibration(tmp_path, capsys):
    """`auralm quantize --calibration MANIFEST`: a folder in the usual quantized format, marked as GPTQ-rounded,
    whose logits on a held-out clip are closer to the float model's than round-to-nearest int4 ones."""
    pytest.importorskip("transformers")
    from test_quant import token_kl
    from tiny_hf import build_hf_checkpoint, speechlike

    import auralm
    from auralm.cli import main

    folder = build_hf_checkpoint(tmp_path / "hf", n_mels=80, n_kv_heads=2)
    rows = []
    for i in range(8):
        sf.write(tmp_path / f"c{i}.wav", speechlike(1.0 + 0.25 * i, seed=10 + i), 16000)
        rows.append({"id": f"r{i}", "task": "asr", "audios": [f"c{i}.wav"], "duration": 1.0 + 0.25 * i,
                     "language": "en", "text": "a b c d e"})
    manifest = tmp_path / "calib.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "q4"
    assert main(["quantize", "--model", str(folder), "--out", str(out), "--quantize", "int4-g32",
                 "--calibration", str(manifest), "--calibration-rows", "8"]) == 0
    assert "GPTQ rounding" in capsys.readouterr().out
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["rounding"] == "gptq" and qc["bits"] == 4 and qc["group_size"] == 32
    gptq = auralm.load(out)
    assert all(m.rounding == "gptq" for m in gptq.model.modules() if isinstance(m, QuantLinear))
    nearest = auralm.load(folder, quantize="int4-g32")
    ref = auralm.load(folder, dtype=torch.bfloat16)
    clip = (speechlike(1.7, seed=99), 16000)  # not a calibration clip
    inputs = ref.inputs([ref.conversation("Transcribe the speech.", audio=clip)])
    with torch.no_grad():
        base = ref.model(**inputs).logits[0]
        kl_gptq = token_kl(base, gptq.model(**inputs).logits[0]).mean()
        kl_nearest = token_kl(base, nearest.model(**inputs).logits[0]).mean()
    assert kl_gptq < 0.5 * kl_nearest, (float(kl_gptq), float(kl_nearest))  # measured 2.2e-3 against 8.7e-3


def test_cli_calibration_errors_name_the_problem(tmp_path, capsys):
    pytest.importorskip("transformers")
    from tiny_hf import build_hf_checkpoint

    from auralm.cli import main

    folder = build_hf_checkpoint(tmp_path / "hf", n_mels=80, n_kv_heads=2)
    assert main(["quantize", "--model", str(folder), "--out", str(tmp_path / "q"), "--calibration",
                 str(tmp_path / "missing.jsonl")]) != 0
    assert "missing.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "task": "preference"}\n')
    assert main(["quantize", "--model", str(folder), "--out", str(tmp_path / "q"), "--calibration", str(bad)]) != 0
    assert "bad.jsonl" in capsys.readouterr().err
