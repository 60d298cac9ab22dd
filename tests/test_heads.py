"""tffkit.heads: the fake logit of every head, and the input a detector carries for the LRP engine (its shape, its
pixel rule and its normalisation, which the engine takes from its caller or the detector, never from a dataset)."""

import pytest
import torch
from torch import nn

from tffkit.detectors import Detector, as_fake_logit, build_detector
from tffkit.heads import LogOdds, NegatedLogit, default_input_shape, fake_logit, input_rule_of, normalization_of
from tffkit.lrp import Explainer, input_bounds
from tffkit.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


class _Raw(nn.Module):
    def __init__(self, outputs: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, outputs)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_every_head_gives_the_same_fake_logit():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 8, 8)
    two, one = _Raw(2).eval(), _Raw(1).eval()
    for fake_index in (0, 1):
        assert torch.equal(LogOdds(two, fake_index)(x), fake_logit(two(x), fake_index))
    assert torch.equal(LogOdds(two, 1)(x), two(x)[:, 1] - two(x)[:, 0])
    assert torch.equal(NegatedLogit(one)(x).flatten(), fake_logit(one(x), 0))
    assert torch.equal(fake_logit(one(x), 1), one(x)[:, 0])


def test_a_detector_carries_its_input():
    model = build_detector("tiny_resnet")
    assert input_rule_of(model) == "zbox" and input_rule_of(nn.Linear(2, 1)) == "zplus"
    assert normalization_of(model) == (IMAGENET_MEAN, IMAGENET_STD) and normalization_of(_Raw(1)) is None
    assert default_input_shape(_Raw(1)) == (3, 224, 224)
    half = Detector("half", lambda: _Raw(2), Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3), outputs=2)
    assert normalization_of(half.create()) == ((0.5,) * 3, (0.25,) * 3)
    loaded = as_fake_logit(half.create(), half)  # the preprocessing it is scored with, on the outer module too
    assert isinstance(loaded, LogOdds) and normalization_of(loaded) == ((0.5,) * 3, (0.25,) * 3)
    own = _Raw(1)
    own.tff_preprocessing = {"mean": (0.1,) * 3, "std": (0.2,) * 3}  # a model's own preprocessing wins, as scored
    assert normalization_of(as_fake_logit(own, half)) == ((0.1,) * 3, (0.2,) * 3)


def test_zbox_bounds_come_from_the_caller_or_the_detector_never_a_default():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    bare = _Raw(1).eval()
    with pytest.raises(ValueError, match="mean= and std="):
        Explainer(bare, input_rule="zbox", input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="mean= and std="):
        input_bounds("exact")
    given = Explainer(bare, input_rule="zbox", input_shape=(3, 8, 8), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    bare.tff_normalization = (IMAGENET_MEAN, IMAGENET_STD)
    carried = Explainer(bare, input_rule="zbox", input_shape=(3, 8, 8))
    other = Explainer(bare, input_rule="zbox", input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert torch.equal(given.explain(x).input_relevance, carried.explain(x).input_relevance)
    assert not torch.equal(given.explain(x).input_relevance, other.explain(x).input_relevance)  # the caller's wins
    plain = _Raw(1).eval()  # no zβ: no normalisation needed, and paper-code bounds need only the channels
    Explainer(plain, input_shape=(3, 8, 8))
    Explainer(plain, input_rule="zbox", bounds="paper-code", input_shape=(3, 8, 8))
