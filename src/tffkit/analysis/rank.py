"""FF-RS over a dataset pass: ω of every unit from the confident fakes, the ranking's summary and its warnings."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import distributed as tdist
from ..lrp import Explainer
from .ffrs import FFRSAccumulator, accumulate_batch, ranking_table, tie_summary


class NoConfidentImagesError(ValueError):
    """No image passed the confidence threshold, so ω is undefined."""


@dataclass
class RankResult:
    """The ranking (fakes), the reals' ranking when asked for, and the summary written to ffrs.json."""

    ranking: pd.DataFrame
    ranking_reals: pd.DataFrame | None
    summary: dict
    replicate_ranks: pd.DataFrame | None = None  # ffrs_replicates.csv (:func:`replicate_ranks`)


def omega_pass(explainer: Explainer, run, normalize, labels: torch.Tensor, min_prob: float, with_reals: bool,
               device: torch.device, multiplicity: torch.Tensor | None = None
               ) -> tuple[FFRSAccumulator, np.ndarray, np.ndarray]:
    """ω accumulated over a dataset pass (``run`` yields images and their sample indices; ``labels`` of every
    sample on the device), reduced exactly across processes; returns the accumulator and every image's (index,
    p(fake)) of all processes. Probabilities stay on the device until the end: no sync per batch.
    ``multiplicity`` (replicates, samples): each sample's count in each resampled source set
    (:func:`source_replicates`), accumulated in the same pass."""
    replicates = 0 if multiplicity is None else len(multiplicity)
    acc = FFRSAccumulator(explainer.layers, device, groups=2 if with_reals else 1, replicates=replicates)
    idx_parts, prob_parts = [], []
    for images, indices in run:
        on_device = indices.to(device, non_blocking=True)
        probs = accumulate_batch(explainer, acc, normalize(images), labels[on_device], min_prob, with_reals,
                                 None if multiplicity is None else multiplicity[:, on_device])
        idx_parts.append(indices)
        prob_parts.append(probs.float())
    for total in (acc.sums, acc.counts, acc.retained, acc.replicate_sums, acc.replicate_counts):
        if total.numel():
            tdist.all_reduce_sum(total)
    idx, prob = tdist.gather_rows(idx_parts, prob_parts)
    return acc, idx, prob


def source_replicates(groups: Sequence[str], strata: Sequence[str], *, replicates: int, seed: int,
                      device: torch.device) -> torch.Tensor:
    """(replicates, samples) int64: how often each source image is drawn in each of ``replicates`` cluster-bootstrap
    resamples of its source groups (within ``strata``, e.g. the source sets) — a replicate is the ranking the same
    detector would give on another draw of source photographs or prompts (docs/algorithms.md §10)."""
    from .uncertainty import ClusterResampler

    counts = ClusterResampler(groups, strata=strata, resamples=replicates, seed=seed).multiplicities()
    return torch.as_tensor(counts, dtype=torch.int64, device=device)


def replicate_ranks(layers, table: pd.DataFrame, replicate_omega: np.ndarray, *, unit_ranking: str) -> pd.DataFrame:
    """Each unit of ``table`` (in its order: layer, channel, key) and its rank in every replicate's ranking (columns
    ``r1`` … ``rN``, 1 = first): what ``ffrs_replicates.csv`` holds, so later steps can take any replicate's top-k."""
    out = table[["layer", "channel", "key"]].reset_index(drop=True)
    position = {key: i for i, key in enumerate(out["key"])}
    for r, omega in enumerate(replicate_omega, start=1):
        ranked = ranking_table(layers, omega, unit_ranking=unit_ranking)
        rank = np.empty(len(out), dtype=np.int64)
        rank[[position[key] for key in ranked["key"]]] = ranked["rank"].to_numpy()
        out[f"r{r}"] = rank
    return out


def replicate_stability(ranks: pd.DataFrame, k: int) -> tuple[np.ndarray, dict]:
    """How stable the ranking's top-k is over the resampled source sets (``ranks``: :func:`replicate_ranks`, rows
    in the ranking's order): per unit the share of replicates whose top-k holds it, and the overlap of each
    replicate's top-k with the top-k of all source images (median, min, max) with how many top-k units are in at
    least 95% of the replicates' top-k."""
    columns = [c for c in ranks.columns if re.fullmatch(r"r\d+", c)]
    in_top = ranks[columns].to_numpy() <= k  # (units, replicates)
    overlaps = in_top[:k].sum(0) / max(1, min(k, len(ranks)))
    share = in_top.mean(1) if columns else np.zeros(len(ranks))
    return share, {"replicates": len(columns), "top_k_overlap": {
        "median": float(np.median(overlaps)), "min": float(np.min(overlaps)), "max": float(np.max(overlaps))},
        "top_k_in_95_percent": int((share[: min(k, len(share))] >= 0.95).sum())}


def no_confident_fakes(prob: np.ndarray, labels: np.ndarray, min_prob: float) -> NoConfidentImagesError:
    """The refusal when no fake reached ``min_prob``, with the p(fake) of the fakes seen."""
    fake_p = prob[labels == 1]
    dist = (f"p(fake) of the {len(fake_p)} fakes seen: min {fake_p.min():.3f}, median {np.median(fake_p):.3f}, "
            f"max {fake_p.max():.3f}") if len(fake_p) else "no fake image could be read"
    return NoConfidentImagesError(f"no fake reached p ≥ {min_prob} — {dist}. Check that --weights and --arch "
                                  "match, or lower --min-prob.")


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
