"""The rule kinds: how relevance passes through one kind of operation (docs/algorithms.md, "LRP rules").

A :class:`Rule` decides, for one operation of the traced graph (a :class:`Site`), which arguments receive
relevance and which module runs the operation with the rule in its backward (usually an :class:`LRPOp`).
A composite (:mod:`.composite`, the default one in :mod:`.registry`) maps module classes, functions and tensor
methods to these kinds; the convolution rules are in :mod:`.convs`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .rules import EpsilonFn, LRPEpsilon, LRPSum, MultiEpsilonFn, PassFn, SoftmaxFn, in_gradient_mode
from .swin import window_attention
from .transformer import (
    LRPFunctionalMultiheadAttention,
    LRPMultiheadAttention,
    group_norm_linear,
    layer_norm_linear,
    mha_forward_arguments,
    norm_rule,
    sdpa,
)

Key = int | str  # a positional argument's index or a keyword argument's name


@dataclass
class Site:
    """What a rule sees of one operation: its graph node, the leaf module (``call_module``) or the callable,
    the argument keys whose values carry relevance, their shapes, and the engine's settings."""

    node: Any
    module: nn.Module | None
    fn: Callable[..., Any]
    tainted: tuple[Key, ...]
    shapes: dict[Key, tuple[int, ...]]
    out_shape: tuple[int, ...] | None
    config: RuleConfig
    is_sigmoid: Callable[[Key], bool] = field(default=lambda key: False)

    def arg(self, key: Key, default: Any = None) -> Any:
        """The node's argument at ``key`` (a positional index or a keyword), ``default`` when absent."""
        if isinstance(key, int):
            return self.node.args[key] if key < len(self.node.args) else default
        return self.node.kwargs.get(key, default)


@dataclass(frozen=True)
class RuleConfig:
    """The composite's settings the rules read: ε and the attention rule (``attnlrp`` or ``cp``)."""

    eps: float = 1e-6
    attention: str = "attnlrp"


