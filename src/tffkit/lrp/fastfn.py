"""The autograd pieces and modules of the fast composite (:mod:`.fast`): LRP as Gradient × Input.

What flows backwards through a fast model is not relevance R but g = R / a (relevance per unit of the activation
a it belongs to), so that R = a ⊙ g at every tensor. In that form the ε rule of a linear map (linear layer,
convolution, pooling, a sum, a bias) *is* its native backward (up to ε), a product of n relevance-carrying factors
under the uniform rule is its backward times 1/n, the AttnLRP softmax rule is the softmax's backward, LayerNorm
with σ held constant is the backward of the normalisation with σ detached, and the identity rule of an element-wise
non-linearity y = f(x) is one multiply, g_in = g · y / x (LXT's efficient mode, Achtibat et al. 2024). The engine
turns the seed relevance into g at the logit and multiplies g by the input (and by each unit layer's activation
for taps) — see :class:`~tffkit.lrp.engine.Explainer`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .rules import LRPConv, LRPEpsilon, LRPSum, RuleFunction, in_gradient_mode, stabilize
from .transformer import LRPMultiheadAttention, additive_mask


class ScaleGradFn(RuleFunction):
    """Identity forward; the gradient is multiplied by ``factor`` (the uniform rule's 1/n)."""

    @staticmethod
    def plain(x, factor):
        return x

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    return ScaleGradFn.apply(x, factor) if factor != 1.0 else x


class RatioIdentityFn(RuleFunction):
    """Identity rule of an element-wise map ``y = fn(x)`` in gradient form: g_in = g · y / (x ± ε)."""

    @staticmethod
    def plain(x, fn, eps):
        return fn(x)

    @staticmethod
    def forward(ctx, x, fn, eps):
        y = fn(x)
        ctx.save_for_backward(y / x.abs().add_(eps).copysign_(x))  # x ± ε in three passes (−0 counts as negative)
        return y

    @staticmethod
    def backward(ctx, g):
        (ratio,) = ctx.saved_tensors
        return g * ratio, None, None


class DetachedStdLayerNormFn(RuleFunction):
    """``F.layer_norm`` whose backward is that of (x − μ) / σ · w + b with σ held constant (AttnLRP's rule)."""

    @staticmethod
    def plain(x, shape, weight, bias, eps):
        return F.layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def forward(ctx, x, shape, weight, bias, eps):
        dims = tuple(range(-len(shape), 0))
        ctx.save_for_backward(torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps))
        ctx.dims, ctx.weight = dims, weight
        return F.layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def backward(ctx, g):
        (inv_std,) = ctx.saved_tensors
        h = g * ctx.weight.detach() if ctx.weight is not None else g
        return (h - h.mean(ctx.dims, keepdim=True)) * inv_std, None, None, None, None


class _RelToGradFn(torch.autograd.Function):
    """At the input of an operation explained in relevance form: its input relevance R becomes g = R / (x ± ε)."""

    @staticmethod
    def forward(ctx, x, eps):
        ctx.save_for_backward(x)
        ctx.eps = eps
        return x.view_as(x)

    @staticmethod
    def backward(ctx, rel):
        (x,) = ctx.saved_tensors
        return rel / stabilize(x, ctx.eps), None


class _GradToRelFn(torch.autograd.Function):
    """At the output of an operation explained in relevance form: the incoming g becomes R = y · g."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


def to_relevance_form(x: Any, eps: float) -> Any:
    return _RelToGradFn.apply(x, eps) if isinstance(x, torch.Tensor) and x.requires_grad else x


def from_relevance_form(y: Any) -> Any:
    if isinstance(y, torch.Tensor):
        return _GradToRelFn.apply(y) if y.requires_grad else y
    if isinstance(y, tuple):
        return tuple(from_relevance_form(t) for t in y)
    return y


def fast_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
              *, mode: str = "attnlrp") -> torch.Tensor:
    """``F.scaled_dot_product_attention`` (the fused kernel, eval: no dropout) with AttnLRP in gradient form — the
    q and k gradients × 1/4 (uniform rule on QKᵀ after the one on A·V), v's × 1/2 — or CP-LRP (q, k detached)."""
    if not in_gradient_mode():
        if mode == "cp":
            query, key = query.detach(), key.detach()
        else:
            query, key, value = scale_grad(query, 0.25), scale_grad(key, 0.25), scale_grad(value, 0.5)
    kwargs = {"enable_gqa": True} if enable_gqa else {}
    return F.scaled_dot_product_attention(query, key, value, attn_mask, 0.0, is_causal, scale=scale, **kwargs)


