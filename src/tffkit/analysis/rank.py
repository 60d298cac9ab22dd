"""The ``tff rank`` job: ω of every feature map over the confident fakes of a source set, ranked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import distributed as tdist
from ..conventions import resolve
from ..inputs import explainer_for, find_data, input_record, load_model, run_preprocessing
from ..lrp import Explainer
from ..outputs import run_folder
from ..passes import DatasetPass
from ..results import RunRecord, save_figure, write_csv, write_json
from .ffrs import FFRSAccumulator, accumulate_batch, ranking_table, tie_summary


class NoConfidentImagesError(ValueError):
    """No image passed the confidence threshold, so ω is undefined."""


@dataclass
class RankResult:
    """The ranking (fakes), the reals' ranking when asked for, and the summary written to ffrs.json."""

    ranking: pd.DataFrame
    ranking_reals: pd.DataFrame | None
    summary: dict


def rank(arch: str, weights: str | os.PathLike | None, data: str | os.PathLike, out: str | os.PathLike | None,
         sets: Sequence[str] | None = None, max_per_class: int | None = None, min_prob: float = 0.9,
         with_reals: bool = False, k: int = 114, preset: str = "detector", batch_size: int = 64,
         device: str = "auto", num_workers: int | None = None, bounds: str | None = None,
         progress: bool = True, paper_code: bool = False, zplus_fallback: str | None = None,
         attention: str | None = "attnlrp", rank_crop: str | None = None, seed: int = 0, composite: str | None = None,
         input_rule: str = "auto", unit_ranking: str = "by-kind") -> RankResult:
    """Compute ω (docs/algorithms.md §3) with one LRP pass per batch, reduce exactly across processes, write results.

    ``paper_code`` takes the public code's zβ bounds (ω does not depend on them), z⁺ without fallback and random
    resized ranking crop (``rank_crop``, drawn per image from ``seed``) unless given; ``attention`` is the rule inside
    attention layers (``attnlrp`` or ``cp``; None: the composite's); ``composite`` (a name: ``paper``, the default,
    ``attnlrp``, ``cp-lrp``) and ``input_rule`` choose the LRP rules (docs/lrp.md); ``unit_ranking``: ``by-kind``
    (each kind of unit ranked separately, merged by quantile) or ``global``
    (:func:`~tffkit.analysis.ffrs.ranking_table`)."""
    ctx = tdist.init(device)
    settings = resolve(paper_code, bounds=bounds, zplus_fallback=zplus_fallback, rank_crop=rank_crop)
    bounds = settings["bounds"]
    record = RunRecord("rank", dict(arch=arch, weights=str(weights), data=str(data), sets=sets,
                                    max_per_class=max_per_class, min_prob=min_prob, with_reals=with_reals, k=k,
                                    preset=preset, batch_size=batch_size, attention=attention, seed=seed,
                                    composite=composite, input_rule=input_rule, unit_ranking=unit_ranking,
                                    **settings),
                       ctx.world)
    with run_folder(out, ctx) as folder:  # checked before the model is built; replaced whole at the end
        found = find_data(data, sets, max_per_class=max_per_class, main=ctx.is_main)
        samples = [s for s in found.samples if with_reals or s.label == 1]
        if not samples:
            raise NoConfidentImagesError(f"no fake images under {data}")
        model = load_model(arch, weights, ctx.device, ctx.is_main)
        prep = run_preprocessing(model, data)
        if settings["rank_crop"] == "random-resized":
            prep = replace(prep, crop_mode="random-resized", crop_seed=seed)
        run = DatasetPass(samples, ctx, preset, None, batch_size, num_workers, "ranking (LRP)", progress, prep).start()
        explainer = explainer_for(model, prep, bounds=bounds, attention=attention, composite=composite,
                                  input_rule=input_rule, zplus_fallback=settings["zplus_fallback"])  # while decoding
        acc = FFRSAccumulator(explainer.layers, ctx.device, groups=2 if with_reals else 1)
        labels_all = torch.tensor([s.label for s in samples], device=ctx.device)
        idx_parts, prob_parts = [], []  # probabilities stay on the device until the end: no sync per batch
        for images, indices in run:
            probs = accumulate_batch(explainer, acc, prep.normalize(images),
                                     labels_all[indices.to(ctx.device, non_blocking=True)], min_prob, with_reals)
            idx_parts.append(indices)
            prob_parts.append(probs.float())
        tdist.all_reduce_sum(acc.sums)
        tdist.all_reduce_sum(acc.counts)
        tdist.all_reduce_sum(acc.retained)
        failed = run.gather_failed()
        n_small = run.gather_small()
        idx, prob = tdist.gather_rows(idx_parts, prob_parts)
        labels = np.array([samples[i].label for i in idx], dtype=int)
        n_fake_conf = int(acc.counts[0])
        if n_fake_conf == 0:
            fake_p = prob[labels == 1]
            dist = (f"p(fake) of the {len(fake_p)} fakes seen: min {fake_p.min():.3f}, median {np.median(fake_p):.3f}, "
                    f"max {fake_p.max():.3f}") if len(fake_p) else "no fake image could be read"
            raise NoConfidentImagesError(f"no fake reached p ≥ {min_prob} — {dist}. Check that --weights and --arch "
                                         "match, or lower --min-prob.")
        omega = acc.omega().cpu().numpy()
        table = ranking_table(explainer.layers, omega[0], unit_ranking=unit_ranking)
        reals = ranking_table(explainer.layers, omega[1], unit_ranking=unit_ranking) if with_reals else None
        summary = summarize(table, explainer, k, labels, prob, min_prob, failed, acc, with_reals)
        summary["unit_ranking"] = unit_ranking
        top_kinds = table.head(k)["unit"].value_counts(sort=False)
        summary["top_k_unit_kinds"] = {kind: int(n) for kind, n in top_kinds.items()}
        summary.update(confident_groups([samples[i].unit for i in idx], labels, prob, min_prob, found.group_source))
        if folder is not None and ctx.is_main:
            out = folder  # the staging folder (becomes OUT when the run finishes)
            write_csv(out / "ffrs.csv", table.drop(columns=["layer_index"]))
            if reals is not None:
                write_csv(out / "ffrs_reals.csv", reals.drop(columns=["layer_index"]))
            write_json(out / "ffrs.json", summary)
            write_csv(out / "relevance_budget.csv", relevance_budget(explainer, acc, with_reals))
            plot_ranking(table, explainer, k, out)
            record.write(out, settings=settings, n_images=len(samples), n_skipped=len(failed), device=str(ctx.device),
                         **input_record(found, model, prep, preset, weights, n_small))
    return RankResult(table, reals, summary)


