"""The fast composite: the ε, identity, uniform, softmax, LayerNorm and CP/AttnLRP attention rules computed as one
Gradient × Input backward pass (LXT's efficient mode; the autograd pieces are in :mod:`.fastfn`).

A composite with ``fast=True`` (the named ``fast`` one: AttnLRP's rules, ε on every convolution) is rewritten
like any other, then every resolved rule is replaced by its gradient form (:func:`to_fast`): linear maps keep their
native backward, element-wise non-linearities get the one-multiply identity rule, LayerNorm's σ is detached,
attention keeps ``F.scaled_dot_product_attention`` and only rescales the q, k, v gradients (AttnLRP) or detaches
q and k (CP-LRP). Relevance equals the relevance-form rules' up to ε (which the fast path omits except at the
logit). A rule without a gradient form (z⁺, zβ, γ convolutions, Swin's window attention, a user's rule) still
works inside a fast model: it is run in relevance form between two conversions (g → R = y·g at its output,
R → g = R / x at its input), exact except where an input is within ε of 0.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .convs import Conv
from .fastfn import (
    Converted,
    ConvertedConv,
    DetachedStdLayerNormFn,
    FastLinear,
    FastLRPConv,
    FastMultiheadAttention,
    FastSum,
    RatioIdentityFn,
    fast_sdpa,
    scale_grad,
)
from .kinds import (
    Attention,
    BatchNorm,
    Epsilon,
    Gradient,
    Identity,
    LRPOp,
    MultiheadAttention,
    Rule,
    Site,
    Trace,
    Uniform,
    _Gate,
    _NormOf,
    _SoftmaxDim,
    _SumModule,
    norm_affine,
)
from .transformer import layer_norm_linear


class _Fast:
    """Marks a rule already in gradient form."""

    label = "fast"


class FastNative(_Fast, Rule):
    """The operation's own backward is the rule in gradient form (softmax: AttnLRP's rule; linear maps: ε); the
    arguments outside ``base``'s keys are constants (detached)."""

    def __init__(self, base: Rule, label: str):
        self.base, self.label = base, label

    def keys(self, site: Site):
        return self.base.keys(site)

    def module(self, site: Site) -> nn.Module | None:
        keys = self.keys(site)
        return None if tuple(keys) == tuple(site.tainted) else LRPOp(site.fn, self, keys, site.config.eps)

    def run(self, op, call, tensors, args, kwargs):
        return call(*tensors)

    def __repr__(self) -> str:
        return f"FastNative({self.base!r})"


class FastEpsilon(_Fast, Epsilon):
    """ε rule in gradient form: the native backward (a linear layer stays a unit layer: :class:`FastLinear`)."""

    label = "epsilon (gradient form)"

    def module(self, site: Site) -> nn.Module | None:
        if isinstance(site.module, nn.Linear) and site.tainted == (0,) and len(site.node.args) == 1 \
                and not site.node.kwargs:
            return FastLinear(site.module, site.config.eps)
        return FastNative(Epsilon(), self.label).module(site)

    def run(self, op, call, tensors, args, kwargs):
        return call(*tensors)


class FastUniform(_Fast, Uniform):
    """Uniform rule of a product of n factors in gradient form: the native backward × 1/n."""

    label = "uniform (gradient form, ×1/n)"

    def run(self, op, call, tensors, args, kwargs):
        return scale_grad(call(*tensors), 1.0 / len(tensors))


class FastSumRule(_Fast, _SumModule):
    """A residual sum: the native backward (a residual unit layer: :class:`FastSum`)."""

    label = "epsilon (sum, gradient form)"

    def module(self, site: Site) -> nn.Module:
        return FastSum(site.config.eps, -1.0 if self.subtract else 1.0)


class FastPass(_Fast, Identity):
    """Identity rule in gradient form: g_in = g · y / x (one multiply; y / x kept from the forward) when the
    output has the signal's shape, else (a broadcast scaling) the native backward with the other factors constant."""

    label = "identity (gradient form, ×y/x)"

    def __init__(self, base: Rule, ratio: bool = True):
        self.base, self.ratio = base, ratio
        self.activation = base.activation
        self.signal = getattr(base, "signal", None)

    def keys(self, site: Site):
        return self.base.keys(site)

    def module(self, site: Site) -> nn.Module:
        keys = self.keys(site)
        same = site.out_shape is not None and tuple(site.shapes.get(keys[0]) or ()) == tuple(site.out_shape)
        return LRPOp(site.fn, FastPass(self.base, same), keys, site.config.eps)

    def run(self, op, call, tensors, args, kwargs):
        if self.ratio and tensors[0].requires_grad:
            return RatioIdentityFn.apply(tensors[0], call, op.eps)
        return call(*tensors)


