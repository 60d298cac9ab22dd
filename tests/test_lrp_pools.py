"""Max pooling computed channels-last on the CPU: bit-identical values, gradients and relevance."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tffkit.detectors.archs import tiny_resnet
from tffkit.lrp import Explainer
from tffkit.lrp.pools import ChannelsLastMaxPool2d, fast_max_pools


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=2, stride=2),
                                    dict(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                    dict(kernel_size=3, stride=2, dilation=2)])
def test_same_values_and_gradient_with_ties(kwargs):
    # after a ReLU many windows hold only zeros: ties must pick the same position, so the gradient is equal too
    x = torch.randn(4, 5, 17, 15, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    h = torch.relu(x)
    handed = []
    h.register_hook(handed.append)  # the gradient the layer below receives, as it receives it
    plain, fast = nn.MaxPool2d(**kwargs), ChannelsLastMaxPool2d(**kwargs)
    y, y2 = plain(h), fast(h)
    assert torch.equal(y, y2) and y2.is_contiguous()
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    y.backward(g, retain_graph=True)
    y2.backward(g)
    assert torch.equal(handed[0], handed[1]) and handed[1].is_contiguous()
    assert torch.equal(plain(h[0]), fast(h[0]))  # unbatched input takes the plain path
    last = h.detach().contiguous(memory_format=torch.channels_last)  # keeps its order, as the plain kernel's output
    assert fast(last).stride() == plain(last).stride() and torch.equal(fast(last), plain(last))


def test_explainer_copy_uses_it_and_gives_the_same_relevance():
    model = tiny_resnet().eval()
    explainer = Explainer(model, input_shape=(3, 32, 32))
    assert isinstance(explainer.model.get_submodule("maxpool"), ChannelsLastMaxPool2d)
    assert type(model.maxpool) is nn.MaxPool2d  # the detector is untouched
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    def explain():
        taps = {}
        out = explainer.explain(x, tap=lambda layer, rel, _act: taps.__setitem__(layer.name, rel.clone()))
        return out, taps

    fast, fast_taps = explain()
    plain_model = copy.deepcopy(explainer.model)
    plain_model.maxpool = nn.MaxPool2d(3, 2, 1)
    explainer.model = plain_model
    plain, plain_taps = explain()
    assert torch.equal(fast.logits, plain.logits)
    assert torch.equal(fast.input_relevance, plain.input_relevance)
    assert fast_taps.keys() == plain_taps.keys() and "conv1" in fast_taps
    for name, rel in fast_taps.items():  # unit relevance below the pooling too, in the same memory order
        assert torch.equal(rel, plain_taps[name]) and rel.stride() == plain_taps[name].stride(), name
    assert fast_max_pools(plain_model) == 1 and fast_max_pools(plain_model) == 0
