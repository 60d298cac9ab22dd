"""What a detector module says about its output and its input, below both :mod:`tffkit.detectors` (which attaches
it) and :mod:`tffkit.lrp` (which reads it).

- The output as **one fake logit** (p(fake) = sigmoid(output)): :class:`LogOdds` wraps a (real, fake) head,
  :class:`NegatedLogit` a one-logit 'real' score; :func:`fake_logit` does the same to a raw output tensor.
- The input: the attributes a detector carries — ``tff_input_shape`` (the probe shape, :func:`default_input_shape`),
  ``tff_input_rule`` (the LRP rule at the pixels, :func:`input_rule_of`) and ``tff_normalization`` (the ``(mean,
  std)`` its pixels are normalised with, :func:`normalization_of`; the zβ rule's pixel bounds follow from it).
"""

from __future__ import annotations

import torch
from torch import nn


class LogOdds(nn.Module):
    """A two-class detector as one logit: ``out[:, fake] − out[:, real]`` (so sigmoid gives p(fake))."""

    def __init__(self, model: nn.Module, fake_index: int = 1):
        super().__init__()
        self.model, self.fake_index = model, fake_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[:, self.fake_index] - out[:, 1 - self.fake_index]


class NegatedLogit(nn.Module):
    """A one-logit detector whose logit scores 'real' (0 = fake polarity), turned into the fake logit."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.model(x)


def fake_logit(output: torch.Tensor, fake_index: int = 1) -> torch.Tensor:
    """The fake logit of a raw output: (B, 2) → out[fake] − out[real]; (B, 1) → ±logit by polarity; shape (B,)."""
    if output.dim() == 2 and output.shape[1] == 2:
        return output[:, fake_index] - output[:, 1 - fake_index]
    out = output.reshape(len(output), -1)[:, 0]
    return out if fake_index == 1 else -out


def default_input_shape(model: nn.Module) -> tuple[int, ...]:
    """(C, H, W) a detector takes: its ``tff_input_shape``, an ``image_size`` attribute (torchvision ViT, open_clip
    towers), a timm ``pretrained_cfg['input_size']``, else (3, 224, 224)."""
    for m in model.modules():
        shape = getattr(m, "tff_input_shape", None)
        if shape is not None:
            return tuple(shape)
        size = getattr(m, "image_size", None)
        if isinstance(size, int):
            return (3, size, size)
        if isinstance(size, (tuple, list)) and len(size) == 2:
            return (3, *size)
        cfg = getattr(m, "pretrained_cfg", None)
        if isinstance(cfg, dict) and "input_size" in cfg:
            return tuple(cfg["input_size"])
    return (3, 224, 224)


def input_rule_of(model: nn.Module) -> str:
    """The input rule a detector asks for: its ``tff_input_rule`` (set from the zoo entry's ``input_rule`` field
    when it is built), else ``zplus`` (the convolutions' own rule)."""
    for m in model.modules():
        rule = getattr(m, "tff_input_rule", None)
        if rule is not None:
            return rule
    return "zplus"


def normalization_of(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` a detector's pixels are normalised with: its ``tff_normalization`` (set from its
    preprocessing when the zoo builds or loads it; the outermost module's wins), else None."""
    for m in model.modules():
        norm = getattr(m, "tff_normalization", None)
        if norm is not None:
            mean, std = norm
            return tuple(mean), tuple(std)
    return None

