"""Variants run from the unchanged model's values upstream of their dropped units: the same logits, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx as fx
from torch import nn

from tffkit.analysis.dropout import DropPlan
from tffkit.detectors.archs import ARCHITECTURES
from tffkit.lrp import Explainer
from tffkit.lrp.partial import PartialForward


def unit_sets(explainer: Explainer, rng: np.random.Generator) -> list[list[tuple[str, int]]]:
    """No unit, one unit of the first and of the last layer, and random sets of 1 … 40 units."""
    units = [(layer.name, c) for layer in explainer.layers for c in range(layer.channels)]
    first, last = explainer.layers[0], explainer.layers[-1]
    out = [[], [(first.name, 0)], [(last.name, last.channels - 1)]]
    for k in (1, 3, 10, 40):
        out += [[units[i] for i in rng.choice(len(units), size=min(k, len(units)), replace=False)]
                for _ in range(3)]
    return out


@pytest.mark.parametrize("arch", ["tiny_resnet", "tiny_resnet_bottleneck", "tiny_vit", "tiny_convnext"])
@pytest.mark.parametrize("budget", [None, 0, 20_000])
def test_equals_the_full_forward(arch, budget):
    torch.manual_seed(0)
    explainer = Explainer(ARCHITECTURES[arch]().eval(), input_shape=(3, 32, 32))
    plans = [DropPlan(explainer, s) for s in unit_sets(explainer, np.random.default_rng(0))]
    partial = PartialForward(explainer.model, [p.layers for p in plans],
                             **({} if budget is None else {"budget_bytes": budget}))
    with torch.no_grad():
        for batch in range(2):  # the second batch reuses the compiled suffixes
            x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
            values = partial.record(x)
            assert torch.equal(values[0], explainer.model(x))
            for v, plan in enumerate(plans):
                with plan.applied():
                    assert torch.equal(partial.run(v, x, values), explainer.model(x)), (arch, v)
    ran = len(partial._suffix)  # variants run from recorded values (the unchanged one needs no pass)
    if budget is None:
        assert ran == len(plans) - 1
    elif budget == 0:
        assert ran < len(plans) // 2  # no tensor kept: the full forward
    elif arch == "tiny_resnet":  # the deep (small) values kept, the early (large) ones not
        assert 0 < ran < len(plans) - 1


class _InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x):
        y = self.a(x)
        y.add_(self.b(x))  # writes into a value upstream of b
        return self.c(y)


def test_a_graph_with_an_in_place_operation_runs_every_variant_in_full():
    gm = fx.symbolic_trace(_InPlace().eval())
    partial = PartialForward(gm, [["b"]])
    x = torch.randn(3, 4)
    with torch.no_grad():
        values = partial.record(x)
        kept = [v.clone() for v in values]
        handle = gm.b.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
        first, second = partial.run(0, x, values), partial.run(0, x, values)
        expected = gm(x)
        handle.remove()
    assert torch.equal(first, expected) and torch.equal(second, expected) and not partial._suffix
    assert all(torch.equal(a, b) for a, b in zip(values, kept, strict=True))
