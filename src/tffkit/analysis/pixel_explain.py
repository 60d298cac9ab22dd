"""Pixel-wise explanations of the detector's logit (docs/algorithms.md §5, control experiment): LRP with our Explainer
and Guided Grad-CAM (Grad-CAM on the last spatial feature map × guided backpropagation), as overlays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Sample
from ..lrp.registry import module_rule

POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d)


def last_spatial_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last leaf module (pooling excluded) whose output is a (B, C, H, W) map: Grad-CAM's layer."""
    seen: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: seen.append(name)
                                       if isinstance(out, torch.Tensor) and out.dim() == 4 else None)
               for name, m in model.named_modules()
               if not list(m.children()) and not isinstance(m, POOLS + (nn.Sigmoid,))]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("the detector has no module producing a (B, C, H, W) feature map")
    return seen[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, seed: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Grad-CAM (B, H, W) in [0, 1] per image: ReLU(Σ_c mean_hw(∂(seed·logit)/∂A_c) · A_c), bilinearly
    upsampled to the input and divided by its max. ``layer``'s last call in the forward is used."""
    found: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: found.append(out))
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True)).reshape(-1)
            act = found[-1]
            seeds = torch.as_tensor(seed, dtype=logits.dtype, device=logits.device).expand_as(logits)
            (grad,) = torch.autograd.grad(logits, act, seeds)
    finally:
        handle.remove()
    cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp(min=1e-12).reshape(-1, 1, 1)
    return cam / peak


class _GuidedFn(torch.autograd.Function):
    """Identity whose backward keeps only positive gradients (guided backpropagation)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


@contextlib.contextmanager
def _guided(model: nn.Module) -> Iterator[None]:
    """Every activation module's output passes through :class:`_GuidedFn`, so gradients that reach an
    activation are non-negative (ReLU: the guided-backprop rule; SiLU/Swish: its usual generalisation)."""
    handles = [m.register_forward_hook(lambda _m, _i, out: _GuidedFn.apply(out))
               for m in model.modules()
               if getattr(module_rule(m), "activation", False) and not isinstance(m, (nn.Sigmoid, nn.Hardsigmoid))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def guided_backprop(model: nn.Module, x: torch.Tensor, seed: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Guided backpropagation of ``seed·logit`` to the input: (B, 3, H, W)."""
    with torch.enable_grad(), _guided(model):
        xg = x.detach().requires_grad_(True)
        logits = model(xg).reshape(-1)
        seeds = torch.as_tensor(seed, dtype=logits.dtype, device=logits.device).expand_as(logits)
        (grad,) = torch.autograd.grad(logits, xg, seeds)
    return grad


def guided_grad_cam(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                    seed: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(Grad-CAM (B, H, W), Guided Grad-CAM = guided backprop × Grad-CAM (B, 3, H, W)) on ``layer``
    (default: :func:`last_spatial_layer`). The model is left unchanged (hooks only)."""
    layer = layer or last_spatial_layer(model, x)
    cam = grad_cam(model, x, layer, seed)
    return cam, guided_backprop(model, x, seed) * cam.unsqueeze(1)


def image_samples(paths: Sequence[str | os.PathLike]) -> list[Sample]:
    """Loose image files as samples (label 1: their logit is explained as 'fake', set ``images``)."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {missing[:5]}")
    return [Sample(str(p), 1, "images", "") for p in paths]
