"""Rules for transformer operations (AttnLRP, Achtibat et al., ICML 2024): normalisations, softmax,
products of two activations and attention, composed from the autograd rules of :mod:`.rules`.

- LayerNorm / GroupNorm: the normalising scale 1/σ is a constant, so the layer is linear in x
  (centring, scaling, affine) and gets the ε rule, bias β in the denominator.
- softmax: R_in = x ⊙ (R − s ⊙ Σ R).
- a product of two relevance-carrying tensors (QKᵀ, AV, element-wise): the uniform rule, half of
  each output's relevance to each factor (ε-stabilised); with one constant factor it is linear (ε).
- attention: ``mode='attnlrp'`` uses the two rules above; ``mode='cp'`` (CP-LRP, Ali et al. 2022)
  holds the attention weights constant, so all relevance flows through the values.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .rules import EpsilonFn, LinearizedFn, LRPEpsilon, MultiEpsilonFn, RuleFunction, in_gradient_mode, stabilize_

ATTENTION_MODES = ("attnlrp", "cp")


def layer_norm_linear(normalized_ndim: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      eps: float) -> Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """``linear_at(x0)``: LayerNorm over the last ``normalized_ndim`` dims with σ of ``x0`` held constant."""
    dims = tuple(range(-normalized_ndim, 0))

    def linear_at(x0: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        inv_std = torch.rsqrt(x0.var(dims, unbiased=False, keepdim=True) + eps)

        def fn(t: torch.Tensor) -> torch.Tensor:
            y = (t - t.mean(dims, keepdim=True)) * inv_std
            y = y * weight if weight is not None else y
            return y + bias if bias is not None else y
        return fn
    return linear_at


def group_norm_linear(groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      eps: float) -> Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """``linear_at(x0)``: GroupNorm (channels on dim 1) with each group's σ of ``x0`` held constant."""

    def linear_at(x0: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        g0 = x0.reshape(x0.shape[0], groups, -1)
        inv_std = torch.rsqrt(g0.var(-1, unbiased=False, keepdim=True) + eps)
        shape = (1, -1) + (1,) * (x0.dim() - 2)

        def fn(t: torch.Tensor) -> torch.Tensor:
            g = t.reshape(t.shape[0], groups, -1)
            y = ((g - g.mean(-1, keepdim=True)) * inv_std).reshape(t.shape)
            y = y * weight.reshape(shape) if weight is not None else y
            return y + bias.reshape(shape) if bias is not None else y
        return fn
    return linear_at


def norm_rule(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
              linear_at: Callable[[torch.Tensor], Callable], eps: float) -> torch.Tensor:
    """``fn(x)`` (the exact normalisation) whose backward is the ε rule of ``linear_at(x)``."""
    return LinearizedFn.apply(x, fn, linear_at, eps)


def product(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor,
            eps: float) -> torch.Tensor:
    """``fn(a, b)``, bilinear: uniform rule when both factors carry relevance, ε rule when one is constant."""
    live_a, live_b = a.requires_grad, b.requires_grad
    if live_a and live_b:
        return MultiEpsilonFn.apply(fn, eps, 0.5, a, b)
    if live_a:
        return EpsilonFn.apply(a, lambda t: fn(t, b), eps)
    if live_b:
        return EpsilonFn.apply(b, lambda t: fn(a, t), eps)
    return fn(a, b)


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean attention mask (True = attend) as an additive one (0 / −inf); float masks unchanged."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
              is_causal: bool = False, scale: float | None = None, mode: str = "attnlrp",
              eps: float = 1e-6) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v for (…, L, E) queries/keys and (…, S, Ev) values, with LRP rules."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}; use one of {ATTENTION_MODES}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    mask = additive_mask(attn_mask, q.dtype)
    if is_causal:
        n_q, n_k = q.shape[-2], k.shape[-2]
        causal = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        mask = additive_mask(causal, q.dtype) if mask is None else mask + additive_mask(causal, q.dtype)
    if mode == "cp" and not in_gradient_mode():
        with torch.no_grad():
            scores = q @ k.transpose(-2, -1) * scale
            weights = torch.softmax(scores if mask is None else scores + mask, -1)
        return product(torch.matmul, weights, v, eps)
    scores = product(lambda a, b: a @ b.transpose(-2, -1) * scale, q, k, eps)
    return WeightedSumFn.apply(scores, v, mask, eps)


