"""LRP rules as autograd Functions whose backward maps output relevance to input relevance.

In an explainable model every operation is one of these (or an operation whose ordinary backward
already is the LRP rule: max pooling = winner takes all, reshapes, concatenation). What flows
backwards is therefore relevance, not gradient, and a tensor hook on any intermediate output sees
the relevance of that layer (SPEC §2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps·sign(z), with sign(0) = +1, so denominators never vanish."""
    return stabilize_(z.clone(), eps)


def stabilize_(z: torch.Tensor, eps: float) -> torch.Tensor:
    """In-place :func:`stabilize` for a temporary ``z`` (one extra buffer; ±eps exact: 2·eps − eps = eps)."""
    return z.add_((z >= 0).to(z.dtype).mul_(2 * eps).sub_(eps))


def conv_with(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv`` applied to ``x`` with ``weight`` and no bias; keeps the module's own padding logic."""
    if type(conv) is nn.Conv2d and conv.padding_mode == "zeros":
        return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    params = {"weight": weight}
    if conv.bias is not None:
        params["bias"] = torch.zeros_like(conv.bias)
    return functional_call(conv, params, (x,))


def _epsilon_relevance(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, relevance: torch.Tensor,
                       eps: float) -> torch.Tensor:
    """x ⊙ (∂fn/∂x)ᵀ (R / (fn(x) ± ε)) — the ε rule of any linear map ``fn``."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        z = fn(xg)
        (g,) = torch.autograd.grad(z, xg, relevance / stabilize(z.detach(), eps))
    return xg.detach() * g


def conv_vjp(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(∂ conv(x; weight)/∂x)ᵀ s — a transposed convolution, without building an autograd graph when possible."""
    if type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str):
        return torch.nn.grad.conv2d_input(x.shape, weight, s, conv.stride, conv.padding, conv.dilation, conv.groups)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(conv_with(conv, xg, weight), xg, s)
    return g


class ZPlusFn(torch.autograd.Function):
    """β = 0 (z⁺) rule: R_i = Σ_j (x⁺_i w⁺_ij + x⁻_i w⁻_ij) / z_j · R_j, bias ignored."""

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
        # z = x⁺·w⁺ + x⁻·w⁻ ≥ 0, so stabilising is + ε; fresh temporaries are reused in place (less memory traffic)
        if ctx.nonneg:
            z = conv_with(m.layer, x, m.w_pos).add_(ctx.eps)
            return conv_vjp(m.layer, x, m.w_pos, torch.div(relevance, z, out=z)).mul_(x), None, None, None
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        z = conv_with(m.layer, xp, m.w_pos).add_(conv_with(m.layer, xn, m.w_neg)).add_(ctx.eps)
        s = torch.div(relevance, z, out=z)
        out = conv_vjp(m.layer, x, m.w_pos, s).mul_(xp).add_(conv_vjp(m.layer, x, m.w_neg, s).mul_(xn))
        return out, None, None, None


class ZBoxFn(torch.autograd.Function):
    """zβ (box) rule for pixel inputs bounded by [low, high]: R_i = Σ_j (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij)/z_j R_j."""

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


class EpsilonFn(torch.autograd.Function):
    """ε rule for a linear map ``fn`` (linear layer with bias, average pooling): R_i = x_i Σ_j w_ij R_j/(z_j ± ε)."""

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
        return _epsilon_relevance(ctx.fn, x, relevance, ctx.eps), None, None


class EpsilonSumFn(torch.autograd.Function):
    """ε rule for ``a + b`` (residual sums): each input receives its signed share a/(a+b±ε)·R."""

    @staticmethod
    def forward(ctx, a, b, eps):
        ctx.save_for_backward(a, b)  # the sum is recomputed in the backward: less memory than saving it
        ctx.eps = eps
        return a + b

    @staticmethod
    def backward(ctx, relevance):
        a, b = ctx.saved_tensors
        z = stabilize_(a + b, ctx.eps)
        s = torch.div(relevance, z, out=z)
        ra = (a * s).sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
        rb = (b * s).sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        return ra, rb, None


class GateFn(torch.autograd.Function):
    """Squeeze-excitation / Swish gate ``x · g``: all relevance to the signal x, none to the gate g."""

    @staticmethod
    def forward(ctx, signal, gate):
        return signal * gate

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None


class PassFn(torch.autograd.Function):
    """Activations (ReLU, SiLU, …): relevance passes unchanged."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None


class LRPConv(nn.Module):
    """A (BN-folded) convolution whose backward applies the z⁺ rule, or zβ when ``low``/``high`` are given."""

    def __init__(self, layer: nn.Conv2d, eps: float = 1e-6, nonneg_input: bool = False,
                 low: torch.Tensor | None = None, high: torch.Tensor | None = None):
        super().__init__()
        self.layer, self.eps, self.nonneg_input = layer, eps, nonneg_input
        self.reads_input = False  # set by the rewrite for convolutions applied to the model input
        self.skip_backward = False  # when True the rule returns no input relevance (saves a backward)
        w = layer.weight.detach()
        self.register_buffer("w_pos", w.clamp(min=0))
        self.register_buffer("w_neg", w.clamp(max=0))
        # the folded output is pre_bn_scale·raw + pre_bn_zero per channel, raw = the convolution's own output
        # before batch norm (the public code's dropout and activation site); scale 1, zero 0 without BN
        per_channel = w[:, 0, 0, 0]
        self.register_buffer("pre_bn_zero", getattr(layer, "_tff_pre_bn_zero", torch.zeros_like(per_channel)))
        self.register_buffer("pre_bn_scale", getattr(layer, "_tff_pre_bn_scale", torch.ones_like(per_channel)))
        self.box = low is not None
        if self.box:
            self.register_buffer("low", low.reshape(1, -1, 1, 1))
            self.register_buffer("high", high.reshape(1, -1, 1, 1))

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
        return EpsilonFn.apply(x, self.layer, self.eps)


class LRPPass(nn.Module):
    """An activation module whose backward passes relevance unchanged."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return PassFn.apply(x, self.layer)


def epsilon_sum(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``a + b`` with the ε rule in the backward."""
    return EpsilonSumFn.apply(a, b, eps)


def gate(signal: torch.Tensor, gate_value: torch.Tensor) -> torch.Tensor:
    """``signal · gate`` with all relevance to the signal; the gate path gets none (it is detached)."""
    return GateFn.apply(signal, gate_value.detach())
