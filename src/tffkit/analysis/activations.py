"""Maximum activations of units (docs/algorithms.md §5): which T-FF a ranking names, where a unit's map peaks
on an image, and the activation sites (the BN-folded map where ω is measured, or the raw conv output before batch norm
as the public code read it). Shared by LRP-max and the colour analysis.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..lrp import Explainer
from .ffrs import channel_key, load_ranking, unit_major

TFF = tuple[str, int]  # (layer name, unit index)
SITES = ("folded", "pre-bn")


def position_width(shape: Sequence[int], dim: int) -> int:
    """Positions of a unit's map (its layer output without batch and unit dims, flattened) are reported as
    (h, w) = (p // width, p % width): pixel rows/columns of a conv map, (token, 0) for token layers, (token,
    head dim) for attention heads. ``shape`` excludes the batch dimension; ``dim`` counts it."""
    rest = [s for i, s in enumerate(shape, start=1) if i != dim]
    return rest[-1] if len(rest) >= 2 else 1


def load_tffs(path: str | os.PathLike, k: int, explainer: Explainer) -> list[TFF]:
    """The first ``k`` (layer, channel) of a ranking file (``ffrs.csv`` or the public format), checked."""
    table = load_ranking(path, explainer.layers).head(k)
    return [(str(layer), int(ch)) for layer, ch in zip(table["layer"], table["channel"], strict=True)]


def tff_keys(explainer: Explainer, tffs: Sequence[TFF]) -> list[str]:
    """Public-format keys ``layer.#c(T=C)`` of the T-FF."""
    return [channel_key(layer, c, explainer.by_name[layer].channels) for layer, c in tffs]


def _bn_affine(explainer: Explainer, tffs: Sequence[TFF], which: str, default: float) -> np.ndarray:
    return np.array([float(getattr(explainer.module(layer), which, torch.full((c + 1,), default, device="cpu"))[c])
                     for layer, c in tffs], dtype=np.float64)


def bn_scale(explainer: Explainer, tffs: Sequence[TFF]) -> np.ndarray:
    """Per T-FF the factor s of folded = s·raw + zero (γ/σ of the BN after the conv; 1 without BN)."""
    return _bn_affine(explainer, tffs, "pre_bn_scale", 1.0)


class MaxActivationTap:
    """Forward tap: per image, max over space of each T-FF's map and the (h, w) where it is reached.

    ``site``: the BN-folded map (``folded``) or the raw conv output before batch norm (``pre-bn``, recovered
    from the folded map per channel). ``run(x)`` returns values (B, K) and positions h, w (B, K) in T-FF
    order, from one forward pass.
    """

    def __init__(self, explainer: Explainer, tffs: Sequence[TFF], site: str = "folded"):
        if site not in SITES:
            raise ValueError(f"unknown activation site {site!r}; use one of {SITES}")
        self.explainer, self.k, self.site = explainer, len(tffs), site
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for j, (layer, c) in enumerate(tffs):
            groups.setdefault(layer, ([], []))
            groups[layer][0].append(j)
            groups[layer][1].append(c)
        dev = explainer.device
        self.groups = {}
        for n, (cols, chs) in groups.items():
            chs_t = torch.tensor(chs, device=dev)
            affine = None
            module = explainer.module(n)
            if site == "pre-bn" and hasattr(module, "pre_bn_scale"):  # units other than conv channels have no BN
                scale, zero = module.pre_bn_scale[chs_t], module.pre_bn_zero[chs_t]
                if bool((scale == 0).any()):
                    dead = [c for c, z in zip(chs, (scale == 0).tolist(), strict=True) if z]
                    raise ValueError(f"{n} channels {dead} have BN γ = 0: their pre-BN maps cannot be recovered "
                                     "from the folded model; use the folded site")
                affine = (scale.reshape(1, -1, 1), zero.reshape(1, -1, 1))
            self.groups[n] = (torch.tensor(cols, device=dev), chs_t, affine)
        self.layers = [explainer.by_name[n] for n in groups]

    def __call__(self, layer, act: torch.Tensor) -> None:
        cols, chs, affine = self.groups[layer.name]
        maps = unit_major(act, layer.dim).index_select(1, chs)
        if affine is not None:  # raw = (folded − zero) / scale
            maps = (maps - affine[1].to(maps.dtype)) / affine[0].to(maps.dtype)
        v, p = maps.max(2)
        width = position_width(act.shape[1:], layer.dim)
        self.values[:, cols], self.h[:, cols], self.w[:, cols] = v.to(self.values.dtype), p // width, p % width

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        self.values = torch.empty(b, self.k, dtype=x.dtype, device=x.device)
        self.h = torch.empty(b, self.k, dtype=torch.long, device=x.device)
        self.w = torch.empty_like(self.h)
        self.explainer.forward(x, tap=self, layers=self.layers)
        return self.values, self.h, self.w
