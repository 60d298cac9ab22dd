"""Pixel-wise explanations of the detector's logit (docs/algorithms.md §5, control experiment): LRP with our Explainer
and Guided Grad-CAM (Grad-CAM on the last spatial feature map × guided backpropagation), as overlays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as tdist
from ..conventions import resolve
from ..data import Sample
from ..inputs import explainer_for, find_data, input_record, load_model, run_preprocessing
from ..lrp.registry import module_rule
from ..outputs import run_folder
from ..passes import DatasetPass
from ..results import RunRecord, display_path, write_csv, write_json

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


def run_explain(arch: str, weights: str | os.PathLike | None, out: str | os.PathLike,
                images: Sequence[str] | None = None, data: str | os.PathLike | None = None,
                sets: Sequence[str] | None = None, max_per_class: int | None = 4, preset: str = "detector",
                cam_layer: str | None = None, bounds: str | None = None, batch_size: int = 16, device: str = "auto",
                num_workers: int | None = None, progress: bool = True, paper_code: bool = False,
                zplus_fallback: str | None = None, attention: str | None = "attnlrp",
                small_images: str | None = None, composite: str | None = None,
                input_rule: str = "auto") -> pd.DataFrame:
    """The ``tff explain`` job: per image, LRP / Grad-CAM / Guided Grad-CAM overlays and a panel figure.

    Fakes (and loose images) explain +logit, reals −logit (docs/algorithms.md §2 seeds). Writes ``explain.csv`` with the
    logit, p(fake) and the LRP total per image. ``small_images``: ``upscale``/``pad`` for images smaller than the
    crop (default: the data spec's, else upscale). ``composite``/``input_rule``/``attention``: the LRP rules
    (docs/lrp.md; attention None: the composite's).
    """
    from ..report import figures_tff as fig

    if (images is None) == (data is None):
        raise ValueError("give either --images or --data")
    ctx = tdist.init(device)
    settings = resolve(paper_code, bounds=bounds, zplus_fallback=zplus_fallback)
    bounds = settings["bounds"]
    record = RunRecord("explain", dict(arch=arch, weights=str(weights), images=images, data=str(data), sets=sets,
                                       max_per_class=max_per_class, preset=preset, cam_layer=cam_layer,
                                       composite=composite, input_rule=input_rule, **settings),
                       ctx.world)
    with run_folder(out, ctx) as folder:  # checked before the model is built; replaced whole at the end
        found = None if images is not None else find_data(data, sets, max_per_class=max_per_class, main=ctx.is_main)
        samples = image_samples(images) if found is None else found.samples
        model = load_model(arch, weights, ctx.device, ctx.is_main)
        prep = run_preprocessing(model, data, small_images)
        explainer = explainer_for(model, prep, bounds=bounds, zplus_fallback=settings["zplus_fallback"],
                                  attention=attention, composite=composite, input_rule=input_rule)
        out = folder  # the staging folder (becomes OUT when the run finishes)
        rows = []
        run = DatasetPass(samples, ctx, preset, None, batch_size, num_workers, "explaining", progress, prep)
        for imgs, indices in run:
            x = prep.normalize(imgs)
            seed = torch.tensor([1.0 if samples[i].label == 1 else -1.0 for i in indices.tolist()], device=x.device)
            e = explainer.explain(x, seed)
            layer = cam_layer or last_spatial_layer(model, x)
            cam, ggc = guided_grad_cam(model, x, layer, seed)
            lrp = e.input_relevance.sum(1).cpu().numpy()
            cam, ggc, pics = cam.cpu().numpy(), ggc.cpu().numpy(), imgs.permute(0, 2, 3, 1).cpu().numpy()
            for b, i in enumerate(indices.tolist()):
                s = samples[i]
                name = f"{i:05d}_{Path(s.path).stem}"
                logit = float(e.logits[b])
                fig.save_png(fig.overlay(pics[b], lrp[b]), out / "lrp" / f"{name}.png")
                fig.save_png(fig.cam_overlay(pics[b], cam[b]), out / "gradcam" / f"{name}.png")
                fig.save_png(fig.guided_rgb(ggc[b]), out / "guided_gradcam" / f"{name}.png")
                prob = 1 / (1 + np.exp(-logit))
                fig.explain_panel(pics[b], lrp[b], cam[b], ggc[b],
                                  f"{display_path(s.path)}\nlabel {s.label}, logit {logit:.3f}, p(fake) {prob:.3f}, "
                                  f"explained {'+' if seed[b] > 0 else '−'}logit",
                                  out / "panels" / f"{name}.png")
                rows.append({"index": i, "image": s.path, "set": s.set, "class": s.cls, "label": s.label,
                             "logit": logit, "prob": prob, "seed": float(seed[b]), "lrp_sum": float(lrp[b].sum()),
                             "cam_layer": layer, "name": name})
        table = pd.DataFrame([r for part in tdist.gather_objects(rows) for r in part])
        n_small = run.gather_small()
        if len(table):
            table = table.sort_values("index").reset_index(drop=True)
        if ctx.is_main:
            write_csv(out / "explain.csv", table)
            write_json(out / "explain.json", {"n_images": len(table), "cam_layer": cam_layer or "auto"})
            record.write(out, device=str(ctx.device), settings=settings, n_images=len(samples), n_explained=len(table),
                         **input_record(found or [], model, prep, preset, weights, n_small))
    return table
