"""``tff explain``: per image, LRP / Grad-CAM / Guided Grad-CAM overlays of the logit and a panel figure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .options import DetectorOptions, LRPOptions, PaperCode, PassOptions, option, switch

if TYPE_CHECKING:
    import pandas as pd

    from ..data import DataSpec


@dataclass(frozen=True, kw_only=True)
class ExplainOptions(DetectorOptions, PassOptions, LRPOptions, PaperCode):
    """Options of ``tff explain``."""

    sets: tuple[str, ...] | None = option(None, "with --data: sets to use; default all", nargs="+")
    max_per_class: int | None = option(4, "use only the first N images (by file name) of each (set, class, label) "
                                       "folder (with --data)", type=int, metavar="N")
    cam_layer: str | None = option(None, "module for Grad-CAM (default: the last spatial feature map)")
    bounds: str | None = switch("bounds")
    zplus_fallback: str | None = switch("zplus_fallback")


def explain(data: DataSpec | str | os.PathLike | None = None, *, images: Sequence[str] | None = None,
            small_images: str | None = None, options: ExplainOptions = ExplainOptions(),
            out: str | os.PathLike) -> pd.DataFrame:
    """Explain the images of ``data`` or the loose ``images`` (exactly one; ``small_images``: their policy, upscale
    or pad, default the data's): fakes (and loose images) explain +logit, reals −logit (docs/algorithms.md §2).
    Writes the overlays (``lrp/``, ``gradcam/``, ``guided_gradcam/``), one panel
    per image (``panels/``) and ``explain.csv`` (logit, p(fake), LRP total per image; for detectors that mark input
    branches, SPAI's frequency bands, each branch's relevance and share: ``relevance_<band>``, ``share_<band>``)."""
    import pandas as pd

    from .. import distributed as tdist
    from ..analysis.bands import relevance_branches
    from ..analysis.pixel_explain import image_samples
    from ..passes import DatasetPass
    from ..results import write_csv, write_json
    from .runner import Job

    if (images is None) == (data is None):
        raise ValueError("give either --images or --data")
    o = options
    with Job("explain", o, out=out, record={"images": images, "data": str(data)}) as job:
        samples = image_samples(images) if data is None else job.find(data, o.sets, o.max_per_class).samples
        model = job.detector()
        prep = job.preprocessing(model, data, **({"small_images": small_images} if small_images else {}))
        explainer = job.explainer(model, prep, **o.lrp())
        run = DatasetPass(samples, job.ctx, o.preset, None, o.batch_size, o.workers, "explaining", o.progress, prep)
        branches = relevance_branches(model)
        rows = [row for imgs, indices in run for row in _explain_batch(
                model, explainer, prep, imgs, indices, samples, o.cam_layer, job.folder, branches)]
        table = pd.DataFrame([r for part in tdist.gather_objects(rows) for r in part])
        n_small = run.gather_small()
        if len(table):
            table = table.sort_values("index").reset_index(drop=True)
        if job.is_main:
            write_csv(job.folder / "explain.csv", table)
            bands = {b: float(table[f"share_{b}"].mean()) for b in branches} if len(table) and branches else None
            write_json(job.folder / "explain.json", {"n_images": len(table), "cam_layer": o.cam_layer or "auto",
                                                     **({"mean_band_share": bands} if bands else {})})
            job.finish(n_images=len(samples), n_explained=len(table),
                       **job.inputs(model, prep, n_small, found=job.found))
    return table


def _explain_batch(model, explainer, prep, imgs, indices, samples, cam_layer, folder, branches=None) -> list[dict]:
    """One batch: the three maps, the files of each image and its row of explain.csv (with ``branches``: each
    branch's relevance and share, :mod:`tffkit.analysis.bands`)."""
    from pathlib import Path

    import numpy as np
    import torch

    from ..analysis.bands import branch_relevance, branch_rows
    from ..analysis.pixel_explain import guided_grad_cam, last_spatial_layer
    from ..report import figures_tff as fig
    from ..results import display_path

    x = prep.normalize(imgs)
    seed = torch.tensor([1.0 if samples[i].label == 1 else -1.0 for i in indices.tolist()], device=x.device)
    with branch_relevance(explainer, branches or {}) as found:
        e = explainer.explain(x, seed)
    layer = cam_layer or last_spatial_layer(model, x)
    cam, ggc = guided_grad_cam(model, x, layer, seed)
    lrp = e.input_relevance.sum(1).cpu().numpy()
    cam, ggc, pics = cam.cpu().numpy(), ggc.cpu().numpy(), imgs.permute(0, 2, 3, 1).cpu().numpy()
    rows = []
    for b, i in enumerate(indices.tolist()):
        s = samples[i]
        name = f"{i:05d}_{Path(s.path).stem}"
        logit = float(e.logits[b])
        prob = 1 / (1 + np.exp(-logit))
        fig.save_png(fig.overlay(pics[b], lrp[b]), folder / "lrp" / f"{name}.png")
        fig.save_png(fig.cam_overlay(pics[b], cam[b]), folder / "gradcam" / f"{name}.png")
        fig.save_png(fig.guided_rgb(ggc[b]), folder / "guided_gradcam" / f"{name}.png")
        fig.explain_panel(pics[b], lrp[b], cam[b], ggc[b],
                          f"{display_path(s.path)}\nlabel {s.label}, logit {logit:.3f}, p(fake) {prob:.3f}, "
                          f"explained {'+' if seed[b] > 0 else '−'}logit", folder / "panels" / f"{name}.png")
        rows.append({"index": i, "image": s.path, "set": s.set, "class": s.cls, "label": s.label, "logit": logit,
                     "prob": prob, "seed": float(seed[b]), "lrp_sum": float(lrp[b].sum()), "cam_layer": layer,
                     "name": name, **(branch_rows(found, b) if branches else {})})
    return rows
