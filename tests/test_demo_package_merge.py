"""Merging the demo's LoRA stages into one low-rank update per module before shipping (`package.merge_stages`)."""

from __future__ import annotations

import pytest
import torch

from auralm.demo.package import merge_stages


def _stages(g: torch.Generator) -> list[tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    def lora(r, out, inp):
        return torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g)

    return [(2.0, {"q": lora(4, 24, 32), "v": lora(4, 8, 32)}), (0.5, {"q": lora(4, 24, 32)}), (1.0, {"q": lora(4, 24, 32)})]


def _update(stages, module):
    return sum(s * b @ a for s, factors in stages for m, (a, b) in factors.items() if m == module)


def test_all_the_energy_gives_the_summed_update_at_its_true_rank():
    stages = _stages(torch.Generator().manual_seed(0))
    scaling, merged = merge_stages(stages, 1.0)
    assert scaling == 1.0 and set(merged) == {"q", "v"}
    for module, rank in (("q", 12), ("v", 4)):  # three rank-4 stages on q, one on v
        a, b = merged[module]
        assert a.shape[0] == b.shape[1] == rank
        torch.testing.assert_close(b @ a, _update(stages, module), atol=1e-4, rtol=1e-4)


def test_a_share_of_the_energy_keeps_fewer_directions_within_its_error_bound():
    stages = _stages(torch.Generator().manual_seed(1))
    full = _update(stages, "q")
    a, b = merge_stages(stages, 0.9)[1]["q"]
    assert a.shape[0] < 12
    assert (b @ a - full).norm() <= (0.1**0.5) * full.norm() + 1e-5  # the dropped directions hold < 10% of it


def test_energy_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="energy"):
        merge_stages([], 0.0)