def summarize(table: pd.DataFrame, explainer: Explainer, k: int, labels: np.ndarray, prob: np.ndarray,
              min_prob: float, failed: list, acc: FFRSAccumulator, with_reals: bool) -> dict:
    """Counts of images used/skipped, zero-ω channels and the per-layer share of the top-k."""
    top = table.head(k)
    per_layer = top.groupby("layer", sort=False).size()
    return {
        "n_feature_maps": int(len(table)),
        "n_layers": len(explainer.layers),
        "images_seen": int(len(labels)),
        "fakes_used": int(acc.counts[0]),
        "fakes_skipped_not_confident": int(((labels == 1) & (prob < min_prob)).sum()),
        "reals_used": int(acc.counts[1]) if with_reals else 0,
        "reals_skipped_not_confident": int(((labels == 0) & (prob > 1 - min_prob)).sum()) if with_reals else 0,
        "unreadable": failed,
        "min_prob": min_prob,
        "zero_omega_channels": int((table["omega"] == 0).sum()),
        "ties": tie_summary(table["omega"].to_numpy(), k),
        "k": k,
        "top_k_per_layer": {layer.name: int(per_layer.get(layer.name, 0)) for layer in explainer.layers},
        "top_k_omega_range": [float(top["omega"].min()), float(top["omega"].max())],
        "composite": explainer.composite.name,
        "attention": explainer.composite.attention,
        "input_rule": explainer.input_rule,
        "bounds": explainer.bounds,
        "unit_kinds": {kind: int((table["unit"] == kind).sum()) for kind in dict.fromkeys(table["unit"])},
        "lowest_retained_share": _lowest(explainer, acc),
        "relevance_check": explainer.relevance_check.as_dict() if explainer.relevance_check is not None else None,
    }


MIN_CONFIDENT = 30  # a ranking from fewer confident fakes (or from one group) is flagged (docs/algorithms.md §10)