class Rule:
    """How relevance passes through one kind of operation (a row of the table)."""

    activation = False  # an element-wise non-linearity (units before one are "neurons")

    def resolve(self, site: Site) -> Rule:
        """The concrete rule for this operation (dispatching rules choose by which arguments carry relevance)."""
        return self

    def keys(self, site: Site) -> tuple[Key, ...]:
        """Argument keys that receive relevance (default: every relevance-carrying argument)."""
        return site.tainted

    def module(self, site: Site) -> nn.Module | None:
        """The module that runs this operation with the rule in its backward; None keeps the operation as is."""
        return LRPOp(site.fn, self, self.keys(site), site.config.eps)

    def run(self, op: LRPOp, call: Callable[..., torch.Tensor], tensors: list[torch.Tensor], args: list,
            kwargs: dict) -> Any:
        """Run ``call(*tensors)`` (the operation with ``tensors`` at the relevance keys) under this rule;
        ``args``/``kwargs`` are the operation's arguments (for rules that read constants from them)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gradient(Rule):
    """The operation's own gradient is its LRP rule: reshapes, selections, concatenation, padding, dtype
    casts, max pooling (winner takes all), dropout in eval mode."""

    def module(self, site: Site) -> None:
        return None


class Identity(Rule):
    """Element-wise operations (activations, scaling by a constant, normalising by a held-constant norm):
    relevance passes unchanged to the first relevance-carrying argument (or ``signal``)."""

    def __init__(self, activation: bool = False, signal: Key | None = None):
        self.activation, self.signal = activation, signal

    def keys(self, site: Site) -> tuple[Key, ...]:
        return (self.signal,) if self.signal is not None else site.tainted[:1]

    def run(self, op, call, tensors, args, kwargs):
        return PassFn.apply(tensors[0], call)


class Epsilon(Rule):
    """ε rule for an operation that is linear (or affine: the constant part stays in the denominator) in its
    relevance-carrying inputs: linear layers, average pooling, means, sums, bilinear resampling."""

    def module(self, site: Site) -> nn.Module:
        if site.module is not None and site.tainted == (0,) and len(site.node.args) == 1 and not site.node.kwargs:
            return LRPEpsilon(site.module, site.config.eps)
        return super().module(site)

    def run(self, op, call, tensors, args, kwargs):
        if len(tensors) == 1:
            return EpsilonFn.apply(tensors[0], call, op.eps)
        return MultiEpsilonFn.apply(call, op.eps, 1.0, *tensors)


class Uniform(Rule):
    """Product of n relevance-carrying factors: each receives 1/n of the relevance by the ε rule (AttnLRP)."""

    def run(self, op, call, tensors, args, kwargs):
        return MultiEpsilonFn.apply(call, op.eps, 1.0 / len(tensors), *tensors)


class Sum(Rule):
    """``a ± b``: two relevance-carrying terms share by the ε rule (residual sums); with a constant term
    (a bias, a position embedding) it is the ε rule of an affine map."""

    def resolve(self, site: Site) -> Rule:
        plain = site.tainted == (0, 1) and len(site.node.args) == 2 and not site.node.kwargs
        return _SumModule(_is_sub(site.node.target)) if plain else Epsilon()


class _SumModule(Rule):
    def __init__(self, subtract: bool):
        self.subtract = subtract

    def module(self, site: Site) -> nn.Module:
        return LRPSum(site.config.eps, -1.0 if self.subtract else 1.0)


class Product(Rule):
    """``a · b`` (or ``a / b``): with one relevance-carrying factor, a scaling (relevance passes unchanged);
    with two, a gate when one factor is a sigmoid or broadcasts over the other (squeeze-excitation, Swish:
    all relevance to the signal), else the uniform rule. A relevance-carrying divisor is held constant."""

    def resolve(self, site: Site) -> Rule:
        if len(site.tainted) == 1 or _is_div(site.node.target):
            return Identity(signal=site.tainted[0])
        a, b = site.tainted[:2]
        sig_a, sig_b = site.is_sigmoid(a), site.is_sigmoid(b)
        if sig_a != sig_b:
            return _Gate(b if sig_a else a)
        na, nb = (_numel(site.shapes.get(k)) for k in (a, b))
        if na != nb:
            return _Gate(a if na > nb else b)
        return Uniform()


class _Gate(Identity):
    activation = True

    def __init__(self, signal: Key):
        super().__init__(activation=True, signal=signal)


class MatMul(Rule):
    """Matrix products: ε rule with one constant factor (a projection), uniform rule with two (attention)."""

    def resolve(self, site: Site) -> Rule:
        return Epsilon() if len(site.tainted) == 1 else Uniform()


class Einsum(MatMul):
    """``torch.einsum(equation, *operands)``: multilinear in its operands (each appears once), so as a matrix
    product — ε rule with one relevance-carrying operand (a projection, a contraction with a constant), the
    uniform rule with n of them (AttnLRP's rule for q·kᵀ and attention·v written as einsum, 1/n to each)."""

    def resolve(self, site: Site) -> Rule:
        if not isinstance(site.arg(0), str) or any(not isinstance(k, int) for k in site.tainted):
            raise ValueError("einsum is explained in its torch.einsum('equation', a, b, …) form only")
        return super().resolve(site)


class Softmax(Rule):
    """AttnLRP softmax rule R_in = x ⊙ (R − s ⊙ Σ R) along the softmax dimension."""

    def resolve(self, site: Site) -> Rule:
        if site.module is not None:
            dim = site.module.dim
        else:
            dim = site.arg(1, site.node.kwargs.get("dim"))
        if dim is None:
            raise ValueError("softmax without an explicit dim")
        return _SoftmaxDim(dim)


class _SoftmaxDim(Rule):
    def __init__(self, dim: int):
        self.dim = dim

    def keys(self, site):
        return (0,)

    def run(self, op, call, tensors, args, kwargs):
        return SoftmaxFn.apply(tensors[0], call, self.dim)


class Norm(Rule):
    """LayerNorm / GroupNorm (modules and functions) by AttnLRP's rule: σ held constant, ε rule on the rest."""

    def keys(self, site):
        return (0,)

    def resolve(self, site: Site) -> Rule:
        m, target = site.module, site.node.target
        if isinstance(m, nn.LayerNorm):
            return _NormOf(layer_norm_linear, len(m.normalized_shape), m.eps)
        if isinstance(m, nn.GroupNorm):
            return _NormOf(group_norm_linear, m.num_groups, m.eps)
        size = site.arg(1, site.node.kwargs.get("normalized_shape", site.node.kwargs.get("num_groups")))
        eps = site.arg(4, site.node.kwargs.get("eps", 1e-5))
        if target is F.layer_norm:
            return _NormOf(layer_norm_linear, len(size) if isinstance(size, (tuple, list)) else 1, eps)
        if target is F.group_norm:
            return _NormOf(group_norm_linear, size, eps)
        raise ValueError(f"the Norm rule knows LayerNorm and GroupNorm, not {target}")


def norm_affine(op, args, kwargs) -> tuple:
    """The (weight, bias) of a normalisation op: the module's, or ``F.layer_norm``/``F.group_norm``'s arguments."""
    if isinstance(op.fn, nn.Module):
        return op.fn.weight, op.fn.bias
    return (args[2] if len(args) > 2 else kwargs.get("weight"), args[3] if len(args) > 3 else kwargs.get("bias"))


class _NormOf(Norm):
    def __init__(self, make: Callable, size: int, norm_eps: float):
        self.make, self.size, self.norm_eps = make, size, norm_eps

    def run(self, op, call, tensors, args, kwargs):
        weight, bias = norm_affine(op, args, kwargs)
        return norm_rule(tensors[0], call, self.make(self.size, weight, bias, self.norm_eps), op.eps)


class BatchNorm(Rule):
    """Batch norm: folded into the convolution before it; otherwise (DenseNet's pre-activation BN) a
    per-channel affine map through which relevance passes unchanged (the bias is not credited)."""

    def keys(self, site):
        return (0,)

    def run(self, op, call, tensors, args, kwargs):
        return PassFn.apply(tensors[0], call)


class Resample(Rule):
    """``interpolate`` / ``Upsample``: nearest neighbour copies values (its gradient is the rule), other
    modes are linear maps (ε rule)."""

    def resolve(self, site: Site) -> Rule:
        mode = site.module.mode if site.module is not None else site.arg(3, site.node.kwargs.get("mode", "nearest"))
        return Gradient() if mode in ("nearest", "nearest-exact") else Epsilon()


class Attention(Rule):
    """``F.scaled_dot_product_attention`` by the attention rules of the engine's mode (AttnLRP or CP-LRP).
    Its output (B, heads, L, head_dim) is the attention heads' unit layer."""

    def keys(self, site):
        return tuple(k for k in site.tainted if k in (0, 1, 2, "query", "key", "value"))

    def run(self, op, call, tensors, args, kwargs):
        return call(*tensors)

    def module(self, site: Site) -> nn.Module:
        def attend(*args, **kwargs):
            return sdpa(*args, **kwargs, mode=site.config.attention, eps=site.config.eps)
        return LRPOp(attend, self, self.keys(site), site.config.eps)


class MultiheadAttention(Rule):
    """``nn.MultiheadAttention`` rebuilt from LRP rules (:class:`~tffkit.lrp.transformer.LRPMultiheadAttention`)."""

    def keys(self, site):
        return tuple(k for k in site.tainted if k in (0, 1, 2, "query", "key", "value"))

    def module(self, site: Site) -> nn.Module:
        return LRPMultiheadAttention(site.module, site.config.attention, site.config.eps)


class MultiheadAttentionFunction(MultiheadAttention):
    """``F.multi_head_attention_forward`` called directly (open_clip's attention pooling) by the rules of
    ``nn.MultiheadAttention`` (:class:`~tffkit.lrp.transformer.LRPFunctionalMultiheadAttention`): ε on the four
    projections, the engine's attention rule inside; its heads are units."""

    def resolve(self, site: Site) -> Rule:
        heads = mha_forward_arguments(site.node.args, site.node.kwargs)["num_heads"]
        if not isinstance(heads, int):
            raise ValueError("the number of heads must be a constant")
        return self

    def module(self, site: Site) -> nn.Module:
        heads = mha_forward_arguments(site.node.args, site.node.kwargs)["num_heads"]
        return LRPFunctionalMultiheadAttention(heads, site.config.attention, site.config.eps)


class WindowAttention(Rule):
    """Swin's shifted-window attention (torchvision's wrapped function) by :func:`~tffkit.lrp.swin.window_attention`."""

    def keys(self, site):
        return (0,)

    def run(self, op, call, tensors, args, kwargs):
        return call(*tensors)

    def module(self, site: Site) -> nn.Module:
        def attend(*args, **kwargs):
            return window_attention(*args, **kwargs, mode=site.config.attention, eps=site.config.eps)
        return LRPOp(attend, self, (0,), site.config.eps)


class Trace(Rule):
    """Never a leaf: the tracer enters the module and its operations get their own rules."""


class LRPOp(nn.Module):
    """Runs one operation of the traced graph under ``rule``: the arguments at ``keys`` carry relevance,
    every other tensor argument is a constant for this operation (detached)."""

    def __init__(self, fn: Callable[..., Any], rule: Rule, keys: tuple[Key, ...], eps: float):
        super().__init__()
        self.fn, self.rule, self.keys, self.eps = fn, rule, tuple(keys), eps  # a module fn becomes a submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if in_gradient_mode():  # the operation itself, every argument live: its ordinary gradient
            return self.fn(*args, **kwargs)
        args, kwargs = list(args), dict(kwargs)
        for key in [*range(len(args)), *kwargs]:
            value = args[key] if isinstance(key, int) else kwargs[key]
            if key not in self.keys and isinstance(value, torch.Tensor) and value.requires_grad:
                _set(args, kwargs, key, value.detach())
        tensors = [args[k] if isinstance(k, int) else kwargs[k] for k in self.keys]

        def call(*ts: torch.Tensor) -> Any:
            a, kw = list(args), dict(kwargs)
            for k, t in zip(self.keys, ts, strict=True):
                _set(a, kw, k, t)
            return self.fn(*a, **kw)

        return self.rule.run(self, call, tensors, args, kwargs)

    def extra_repr(self) -> str:
        name = type(self.fn).__name__ if isinstance(self.fn, nn.Module) else getattr(self.fn, "__name__", self.fn)
        return f"{name}, rule={self.rule!r}, keys={self.keys}"


def _set(args: list, kwargs: dict, key: Key, value: Any) -> None:
    if isinstance(key, int):
        args[key] = value
    else:
        kwargs[key] = value


def _numel(shape: tuple[int, ...] | None) -> int:
    n = 1
    for s in shape or ():
        n *= s
    return n


def _is_sub(target: Any) -> bool:
    return target in (operator.sub, operator.isub, torch.sub, "sub", "sub_")


def _is_div(target: Any) -> bool:
    return target in (operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_",
                      "true_divide")
