"""Shifted-window attention (Swin Transformer, Liu et al. 2021; torchvision's ``shifted_window_attention``)
written with LRP rules: the window partition, shift and padding are selections (their gradient is the
rule), the projections get the ε rule and the attention inside each window the engine's attention rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .rules import EpsilonFn, PassFn
from .transformer import attention


def _shift_mask(height: int, width: int, window: tuple[int, int], shift: tuple[int, int],
                like: torch.Tensor) -> torch.Tensor:
    """(windows, N, N) additive mask: −100 between positions that came from different regions of the
    cyclically shifted map (they are not neighbours in the image), 0 elsewhere."""
    rows = torch.zeros(height, dtype=torch.long, device=like.device)
    cols = torch.zeros(width, dtype=torch.long, device=like.device)
    rows[height - window[0]:] += 1
    rows[height - shift[0]:] += 1
    cols[width - window[1]:] += 1
    cols[width - shift[1]:] += 1
    region = rows[:, None] * 3 + cols[None, :]
    region = region.reshape(height // window[0], window[0], width // window[1], window[1])
    region = region.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    differs = region[:, None, :] != region[:, :, None]
    return torch.zeros(differs.shape, dtype=like.dtype, device=like.device).masked_fill(differs, -100.0)


def window_attention(x: torch.Tensor, qkv_weight: torch.Tensor, proj_weight: torch.Tensor,
                     relative_position_bias: torch.Tensor, window_size: list[int], num_heads: int,
                     shift_size: list[int], attention_dropout: float = 0.0, dropout: float = 0.0,
                     qkv_bias: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
                     logit_scale: torch.Tensor | None = None, training: bool = False, *, mode: str = "attnlrp",
                     eps: float = 1e-6) -> torch.Tensor:
    """Window multi-head self-attention of a (B, H, W, C) map, eval mode, with LRP rules (Swin v1 and v2)."""
    b, h, w, c = x.shape
    wh, ww = window_size
    x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
    ph, pw = x.shape[1:3]
    shift = (0 if wh >= ph else shift_size[0], 0 if ww >= pw else shift_size[1])
    if any(shift):
        x = torch.roll(x, (-shift[0], -shift[1]), (1, 2))
    nh, nw = ph // wh, pw // ww
    n = wh * ww
    win = x.reshape(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, n, c)
    if logit_scale is not None and qkv_bias is not None:  # Swin v2 has no key bias
        qkv_bias = torch.cat([qkv_bias[:c], torch.zeros_like(qkv_bias[c:2 * c]), qkv_bias[2 * c:]])
    qkv = EpsilonFn.apply(win, lambda t: F.linear(t, qkv_weight, qkv_bias), eps)
    q, k, v = qkv.reshape(b * nh * nw, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    bias = relative_position_bias.reshape(1, 1, num_heads, n, n)
    if any(shift):
        bias = bias + _shift_mask(ph, pw, (wh, ww), shift, x).reshape(1, nh * nw, 1, n, n)
    bias = bias.expand(b, nh * nw, num_heads, n, n).reshape(b * nh * nw, num_heads, n, n)
    scale = None
    if logit_scale is not None:  # cosine attention: normalising by the held-constant norm passes relevance unchanged
        factor = torch.clamp(logit_scale, max=math.log(100.0)).exp()
        q = PassFn.apply(q, lambda t: F.normalize(t, dim=-1) * factor)
        k = PassFn.apply(k, lambda t: F.normalize(t, dim=-1))
        scale = 1.0
    out = attention(q, k, v, bias, False, scale, mode, eps).transpose(1, 2).reshape(b * nh * nw, n, c)
    out = EpsilonFn.apply(out, lambda t: F.linear(t, proj_weight, proj_bias), eps)
    out = out.reshape(b, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
    if any(shift):
        out = torch.roll(out, shift, (1, 2))
    return out[:, :h, :w, :].contiguous()
