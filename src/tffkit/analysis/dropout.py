"""Sensitivity assessment (docs/algorithms.md §4): drop feature maps (top-k, random-k, low-k) and re-measure detection.

Dropping sets a feature map to 0 for every image with a forward hook, at the BN-folded conv output
(``folded``, where ω is measured) or, as the public code did, at the raw conv output before batch
norm (``pre-bn``: the folded map becomes the constant BN(0)).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import distributed as tdist
from ..conventions import resolve
from ..data import Preprocessing, Sample
from ..evaluate import scores_table
from ..inputs import explainer_for, find_data, input_record, load_model, run_preprocessing
from ..lrp import Explainer
from ..metrics import binary_metrics
from ..outputs import run_folder
from ..passes import DatasetPass
from ..reference import paper_numbers
from ..results import RunRecord, atomic_write, save_figure, write_csv, write_json
from ..wording import paper_layout
from .dropout_stats import RANDOM_REPEATS, curve_findings, dropout_effects, scores_wide
from .ffrs import ChannelSets, cut_tie, load_ranking, select_channels, tie_note
from .intervals import RESAMPLES, SEED

SITES = ("folded", "pre-bn")


class DropPlan:
    """The forward hooks that drop ``channels`` at ``site``, with their index tensors made once on the device."""

    def __init__(self, explainer: Explainer, channels: Sequence[tuple[str, int]], site: str = "folded"):
        if site not in SITES:
            raise ValueError(f"unknown dropout site {site!r}; use one of {SITES}")
        by_layer: dict[str, list[int]] = defaultdict(list)
        for layer, channel in channels:
            by_layer[layer].append(int(channel))
        self.sites = []
        for layer, idx in by_layer.items():
            module = explainer.module(layer)
            index = torch.tensor(sorted(idx), device=explainer.device)
            zero = getattr(module, "pre_bn_zero", None)  # BN(0) of a folded convolution; other units drop to 0
            fill = zero[index] if site == "pre-bn" and zero is not None else None
            self.sites.append((module, index, fill, explainer.by_name[layer].dim))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block, the explainer's model runs with the units dropped."""

        def hook(_m, _inp, out, index, fill, dim):
            out = out.clone()
            view = out.movedim(dim, 1) if dim != 1 else out  # a view: writing it writes ``out``
            view[:, index] = 0 if fill is None else fill.to(out.dtype).reshape(1, -1, *[1] * (out.dim() - 2))
            return out

        handles = [module.register_forward_hook(functools.partial(hook, index=index, fill=fill, dim=dim))
                   for module, index, fill, dim in self.sites]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


@contextlib.contextmanager
def dropped(explainer: Explainer, channels: Sequence[tuple[str, int]], site: str = "folded") -> Iterator[None]:
    """Within the block, the explainer's model runs with ``channels`` dropped at ``site``."""
    with DropPlan(explainer, channels, site).applied():
        yield


@torch.no_grad()
def score_variants(explainer: Explainer, variants: Sequence[ChannelSets | None], samples: Sequence[Sample],
                   ctx: tdist.DistContext, site: str = "folded", preset: str = "detector", batch_size: int = 64,
                   num_workers: int | None = None, progress: bool = True, prob_dtype: str = "float64",
                   preprocessing: Preprocessing | None = None) -> tuple[list[pd.DataFrame], list[dict], int]:
    """Scores of every variant (``None`` = undropped) from one pass over the data: each batch is decoded
    once and run once per variant; logits stay on the device until the end. Returns (tables, unreadable,
    images smaller than the crop)."""
    plans = [DropPlan(explainer, v.channels if v else (), site) for v in variants]
    model = explainer.model.eval()
    prep = preprocessing or Preprocessing()
    run = DatasetPass(samples, ctx, preset, None, batch_size, num_workers,
                      f"dropout ({len(variants)} variants)", progress, prep)
    idx, logits = [], []  # logits (B, variants) per batch
    for images, indices in run:
        x = prep.normalize(images)
        idx.append(indices)
        per_variant = []
        for plan in plans:
            with plan.applied():
                per_variant.append(model(x).reshape(-1).float())
        logits.append(torch.stack(per_variant, 1))
    index, logit = tdist.gather_rows(idx, logits, (len(plans),))
    return ([scores_table(samples, index, logit[:, v], prob_dtype) for v in range(len(plans))],
            run.gather_failed(), run.gather_small())


def set_metrics(scores: pd.DataFrame, thresholds: dict[str, float], cal_compare: str = "ge") -> list[dict]:
    """Per-set AP and accuracies at 0.5 and at the given (baseline-calibrated) thresholds (p ≥ t or p > t)."""
    rows = []
    for set_name, part in scores.groupby("set", sort=True):
        m = binary_metrics(part["label"], part["prob"], threshold=thresholds[set_name], cal_compare=cal_compare)
        rows.append({"set": set_name, **m})
    return rows


