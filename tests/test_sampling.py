"""Sampling never raises on a row's numbers: tiny temperatures, tiny penalties and non-finite logits give a token."""

from __future__ import annotations

import pytest
import torch

from auralm.infer.sampling import GREEDY_BELOW_TEMPERATURE, GenerationConfig, choose, process_logits

V = 50


def logits(seed: int = 0) -> torch.Tensor:
    return torch.randn(V, generator=torch.Generator().manual_seed(seed)) * 8  # (V,) float32, both signs


@pytest.mark.parametrize("temperature", [1e-37, 1e-45, 1e-300, 5e-324, GREEDY_BELOW_TEMPERATURE / 2])
def test_a_tiny_temperature_chooses_the_greedy_token(temperature):
    row = logits(1)
    cfg = GenerationConfig(do_sample=True, temperature=temperature)
    for seed in range(5):
        assert choose(row, cfg, torch.Generator().manual_seed(seed)) == int(row.argmax())


@pytest.mark.parametrize("temperature", [GREEDY_BELOW_TEMPERATURE, 1e-3, 0.05])
def test_a_small_temperature_above_the_floor_samples_without_overflow(temperature):
    row = logits(2)
    row[7] = 3e38  # near float32's largest finite value: dividing it by the temperature overflows unless shifted
    cfg = GenerationConfig(do_sample=True, temperature=temperature, top_p=0.9, top_k=10)
    assert choose(row, cfg, torch.Generator().manual_seed(0)) == 7


def test_ordinary_temperatures_draw_as_before():
    """The shift by the row's maximum changes no draw at ordinary settings: same as softmax(logits / T)."""
    row = logits(3)
    for t in (0.7, 1.0, 1.5):
        cfg = GenerationConfig(do_sample=True, temperature=t)
        for seed in range(20):
            expected = int(torch.multinomial((row / t).softmax(-1), 1, generator=torch.Generator().manual_seed(seed)))
            assert choose(row, cfg, torch.Generator().manual_seed(seed)) == expected


@pytest.mark.parametrize("penalty", [1e-300, 1e-45, 1e-40, 1e-30])
def test_a_tiny_repetition_penalty_keeps_logits_finite_and_ordered(penalty):
    row = logits(4)
    row[3] = 0.0  # 0 / (a penalty that rounds to 0 in float32) would be nan
    history = torch.tensor([3, 5, 9, 11])
    cfg = GenerationConfig(do_sample=True, temperature=0.8, repetition_penalty=penalty)
    out = process_logits(row, history, 0, cfg)
    assert not torch.isnan(out).any()
    assert out[3] == 0.0
    positive = [i for i in history.tolist() if row[i] > 0]
    assert positive and all(out[i] == torch.finfo(torch.float32).max or out[i] > row[i] for i in positive)
    token = choose(out, cfg, torch.Generator().manual_seed(0))
    assert token in positive  # a seen token with a positive logit, boosted past every other


def test_non_finite_logits_are_handled_per_token():
    row = logits(5)
    row[[0, 1]] = float("nan")  # a nan is no evidence for its token
    row[2] = float("-inf")  # masked
    row[4] = float("inf")  # overflowed upwards: the most likely token
    cfg = GenerationConfig(do_sample=True, temperature=1.0)
    assert {choose(row, cfg, torch.Generator().manual_seed(s)) for s in range(10)} == {4}
    row[4] = 1.0
    drawn = {choose(row, cfg, torch.Generator().manual_seed(s)) for s in range(50)}
    assert not drawn & {0, 1, 2}


def test_a_row_without_any_finite_logit_raises_a_clear_error():
    cfg = GenerationConfig(do_sample=True, temperature=1.0)
    with pytest.raises(ValueError, match="no finite logit"):
        choose(torch.full((V,), float("nan")), cfg, None)


@pytest.mark.parametrize("seed", [2**64, 2**70, -(2**63) - 1])
def test_seeds_outside_the_generator_range_are_refused(seed):
    with pytest.raises(ValueError, match="seed"):
        GenerationConfig(seed=seed)
    GenerationConfig(seed=2**64 - 1)
    GenerationConfig(seed=-(2**63))