def confident_groups(groups: Sequence[str], labels: np.ndarray, prob: np.ndarray, min_prob: float,
                     group_source: str = "image") -> dict:
    """How many confident fakes (p ≥ ``min_prob``, compared in float32 as the seed is) each group gave, the number
    of groups, and the warning when the ranking rests on fewer than ``MIN_CONFIDENT`` confident fakes or on one group
    (every image its own group when ``group_source`` is ``image``: then only the total counts)."""
    confident = (np.asarray(labels) == 1) & (np.asarray(prob, dtype=np.float32) >= np.float32(min_prob))
    n = int(confident.sum())
    per_group: dict[str, int] | None = None
    n_groups = n
    if group_source != "image":
        named = pd.Series([g or "(none)" for g, c in zip(groups, confident, strict=True) if c], dtype=object)
        per_group = {str(g): int(c) for g, c in named.value_counts(sort=False).sort_index().items()}
        n_groups = len(per_group)
    reasons = []
    if n < MIN_CONFIDENT:
        reasons.append(f"only {n} confident fakes (fewer than {MIN_CONFIDENT})")
    if per_group is not None and n_groups == 1:
        reasons.append(f"all of them from one group ({next(iter(per_group))})")
    warning = ("the ranking rests on " + " and ".join(reasons) + ": treat it as fragile") if reasons else None
    return {"group_source": group_source, "confident_fakes_groups": n_groups,
            "confident_fakes_per_group": per_group, "ranking_warning": warning}


def relevance_budget(explainer: Explainer, acc: FFRSAccumulator, with_reals: bool = False) -> pd.DataFrame:
    """Per unit layer, the mean share of the seeded relevance that reaches it (1 = conserved; below 1 it was
    absorbed by biases or lost, e.g. by z⁺ neurons without positive input)."""
    share = acc.retained_share().cpu().numpy()
    table = pd.DataFrame({"layer_index": [layer.index for layer in explainer.layers],
                          "layer": [layer.name for layer in explainer.layers],
                          "unit": [layer.kind for layer in explainer.layers],
                          "units": [layer.channels for layer in explainer.layers],
                          "retained_share_fakes": share[0]})
    if with_reals:
        table["retained_share_reals"] = share[1]
    return table


def _lowest(explainer: Explainer, acc: FFRSAccumulator) -> dict:
    share = acc.retained_share()[0].cpu().numpy()
    i = int(np.argmin(share))
    return {"layer": explainer.layers[i].name, "share": round(float(share[i]), 6)}


def plot_ranking(table: pd.DataFrame, explainer: Explainer, k: int, out: Path) -> None:
    """Where the top-k feature maps sit (per layer) and the distribution of ω (text readable at the report's width)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures_tff import readable_pt

    names = [layer.name for layer in explainer.layers]
    counts = table.head(k).groupby("layer").size().reindex(names, fill_value=0)
    width = min(16.0, max(6.0, 0.22 * len(names)))
    fs = readable_pt(width)
    step = max(1, int(np.ceil(1.25 * fs / (72 * 0.85 * width / max(1, len(names))))))  # labels that fit their slot
    with plt.rc_context({"font.size": fs}):
        fig, ax = plt.subplots(figsize=(width, 4.0))
        ax.bar(range(len(names)), counts.values, color="tab:red")
        ax.set_xticks(range(0, len(names), step), names[::step], rotation=90)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xlabel("layer (input → output)" + (f"; every {step}th named" if step > 1 else ""))
        ax.set_ylabel(f"# of top-{k} feature maps")
        ax.yaxis.get_major_locator().set_params(integer=True)  # counts
        ax.set_title(f"Where the top-{k} transferable forensic features sit ({len(table)} feature maps)")
        save_figure(fig, out / "topk_per_layer.png")

    fs = readable_pt(6.0)
    with plt.rc_context({"font.size": fs}):
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        omega = table["omega"].to_numpy()
        ax.hist(omega, bins=100, color="tab:blue", log=True, label="all feature maps")
        ax.axvline(omega[min(k, len(omega)) - 1], color="tab:red", linestyle="--", label=f"top-{k} threshold")
        ax.set_xlabel("ω (FF-RS, mean share of positive relevance)")
        ax.set_ylabel("# feature maps (log)")
        ax.legend()
        ax.set_title("Distribution of ω")
        save_figure(fig, out / "omega_distribution.png")