def calibrated_thresholds(scores: pd.DataFrame, fixed_sets: Sequence[str] = ("progan",)) -> dict[str, float]:
    """The undropped model's test-calibrated threshold per set (``fixed_sets`` stay at 0.5, as in the paper)."""
    out = {}
    for set_name, part in scores.groupby("set", sort=True):
        out[set_name] = 0.5 if set_name in fixed_sets else binary_metrics(part["label"], part["prob"])["cal_threshold"]
    return out


def dropout(arch: str, weights: str | os.PathLike | None, ranking: str | os.PathLike, data: str | os.PathLike,
            out: str | os.PathLike | None, sets: Sequence[str] | None = None, ks: Sequence[int] = (114,),
            random_repeats: int = RANDOM_REPEATS, seed: int = 0, site: str | None = None, preset: str = "detector",
            batch_size: int = 64, device: str = "auto", num_workers: int | None = None,
            max_per_class: int | None = None, fixed_threshold_sets: Sequence[str] = ("progan",),
            paper_detector: str | None = None, progress: bool = True, paper_code: bool = False,
            prob_dtype: str | None = None, cal_compare: str | None = None, random_k: str | None = None, *,
            resamples: int = RESAMPLES, bootstrap_seed: int = SEED) -> pd.DataFrame:
    """Baseline and every variant (top-k, random-k × repeats, low-k per k) from one pass over the data;
    long-format table. ``paper_code`` takes the public code's site, probability precision, calibrated
    comparison and random-k protocol unless ``site`` / ``prob_dtype`` / ``cal_compare`` / ``random_k`` are given
    (:mod:`tffkit.conventions`; ``random_k='pooled'``: :func:`pool_random`).
    ``dropout_scores.csv`` keeps every image's probability under every variant; ``dropout_effects.csv`` the changes
    per k with 95% intervals over groups (``resamples``, ``bootstrap_seed``) and their percentile among the random-k
    replicas; ``dropout.json`` the shape of the top-k curves (:mod:`tffkit.analysis.dropout_stats`)."""
    ctx = tdist.init(device)
    settings = resolve(paper_code, dropout_site=site, prob_dtype=prob_dtype, cal_compare=cal_compare,
                       random_k=random_k)
    site = settings["dropout_site"]
    record = RunRecord("dropout", dict(arch=arch, weights=str(weights), ranking=str(ranking), data=str(data),
                                       sets=sets, ks=list(ks), random_repeats=random_repeats, seed=seed, site=site,
                                       preset=preset, batch_size=batch_size, max_per_class=max_per_class,
                                       paper_detector=paper_detector, resamples=resamples,
                                       bootstrap_seed=bootstrap_seed, **settings), ctx.world)
    with run_folder(out, ctx) as folder:  # checked before the model is built; replaced whole at the end
        found = find_data(data, sets, max_per_class=max_per_class, main=ctx.is_main)
        samples = found.samples
        model = load_model(arch, weights, ctx.device, ctx.is_main)
        prep = run_preprocessing(model, data)
        explainer = explainer_for(model, prep)
        table = load_ranking(ranking, explainer.layers)

        variants = [None, *(v for k in ks for v in select_channels(table, k, random_repeats, seed,
                                                                   protocol=settings["random_k"]))]
        omega = table["omega"].to_numpy()
        ties = {f"{kind}-{k}": cut_tie(omega, k if kind == "top" else len(omega) - k)  # ranks decided by layer order
                for k in ks for kind in ("top", "low")}
        scores, unreadable, n_small = score_variants(explainer, variants, samples, ctx, site, preset, batch_size,
                                                     num_workers, progress, settings["prob_dtype"], prep)
        thresholds = calibrated_thresholds(scores[0], fixed_threshold_sets)
        if settings["random_k"] == "pooled":
            variants, scores = pool_random(variants, scores)
        rows = []
        for variant, sc in zip(variants, scores, strict=True):
            head = ({"variant": "baseline", "kind": "baseline", "k": 0, "replica": 0} if variant is None else
                    {"variant": variant.name, "kind": variant.kind, "k": variant.k, "replica": variant.replica,
                     "note": tie_note(variant.kind, variant.k, ties.get(variant.name))})
            rows += [{**head, **r} for r in set_metrics(sc, thresholds, settings["cal_compare"])]
        long = pd.DataFrame(rows)
        long["note"] = long["note"].fillna("")
        if folder is not None and ctx.is_main:
            out = folder  # the staging folder (becomes OUT when the run finishes)
            write_csv(out / "dropout.csv", long)
            summary = summarize(long)
            write_csv(out / "dropout_summary.csv", summary)
            paper = paper_numbers("dropout", paper_detector) if paper_detector else None
            for fmt, suffix in (("markdown", "md"), ("latex", "tex")):
                text = paper_layout(summary, fmt, paper)
                atomic_write(out / f"dropout_table.{suffix}", lambda tmp, text=text: Path(tmp).write_text(text))
            plot_ap_vs_k(summary, out / "ap_vs_k.png")
            heads = [("baseline", 0, 0) if v is None else (v.kind, v.k, v.replica) for v in variants]
            wide = scores_wide(heads, scores)
            write_csv(out / "dropout_scores.csv", wide)
            effects = dropout_effects(wide, resamples=resamples, seed=bootstrap_seed)
            write_csv(out / "dropout_effects.csv", effects)
            write_json(out / "dropout.json", {"curves": curve_findings(summary, effects), "resamples": resamples,
                                              "bootstrap_seed": bootstrap_seed, "random_repeats": random_repeats})
            record.write(out, settings=settings, n_images=len(samples), n_skipped=len(unreadable),
                         unreadable=unreadable, thresholds=thresholds, ties=ties,
                         **input_record(found, model, prep, preset, weights, n_small))
    return long