class FastLinear(LRPEpsilon):
    """A linear layer (a unit layer when a non-linearity follows) with its native backward: the ε rule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class FastSum(LRPSum):
    """A residual sum ``a ± b`` with its native backward: the ε rule."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b if self.sign == 1.0 else a - b


class _StopAtOutputFn(torch.autograd.Function):
    """``layer(x)`` whose backward gives ``x`` nothing (the relevance is wanted down to the output only); the output
    still requires grad, so a unit layer's hook sees its relevance."""

    @staticmethod
    def forward(ctx, x, layer):
        return layer(x)

    @staticmethod
    def backward(ctx, g):
        return None, None


class FastLRPConv(LRPConv):
    """A (BN-folded) convolution under the ε rule: its native backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip_backward and not in_gradient_mode() and x.requires_grad:
            return _StopAtOutputFn.apply(x, self.layer)
        return self.layer(x)


class ConvertedConv(LRPConv):
    """A convolution rule without a gradient form (z⁺, zβ, γ) inside a fast model: g → R at its output, its rule,
    R → g at its input (exact except where |x| ≈ ε)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_gradient_mode():
            return self.layer(x)
        return from_relevance_form(LRPConv.forward(self, to_relevance_form(x, self.eps)))


class Converted(nn.Module):
    """Any operation explained in relevance form inside a fast model (its relevance-carrying arguments ``keys``)."""

    def __init__(self, inner: nn.Module, keys: tuple, eps: float):
        super().__init__()
        self.inner, self.keys, self.eps = inner, tuple(keys), eps

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if in_gradient_mode():
            return self.inner(*args, **kwargs)
        args = [to_relevance_form(a, self.eps) if i in self.keys else a for i, a in enumerate(args)]
        kwargs = {k: to_relevance_form(a, self.eps) if k in self.keys else a for k, a in kwargs.items()}
        return from_relevance_form(self.inner(*args, **kwargs))


class FastMultiheadAttention(LRPMultiheadAttention):
    """``nn.MultiheadAttention`` in gradient form: native projections, the fused attention kernel with the q, k, v
    gradients rescaled (:func:`fast_sdpa`); ``heads`` (B, heads, L, head_dim) are the head units."""

    def __init__(self, mha: nn.MultiheadAttention, mode: str = "attnlrp", eps: float = 1e-6):
        super().__init__(mha, mode, eps)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, FastLinear(getattr(self, name).layer, eps))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, n_q, e = query.shape
        h = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], h, -1).transpose(1, 2)

        q, k, v = split(self.q_proj(query)), split(self.k_proj(key)), split(self.v_proj(value))
        # nn.MultiheadAttention's boolean masks are True where attention is NOT allowed (the reverse of SDPA's)
        mask = additive_mask(~attn_mask if attn_mask is not None and attn_mask.dtype == torch.bool else attn_mask,
                             q.dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.reshape(b, h, n_q, -1)
        if key_padding_mask is not None:
            pad = key_padding_mask
            pad = additive_mask(~pad, q.dtype) if pad.dtype == torch.bool else pad.to(q.dtype)
            mask = pad.reshape(b, 1, 1, -1) if mask is None else mask + pad.reshape(b, 1, 1, -1)
        ctx = self.heads(fast_sdpa(q, k, v, mask, is_causal=is_causal and mask is None, mode=self.mode))
        out = self.out_proj(ctx.transpose(1, 2).reshape(b, n_q, e))
        return (out.transpose(0, 1) if not self.batch_first else out), None


def gradient_seed(relevance: torch.Tensor, out: torch.Tensor, eps: float) -> torch.Tensor:
    """The g that stands for relevance ``relevance`` at the output ``out``: R / (out ± ε)."""
    return relevance / stabilize(out.detach(), eps)