class FastNorm(_Fast, _NormOf):
    """LayerNorm / GroupNorm with σ held constant: the backward of the normalisation with σ detached (the fused
    ``F.layer_norm`` forward is kept)."""

    label = "norm (σ detached, gradient form)"

    def __init__(self, base: _NormOf):
        super().__init__(base.make, base.size, base.norm_eps)

    def run(self, op, call, tensors, args, kwargs):
        weight, bias = norm_affine(op, args, kwargs)
        x = tensors[0]
        if self.make is layer_norm_linear:
            return DetachedStdLayerNormFn.apply(x, tuple(x.shape[-self.size:]), weight, bias, self.norm_eps)
        linear = self.make(self.size, weight, bias, self.norm_eps)(x.detach())(x)
        return linear + (call(x) - linear).detach()


class FastAttention(_Fast, Attention):
    """``F.scaled_dot_product_attention`` kept fused, the q, k, v gradients rescaled (:func:`~.fastfn.fast_sdpa`)."""

    label = "attention (gradient form)"

    def module(self, site: Site) -> nn.Module:
        def attend(*args, **kwargs):
            return fast_sdpa(*args, **kwargs, mode=site.config.attention)
        return LRPOp(attend, self, self.keys(site), site.config.eps)


class FastMHA(_Fast, MultiheadAttention):
    """``nn.MultiheadAttention`` in gradient form (:class:`~.fastfn.FastMultiheadAttention`)."""

    label = "attention (gradient form)"

    def module(self, site: Site) -> nn.Module:
        return FastMultiheadAttention(site.module, site.config.attention, site.config.eps)


class FastConv(_Fast, Conv):
    """A convolution rule in a fast model: ε as the native backward, any other (z⁺, zβ, γ) in relevance form
    between conversions (:class:`~.fastfn.ConvertedConv`)."""

    def __init__(self, base: Conv):
        self.base, self.name = base, base.name

    def lrp_module(self, conv, *, eps, nonneg, pre_bn=None):
        module = self.base.lrp_module(conv, eps=eps, nonneg=nonneg, pre_bn=pre_bn)
        module.__class__ = FastLRPConv if module.epsilon else ConvertedConv
        return module

    def __repr__(self) -> str:
        return f"FastConv({self.base!r})"


class InRelevanceForm(_Fast, Rule):
    """A rule without a gradient form, run in relevance form between conversions (:class:`~.fastfn.Converted`)."""

    def __init__(self, base: Rule):
        self.base, self.activation = base, base.activation
        self.label = f"{type(base).__name__} (relevance form, converted)"

    def keys(self, site: Site):
        return self.base.keys(site)

    def module(self, site: Site) -> nn.Module | None:
        inner = self.base.module(site)
        return None if inner is None else Converted(inner, self.keys(site), site.config.eps)


# resolved rule type → its gradient form (the most specific class of a rule's MRO found here wins)
_TABLE: dict[type, Callable[[Rule], Rule]] = {
    Gradient: lambda r: r, Trace: lambda r: r,
    Conv: FastConv,
    _SumModule: lambda r: FastSumRule(r.subtract),
    Uniform: lambda r: FastUniform(),
    Epsilon: lambda r: FastEpsilon(),
    _SoftmaxDim: lambda r: FastNative(r, "softmax (AttnLRP, native backward)"),
    _NormOf: FastNorm,
    Identity: FastPass, _Gate: FastPass, BatchNorm: FastPass,
    Attention: lambda r: FastAttention(),
    MultiheadAttention: lambda r: FastMHA(),
}


def to_fast(rule: Rule) -> Rule:
    """The gradient form of a resolved rule (a rule already in it is returned as is)."""
    if isinstance(rule, _Fast):
        return rule
    for cls in type(rule).__mro__:
        if cls in _TABLE:
            return _TABLE[cls](rule)
    return InRelevanceForm(rule)