def pool_random(variants: Sequence[ChannelSets | None], scores: Sequence[pd.DataFrame]
                ) -> tuple[list[ChannelSets | None], list[pd.DataFrame]]:
    """The public code's random-k protocol: the replicas of each k become one variant whose p(fake) is the mean of
    the replicas' (float64 mean of the probabilities in the chosen precision), so one AP and one set of accuracies
    (at the baseline's thresholds) instead of a mean ± std over replicas."""
    groups: dict[int, list[pd.DataFrame]] = defaultdict(list)
    for v, sc in zip(variants, scores, strict=True):
        if v is not None and v.kind == "random":
            groups[v.k].append(sc)
    out_v, out_s = [], []
    for v, sc in zip(variants, scores, strict=True):
        if v is None or v.kind != "random":
            out_v.append(v)
            out_s.append(sc)
        elif v.replica == 0:
            probs = np.stack([g["prob"].to_numpy(np.float64) for g in groups[v.k]])
            assert all(g["path"].equals(sc["path"]) for g in groups[v.k])  # one row order for every variant
            out_v.append(v)
            out_s.append(sc.assign(logit=np.nan, prob=probs.mean(0)))
    return out_v, out_s


def summarize(long: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over random replicas (one row per variant × set)."""
    metrics = ["ap", "acc", "real_acc", "fake_acc", "cal_real_acc", "cal_fake_acc"]
    keys = ["variant", "kind", "k", "set"] + (["note"] if "note" in long.columns else [])
    long = long.assign(note=long["note"].fillna("")) if "note" in long.columns else long
    grouped = long.groupby(keys, sort=False)[metrics]
    mean, std = grouped.mean(), grouped.std(ddof=0).fillna(0.0)
    summary = mean.join(std.add_suffix("_std")).reset_index()
    summary["replicas"] = grouped.size().values
    return summary


def plot_ap_vs_k(summary: pd.DataFrame, path: Path) -> None:
    """AP against k per set, one line per kind (top, random ± std, low), baseline dashed (text readable at the
    report's width)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures_tff import readable_pt

    sets = list(dict.fromkeys(summary["set"]))
    cols = min(4, len(sets))
    rows = int(np.ceil(len(sets) / cols))
    fs = readable_pt(3.2 * cols)
    colors = {"top": "tab:red", "random": "tab:blue", "low": "tab:green"}
    with plt.rc_context({"font.size": fs}):
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows + 0.6), squeeze=False, sharey=True)
        for ax, s in zip(axes.flat, sets, strict=False):
            part = summary[summary["set"] == s]
            base = part[part["kind"] == "baseline"]["ap"]
            if len(base):
                ax.axhline(100 * base.iloc[0], color="gray", linestyle="--", label="baseline")
            for kind, color in colors.items():
                sub = part[part["kind"] == kind].sort_values("k")
                if len(sub):
                    ax.errorbar(sub["k"], 100 * sub["ap"], yerr=100 * sub["ap_std"], marker="o", color=color,
                                label=f"{kind}-k", capsize=3)
            ax.set_title(s)
            ax.set_xlabel("k (maps dropped)")
            ax.locator_params(axis="x", nbins=4)
        for ax in axes[:, 0]:
            ax.set_ylabel("AP (%)")
        for ax in list(axes.flat)[len(sets):]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.suptitle("Sensitivity assessment: AP after dropping k feature maps")
        fig.tight_layout()
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 0.0), frameon=False)
        save_figure(fig, path)
