"""LRP rules as autograd Functions whose backward maps output relevance to input relevance.

In an explainable model every operation is one of these, or an operation whose ordinary backward
already is its LRP rule (max pooling = winner takes all, reshapes, concatenation, padding). What flows
backwards is therefore relevance, not gradient, and a tensor hook on any intermediate output sees the
relevance of that layer (docs/algorithms.md, "LRP rules").
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

_GRADIENT = contextvars.ContextVar("tffkit_gradient_mode", default=False)


@contextlib.contextmanager
def gradient_mode() -> Iterator[None]:
    """Within the block every rule runs its operation plainly, so what flows backwards through an explainable
    model is the ordinary gradient, not relevance (gradient × activation with the same units and taps)."""
    token = _GRADIENT.set(True)
    try:
        yield
    finally:
        _GRADIENT.reset(token)


def in_gradient_mode() -> bool:
    """True inside :func:`gradient_mode`."""
    return _GRADIENT.get()


class RuleFunction(torch.autograd.Function):
    """An LRP rule as an autograd Function; in :func:`gradient_mode` it runs :meth:`plain` (the operation with
    its ordinary gradient) instead."""

    @classmethod
    def apply(cls, *args):  # noqa: D102 - torch's entry point
        if _GRADIENT.get():
            return cls.plain(*args)
        return super().apply(*args)

    @staticmethod
    def plain(*args):  # pragma: no cover - every rule defines it
        raise NotImplementedError


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps·sign(z), with sign(0) = +1, so denominators never vanish."""
    return stabilize_(z.clone(), eps)


def stabilize_(z: torch.Tensor, eps: float) -> torch.Tensor:
    """In-place :func:`stabilize` for a temporary ``z`` (one extra buffer; ±eps exact: 2·eps − eps = eps)."""
    return z.add_((z >= 0).to(z.dtype).mul_(2 * eps).sub_(eps))