class WeightedSumFn(RuleFunction):
    """softmax(scores + mask) @ v with the AttnLRP rules: the uniform rule on the product (ε rule when ``v`` is a
    constant), then the softmax rule on the scores (the mask is a constant inside the softmax). Only the scores
    and ``v`` are kept for the backward — the attention weights are recomputed (one (L, S) map per head
    instead of two)."""

    @staticmethod
    def plain(scores, v, mask, eps):
        return torch.softmax(scores if mask is None else scores + mask, -1) @ v

    @staticmethod
    def forward(ctx, scores, v, mask, eps):
        ctx.save_for_backward(scores, v)
        ctx.mask, ctx.eps = mask, eps
        return torch.softmax(scores if mask is None else scores + mask, -1) @ v

    @staticmethod
    def backward(ctx, relevance):
        scores, v = ctx.saved_tensors
        w = torch.softmax(scores if ctx.mask is None else scores + ctx.mask, -1)
        share = 0.5 if ctx.needs_input_grad[1] else 1.0
        s = relevance / stabilize_(w @ v, ctx.eps) * share
        rel_v = v * (w.transpose(-2, -1) @ s) if ctx.needs_input_grad[1] else None
        rel_w = w * (s @ v.transpose(-2, -1))
        x = torch.where(torch.isneginf(scores), torch.zeros_like(scores), scores)
        return x * (rel_w - w * rel_w.sum(-1, keepdim=True)), rel_v, None, None


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
         dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False, *,
         mode: str = "attnlrp", eps: float = 1e-6) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` (eval: no dropout) with LRP rules; output (…, heads, L, Ev)."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    return attention(query, key, value, attn_mask, is_causal, scale, mode, eps)


class HeadsAttention(nn.Module):
    """Multi-head attention rebuilt from LRP rules; ``heads`` is an identity module applied to the per-head outputs
    (B, heads, L, head_dim): the attention heads as units (FF-RS, dropout, LRP-max)."""

    def __init__(self, num_heads: int, mode: str, eps: float):
        super().__init__()
        self.num_heads, self.mode, self.eps = num_heads, mode, eps
        self.heads = nn.Identity()

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
               attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        """Projected (B, L, E) queries and (B, S, E) keys and values → the concatenated heads (B, L, E), with
        ``nn.MultiheadAttention``'s masks (boolean: True where attention is NOT allowed)."""
        b, n_q, e = q.shape
        h = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], h, -1).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        mask = additive_mask(~attn_mask if attn_mask is not None and attn_mask.dtype == torch.bool else attn_mask,
                             q.dtype)
        if mask is not None and mask.dim() == 3:  # (B·heads, L, S)
            mask = mask.reshape(b, h, n_q, -1)
        if key_padding_mask is not None:
            pad = key_padding_mask
            pad = additive_mask(~pad, q.dtype) if pad.dtype == torch.bool else pad.to(q.dtype)
            mask = pad.reshape(b, 1, 1, -1) if mask is None else mask + pad.reshape(b, 1, 1, -1)
        ctx = self.heads(attention(q, k, v, mask, is_causal and mask is None, None, self.mode, self.eps))
        return ctx.transpose(1, 2).reshape(b, n_q, -1)


class LRPMultiheadAttention(HeadsAttention):
    """``nn.MultiheadAttention`` rebuilt from LRP rules: ε on the projections, attention rules inside."""

    def __init__(self, mha: nn.MultiheadAttention, mode: str = "attnlrp", eps: float = 1e-6):
        super().__init__(mha.num_heads, mode, eps)
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("nn.MultiheadAttention with add_bias_kv or add_zero_attn has no LRP rule yet")
        e, self.batch_first = mha.embed_dim, mha.batch_first
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.detach().chunk(3)
        else:
            weights = (mha.q_proj_weight.detach(), mha.k_proj_weight.detach(), mha.v_proj_weight.detach())
        biases = mha.in_proj_bias.detach().chunk(3) if mha.in_proj_bias is not None else (None, None, None)
        projections = []
        for w, b in zip(weights, biases, strict=True):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                if b is not None:
                    lin.bias.copy_(b)
            lin.requires_grad_(False)
            projections.append(LRPEpsilon(lin, eps))
        self.q_proj, self.k_proj, self.v_proj = projections
        out = nn.Linear(e, e, bias=mha.out_proj.bias is not None, device=weights[0].device, dtype=weights[0].dtype)
        out.load_state_dict(mha.out_proj.state_dict())
        out.requires_grad_(False)
        self.out_proj = LRPEpsilon(out, eps)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, None]:
        if not self.batch_first:  # (L, B, E) → (B, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        ctx = self.attend(self.q_proj(query), self.k_proj(key), self.v_proj(value), key_padding_mask, attn_mask,
                          is_causal)
        out = self.out_proj(ctx)
        return (out.transpose(0, 1) if not self.batch_first else out), None


_MHA_FORWARD = inspect.signature(F.multi_head_attention_forward)
_MHA_UNSUPPORTED = ("bias_k", "bias_v", "static_k", "static_v")


def mha_forward_arguments(args: tuple, kwargs: dict) -> dict[str, Any]:
    """``F.multi_head_attention_forward``'s arguments by name (defaults filled in); raises ValueError for the
    options that have no LRP rule yet (extra key/value biases, zero attention, static keys/values)."""
    bound = _MHA_FORWARD.bind(*args, **kwargs)
    bound.apply_defaults()
    named = dict(bound.arguments)
    if any(named[k] is not None for k in _MHA_UNSUPPORTED) or named["add_zero_attn"] is True:
        raise ValueError("multi-head attention with bias_k/bias_v, add_zero_attn or static keys/values has no "
                         "LRP rule yet")
    return named


class LRPFunctionalMultiheadAttention(HeadsAttention):
    """``F.multi_head_attention_forward`` called directly (open_clip's attention pooling in ModifiedResNet) with
    the rules of :class:`LRPMultiheadAttention`: the weights are the call's constant arguments, ε on each
    projection (bias in the denominator), attention rules inside. Sequence-first (L, B, E) or unbatched (L, E)."""

    def __init__(self, num_heads: int, mode: str = "attnlrp", eps: float = 1e-6):
        super().__init__(num_heads, mode, eps)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        a = mha_forward_arguments(args, kwargs)
        if a["num_heads"] != self.num_heads:
            raise ValueError(f"traced with {self.num_heads} heads, called with {a['num_heads']}")
        if a["use_separate_proj_weight"]:
            weights = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
        else:
            weights = a["in_proj_weight"].chunk(3)
        bias = a["in_proj_bias"]
        biases = bias.chunk(3) if bias is not None else (None, None, None)
        query, key, value = a["query"], a["key"], a["value"]
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
        q, k, v = (_linear(t.transpose(0, 1), w, b, self.eps) for t, w, b in
                   zip((query, key, value), weights, biases, strict=True))
        ctx = self.attend(q, k, v, a["key_padding_mask"], a["attn_mask"], a["is_causal"])
        out = _linear(ctx, a["out_proj_weight"], a["out_proj_bias"], self.eps).transpose(0, 1)
        return (out.squeeze(1) if unbatched else out), None


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """F.linear with constant weights by the ε rule."""
    weight = weight.detach()
    bias = bias.detach() if bias is not None else None
    return EpsilonFn.apply(x, lambda t: F.linear(t, weight, bias), eps)
