"""Convolution rules as values (docs/algorithms.md §2): z⁺ with its flat fallback, zβ with pixel bounds, ε, γ.

A convolution rule is a :class:`~tffkit.lrp.kinds.Rule` like every other; the rewrite folds batch norm into the
convolution first and then asks the rule for the module that runs it (:meth:`Conv.lrp_module`, a
:class:`~tffkit.lrp.rules.LRPConv`). A composite maps convolution classes to one of these, and may give the
convolutions reading the pixels (its ``first`` rule) or named layers another one.
"""

from __future__ import annotations

import torch
from torch import nn

from .kinds import Rule, Site
from .rules import LRPConv

FALLBACKS = ("depthwise", "all", "none")


def is_depthwise(conv: nn.Module) -> bool:
    return getattr(conv, "groups", 1) > 1 and conv.groups == getattr(conv, "in_channels", 0)


class Conv(Rule):
    """Base of the convolution rules (batch norm folded in). ``name`` is what ``Explainer.input_rule`` and the
    rule summary report."""

    name = "conv"

    def keys(self, site: Site):
        return (0,)

    def lrp_module(self, conv: nn.Module, *, eps: float, nonneg: bool,
                   pre_bn: tuple[torch.Tensor, torch.Tensor] | None = None) -> LRPConv:
        """The module that runs ``conv`` with this rule; ``nonneg``: its input is ≥ 0 by construction (after a
        ReLU); ``pre_bn``: (scale, shift) of the batch norm folded into it."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not isinstance(v, torch.Tensor))
        return f"{type(self).__name__}({args})"


class ZPlus(Conv):
    """β = 0 (z⁺) rule, bias ignored. ``fallback``: where a neuron has no positive input (z⁺ = 0) its relevance is
    spread evenly over its window in ``depthwise`` convolutions (default), in ``all``, or in ``none`` (lost, as in
    the paper's code)."""

    name = "zplus"

    def __init__(self, fallback: str = "depthwise"):
        if fallback not in FALLBACKS:
            raise ValueError(f"unknown zplus_fallback {fallback!r}; use depthwise, all or none")
        self.fallback = fallback

    def lrp_module(self, conv, *, eps, nonneg, pre_bn=None):
        flat = self.fallback == "all" or (self.fallback == "depthwise" and is_depthwise(conv))
        return LRPConv(conv, eps, nonneg_input=nonneg, flat_fallback=flat, pre_bn=pre_bn)


class ZBox(Conv):
    """zβ (box) rule for pixels bounded per channel by ``low`` ≤ x ≤ ``high`` (normalised pixels). Without
    explicit bounds the Explainer fills them from the detector's mean/std (``bounds``: ``exact`` or
    ``paper-code``; None: the Explainer's ``bounds`` option)."""

    name = "zbox"

    def __init__(self, bounds: str | None = None, low: torch.Tensor | None = None, high: torch.Tensor | None = None):
        if bounds not in (None, "exact", "paper-code"):
            raise ValueError(f"unknown bounds {bounds!r}; use 'exact' or 'paper-code'")
        self.bounds, self.low, self.high = bounds, low, high

    def __eq__(self, other: object) -> bool:
        return type(other) is ZBox and self.bounds == other.bounds and _same(self.low, other.low) and \
            _same(self.high, other.high)

    __hash__ = Conv.__hash__

    def with_bounds(self, low: torch.Tensor, high: torch.Tensor) -> ZBox:
        return ZBox(self.bounds, low, high)

    def lrp_module(self, conv, *, eps, nonneg, pre_bn=None):
        if self.low is None or self.high is None:
            raise ValueError("the zbox rule needs pixel bounds (Explainer fills them from mean/std)")
        w = conv.weight
        return LRPConv(conv, eps, nonneg_input=nonneg, low=self.low.to(w.device, w.dtype),
                       high=self.high.to(w.device, w.dtype), pre_bn=pre_bn)


class ConvEpsilon(Conv):
    """ε rule, bias in the denominator (LRP-ε; AttnLRP's rule at a ViT's patch embedding)."""

    name = "epsilon"

    def lrp_module(self, conv, *, eps, nonneg, pre_bn=None):
        module = LRPConv(conv, eps, nonneg_input=nonneg, pre_bn=pre_bn)
        module.epsilon = True
        return module


class Gamma(Conv):
    """γ rule: R_i = Σ_j x_i (w_ij + γ w⁺_ij) / (Σ_i x_i (w_ij + γ w⁺_ij) ± ε) R_j for x ≥ 0 and positive outputs,
    bias ignored (Montavon et al. 2019: γ → ∞ approaches z⁺, γ = 0 is LRP-0); generalised to signed inputs and
    negative outputs as zennit's ``Gamma``."""

    name = "gamma"

    def __init__(self, gamma: float = 0.25):
        if not gamma >= 0:
            raise ValueError(f"gamma must be ≥ 0, got {gamma}")
        self.gamma = float(gamma)

    def lrp_module(self, conv, *, eps, nonneg, pre_bn=None):
        return LRPConv(conv, eps, nonneg_input=nonneg, pre_bn=pre_bn, gamma=self.gamma)


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))


RULES = {"zplus": ZPlus, "zbox": ZBox, "epsilon": ConvEpsilon, "gamma": Gamma}


def conv_rule(name: str, *, fallback: str = "depthwise", bounds: str | None = None) -> Conv:
    """A convolution rule by name: ``zplus``, ``zbox``, ``epsilon`` or ``gamma`` (γ = 0.25)."""
    if name == "zplus":
        return ZPlus(fallback)
    if name == "zbox":
        return ZBox(bounds)
    if name in RULES:
        return RULES[name]()
    raise ValueError(f"unknown convolution rule {name!r}; use {', '.join(RULES)}")