def _plain_conv2d(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros"


def conv_with(conv: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv`` applied to ``x`` with ``weight`` and no bias; keeps the module's own padding logic."""
    if _plain_conv2d(conv):
        return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    params = {"weight": weight}
    if getattr(conv, "bias", None) is not None:
        params["bias"] = torch.zeros_like(conv.bias)
    return functional_call(conv, params, (x,))


def conv_vjp(conv: nn.Module, x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(∂ conv(x; weight)/∂x)ᵀ s — a transposed convolution, without building an autograd graph when possible."""
    if _plain_conv2d(conv) and not isinstance(conv.padding, str):
        return torch.nn.grad.conv2d_input(x.shape, weight, s, conv.stride, conv.padding, conv.dilation, conv.groups)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(conv_with(conv, xg, weight), xg, s)
    return g


def _flat_share(m: LRPConv, x: torch.Tensor, relevance: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Flat rule for the neurons whose z⁺ denominator vanished (no positive contribution in the window):
    their relevance is spread evenly over the inputs of their window (padding excluded)."""
    vanished = (z <= 0).to(relevance.dtype)
    count = conv_with(m.layer, torch.ones_like(x), m.w_ones)
    return conv_vjp(m.layer, x, m.w_ones, relevance * vanished / count.clamp(min=1))


def _gamma_relevance(m: LRPConv, x: torch.Tensor, relevance: torch.Tensor, eps: float) -> torch.Tensor:
    """Generalised γ rule (zennit's ``Gamma``, bias ignored): where the neuron's output is positive the inputs share
    by x⁺(w + γw⁺) + x⁻(w + γw⁻), where negative by x⁺(w + γw⁻) + x⁻(w + γw⁺); for x ≥ 0 and positive outputs it
    is Montavon et al.'s γ rule."""
    w = m.layer.weight
    w_up, w_down = w + m.gamma * m.w_pos, w + m.gamma * m.w_neg
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    out = m.layer(x)
    total = None
    for mask, (a, b) in (((out > 0), (w_up, w_down)), ((out < 0), (w_down, w_up))):
        z = stabilize_(conv_with(m.layer, xp, a).add_(conv_with(m.layer, xn, b)), eps)
        s = relevance * mask.to(relevance.dtype) / z
        part = conv_vjp(m.layer, x, a, s).mul_(xp).add_(conv_vjp(m.layer, x, b, s).mul_(xn))
        total = part if total is None else total.add_(part)
    return total


class ZPlusFn(RuleFunction):
    """β = 0 (z⁺) rule: R_i = Σ_j (x⁺_i w⁺_ij + x⁻_i w⁻_ij) / z_j · R_j, bias ignored; optionally the flat
    rule where z_j = 0 (``module.flat_fallback``)."""

    @staticmethod
    def plain(x, module, eps, nonneg):
        return module.layer(x)

    @staticmethod
    def forward(ctx, x, module, eps, nonneg):  # noqa: D401 - autograd signature
        ctx.save_for_backward(x)
        ctx.module, ctx.eps, ctx.nonneg = module, eps, nonneg
        return module.layer(x)

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        m = ctx.module
        if not ctx.needs_input_grad[0] or m.skip_backward:
            return None, None, None, None
        if m.epsilon:  # ε rule with the bias in the denominator (input layer of a transformer, as in AttnLRP)
            return _epsilon_relevance(m.layer, (x,), relevance, ctx.eps)[0], None, None, None
        if m.gamma is not None:
            return _gamma_relevance(m, x, relevance, ctx.eps), None, None, None
        # z = x⁺·w⁺ + x⁻·w⁻ ≥ 0, so stabilising is + ε; fresh temporaries are reused in place (less memory traffic)
        if ctx.nonneg:
            z = conv_with(m.layer, x, m.w_pos)
            flat = _flat_share(m, x, relevance, z) if m.flat_fallback else None
            out = conv_vjp(m.layer, x, m.w_pos, torch.div(relevance, z.add_(ctx.eps), out=z)).mul_(x)
            return (out if flat is None else out.add_(flat)), None, None, None
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        z = conv_with(m.layer, xp, m.w_pos).add_(conv_with(m.layer, xn, m.w_neg))
        flat = _flat_share(m, x, relevance, z) if m.flat_fallback else None
        s = torch.div(relevance, z.add_(ctx.eps), out=z)
        out = conv_vjp(m.layer, x, m.w_pos, s).mul_(xp).add_(conv_vjp(m.layer, x, m.w_neg, s).mul_(xn))
        return (out if flat is None else out.add_(flat)), None, None, None


class ZBoxFn(RuleFunction):
    """zβ (box) rule for pixel inputs bounded by [low, high]: R_i = Σ_j (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij)/z_j R_j."""

    @staticmethod
    def plain(x, module, eps):
        return module.layer(x)

    @staticmethod
    def forward(ctx, x, module, eps):
        ctx.save_for_backward(x)
        ctx.module, ctx.eps = module, eps
        return module.layer(x)

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        m = ctx.module
        if not ctx.needs_input_grad[0] or m.skip_backward:
            return None, None, None
        low = m.low.to(x.dtype).expand_as(x)
        high = m.high.to(x.dtype).expand_as(x)
        with torch.enable_grad():
            xs = [t.detach().requires_grad_(True) for t in (x, low, high)]
            z = (conv_with(m.layer, xs[0], m.layer.weight) - conv_with(m.layer, xs[1], m.w_pos)
                 - conv_with(m.layer, xs[2], m.w_neg))
            s = relevance / stabilize(z, ctx.eps)
            g = torch.autograd.grad(z, xs, s)
        # g[1] = −conv_pos-grad, g[2] = −conv_neg-grad, so each term below is x·c − l·c⁺ − h·c⁻
        return x * g[0] + low * g[1] + high * g[2], None, None


def _epsilon_relevance(fn: Callable[..., torch.Tensor], xs: tuple[torch.Tensor, ...], relevance: torch.Tensor,
                       eps: float, share: float = 1.0) -> tuple[torch.Tensor, ...]:
    """x_k ⊙ (∂fn/∂x_k)ᵀ (share · R / (fn(x) ± ε)) for every input x_k: the ε rule of a map that is linear
    (``share`` = 1) or, with ``share`` = 1/n, the uniform rule of an n-linear product."""
    with torch.enable_grad():
        xg = [x.detach().requires_grad_(True) for x in xs]
        z = fn(*xg)
        s = relevance / stabilize(z.detach(), eps)
        grads = torch.autograd.grad(z, xg, s * share if share != 1.0 else s)
    return tuple(x.detach() * g for x, g in zip(xg, grads, strict=True))


class EpsilonFn(RuleFunction):
    """ε rule for a linear map ``fn`` (linear layer with bias, average pooling): R_i = x_i Σ_j w_ij R_j/(z_j ± ε)."""

    @staticmethod
    def plain(x, fn, eps):
        return fn(x)

    @staticmethod
    def forward(ctx, x, fn, eps):
        ctx.save_for_backward(x)
        ctx.fn, ctx.eps = fn, eps
        return fn(x)

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _epsilon_relevance(ctx.fn, (x,), relevance, ctx.eps)[0], None, None


class LinearEpsilonFn(RuleFunction):
    """:class:`EpsilonFn` of an ``nn.Linear``, its output z kept from the forward: the backward is one GEMM,
    R_in = x ⊙ (R / (z ± ε)) W, as the layer's input gradient (no recomputed forward, no autograd graph)."""

    @staticmethod
    def plain(x, layer, eps):
        return layer(x)

    @staticmethod
    def forward(ctx, x, layer, eps):
        z = F.linear(x, layer.weight, layer.bias)
        ctx.save_for_backward(x, z)
        ctx.weight, ctx.eps = layer.weight, eps
        return z

    @staticmethod
    def backward(ctx, relevance):
        x, z = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        s = torch.div(relevance, stabilize(z.detach(), ctx.eps))
        return x * (s @ ctx.weight.detach()), None, None


class MultiEpsilonFn(RuleFunction):
    """ε rule (``share`` 1) or uniform rule (``share`` 1/n) of ``fn(*xs)`` over all its relevance inputs."""

    @staticmethod
    def plain(fn, eps, share, *xs):
        return fn(*xs)

    @staticmethod
    def forward(ctx, fn, eps, share, *xs):
        ctx.save_for_backward(*xs)
        ctx.fn, ctx.eps, ctx.share = fn, eps, share
        return fn(*xs)

    @staticmethod
    def backward(ctx, relevance):
        rel = _epsilon_relevance(ctx.fn, ctx.saved_tensors, relevance, ctx.eps, ctx.share)
        return (None, None, None, *rel)


class EpsilonSumFn(RuleFunction):
    """ε rule for ``a + sign·b`` (residual sums, differences): each input receives its signed share of R."""

    @staticmethod
    def plain(a, b, eps, sign=1.0):
        return a + b if sign == 1.0 else a - b

    @staticmethod
    def forward(ctx, a, b, eps, sign=1.0):
        ctx.save_for_backward(a, b)  # the sum is recomputed in the backward: less memory than saving it
        ctx.eps, ctx.sign = eps, sign
        return a + b if sign == 1.0 else a - b

    @staticmethod
    def backward(ctx, relevance):
        a, b = ctx.saved_tensors
        z = a + b if ctx.sign == 1.0 else a - b
        # z + ε·sign(z) as |z| + ε with z's sign: three passes instead of five. It differs from stabilize() only
        # at z = −0.0, which a sum reaches only when both terms are ±0 — whose shares a·s, b·s are 0 either way
        s = torch.div(relevance, torch.abs(z).add_(ctx.eps).copysign_(z), out=z)
        ra = (a * s).sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
        if not ctx.needs_input_grad[1]:
            rb = None
        else:
            rb = (b * s if ctx.sign == 1.0 else (b * s).neg_()).sum_to_size(b.shape)
        return ra, rb, None, None


class PassFn(RuleFunction):
    """Element-wise operations (activations, scaling by a constant, a gate's signal): relevance passes unchanged."""

    @staticmethod
    def plain(x, fn):
        return fn(x)

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None


class SoftmaxFn(RuleFunction):
    """AttnLRP softmax rule: R_in = x ⊙ (R − s ⊙ Σ_dim R), s = fn(x) = softmax(x); −inf inputs (masks) count as 0."""

    @staticmethod
    def plain(x, fn, dim):
        return fn(x)

    @staticmethod
    def forward(ctx, x, fn, dim):
        s = fn(x)
        ctx.save_for_backward(x, s)
        ctx.dim = dim
        return s

    @staticmethod
    def backward(ctx, relevance):
        x, s = ctx.saved_tensors
        x = torch.where(torch.isneginf(x), torch.zeros_like(x), x)
        return x * (relevance - s * relevance.sum(ctx.dim, keepdim=True)), None, None


class LinearizedFn(RuleFunction):
    """ε rule of a non-linear map made linear at its input (normalisations: the scale is held constant):
    forward ``fn(x)``, backward the ε rule of ``linear_at(x)`` — a linear map equal to ``fn`` at ``x``."""

    @staticmethod
    def plain(x, fn, linear_at, eps):
        return fn(x)

    @staticmethod
    def forward(ctx, x, fn, linear_at, eps):
        ctx.save_for_backward(x)
        ctx.linear_at, ctx.eps = linear_at, eps
        return fn(x)

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        return _epsilon_relevance(ctx.linear_at(x), (x,), relevance, ctx.eps)[0], None, None, None


class LRPConv(nn.Module):
    """A (BN-folded) convolution whose backward applies the z⁺ rule, or zβ when ``low``/``high`` are given.

    ``flat_fallback``: where no input contributes positively to a neuron (z⁺ = 0, common in depthwise
    convolutions) its relevance is spread evenly over its window instead of being lost."""

    def __init__(self, layer: nn.Module, eps: float = 1e-6, nonneg_input: bool = False,
                 low: torch.Tensor | None = None, high: torch.Tensor | None = None, flat_fallback: bool = False,
                 *, pre_bn: tuple[torch.Tensor, torch.Tensor] | None = None, gamma: float | None = None):
        super().__init__()
        self.layer, self.eps, self.nonneg_input = layer, eps, nonneg_input
        self.reads_input = False  # set by the rewrite for convolutions applied to the model input
        self.skip_backward = False  # when True the rule returns no input relevance (saves a backward)
        self.flat_fallback = flat_fallback
        self.epsilon = False  # set by the ε rule (convs.ConvEpsilon) instead of z⁺
        self.gamma = gamma  # the γ rule's γ (convs.Gamma) instead of z⁺
        w = layer.weight.detach()
        self.register_buffer("w_pos", w.clamp(min=0))
        self.register_buffer("w_neg", w.clamp(max=0))
        if flat_fallback:
            self.register_buffer("w_ones", torch.ones_like(w))
        # the folded output is pre_bn_scale·raw + pre_bn_zero per channel, raw = the convolution's own output
        # before batch norm (the public code's dropout and activation site); scale 1, zero 0 without BN
        per_channel = w.reshape(w.shape[0], -1)[:, 0]
        scale, zero = pre_bn if pre_bn is not None else (torch.ones_like(per_channel), torch.zeros_like(per_channel))
        self.register_buffer("pre_bn_zero", zero.to(w.device, w.dtype))
        self.register_buffer("pre_bn_scale", scale.to(w.device, w.dtype))
        self.box = low is not None
        if self.box:
            shape = (1, -1) + (1,) * (w.dim() - 2)
            self.register_buffer("low", low.reshape(shape))
            self.register_buffer("high", high.reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.box:
            return ZBoxFn.apply(x, self, self.eps)
        return ZPlusFn.apply(x, self, self.eps, self.nonneg_input)


class LRPEpsilon(nn.Module):
    """A linear layer or average pooling whose backward applies the ε rule (bias in the denominator)."""

    def __init__(self, layer: nn.Module, eps: float = 1e-6):
        super().__init__()
        self.layer, self.eps = layer, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.layer) is nn.Linear:
            return LinearEpsilonFn.apply(x, self.layer, self.eps)
        return EpsilonFn.apply(x, self.layer, self.eps)


class LRPSum(nn.Module):
    """``a + b`` (or ``a − b``) of two relevance-carrying tensors with the ε rule: residual sums, log-odds."""

    def __init__(self, eps: float = 1e-6, sign: float = 1.0):
        super().__init__()
        self.eps, self.sign = eps, sign

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return EpsilonSumFn.apply(a, b, self.eps, self.sign)


def epsilon_sum(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``a + b`` with the ε rule in the backward."""
    return EpsilonSumFn.apply(a, b, eps, 1.0)


def gate(signal: torch.Tensor, gate_value: torch.Tensor) -> torch.Tensor:
    """``signal · gate`` with all relevance to the signal; the gate path gets none (it is detached) — except in
    :func:`gradient_mode`, where both factors get their gradient."""
    if _GRADIENT.get():
        return signal * gate_value
    return PassFn.apply(signal, lambda s: s * gate_value.detach())
