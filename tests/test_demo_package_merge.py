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


def test_a_share_of_the_energy_keeps_the_fewest_directions_that_hold_it():
    stages = _stages(torch.Generator().manual_seed(1))
    full = _update(stages, "q")
    a, b = merge_stages(stages, 0.9)[1]["q"]
    energy = torch.linalg.svdvals(full.double()).square()
    share = energy.cumsum(0) / energy.sum()  # share of the energy in the first k directions, k = 1, 2, ...
    fewest = int(torch.nonzero(share >= 0.9)[0]) + 1
    assert a.shape[0] == b.shape[1] == fewest < 12
    assert (b @ a - full).norm() <= (0.1**0.5) * full.norm() + 1e-5  # the dropped directions hold < 10% of it


def test_a_zero_update_ships_no_direction():
    zero = [(1.0, {"q": (torch.zeros(4, 32), torch.zeros(24, 4))})]
    a, b = merge_stages(zero, 0.999)[1]["q"]
    assert a.shape == (0, 32) and b.shape == (24, 0) and torch.equal(b @ a, torch.zeros(24, 32))


@pytest.mark.parametrize("energy", [0.0, 1.5])
def test_energy_outside_zero_one_is_refused(energy):
    with pytest.raises(ValueError, match="energy"):
        merge_stages([], energy)
