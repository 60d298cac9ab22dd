"""Intervals of the evaluate and color steps (docs/algorithms.md §10), from the per-image values the passes
wrote (``scores.csv``, ``probabilities.csv``, ``activations_*.csv``, each with its ``group`` column): no model pass.

Every interval is a 95% percentile interval of a cluster bootstrap: whole groups (source photographs, prompts,
classes) are resampled with replacement within each stratum — (set, label) for detection metrics, the set for
statistics over fakes — so images of one photograph count as one observation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..wording import FEW_GROUPS
from .uncertainty import (
    EFFECT_THRESHOLD,
    RESAMPLES,
    ClusterResampler,
    Interval,
    WeightedOrder,
    average_precision,
    benjamini_hochberg,
    dominant_group,
    effect_size,
    paired_effect,
    paired_effects,
    weighted_ap,
    weighted_fake_acc,
    wilcoxon_p,
)

SEED = 0  # the bootstrap's seed by default (one default for every step)
DOMINANT_SHARE = 0.75  # warn when one group carries more than this share of an effect (|value| × images)
METRICS = ("ap", "acc", "real_acc", "fake_acc")
BLOCK_CELLS = 20_000_000  # resamples × images × columns per block of the weighted quantiles (160 MB of counts)


def _set_codes(sets: Sequence[str]) -> tuple[list[str], np.ndarray]:
    names = sorted(dict.fromkeys(str(s) for s in sets))
    code = {s: i for i, s in enumerate(names)}
    return names, np.array([code[str(s)] for s in sets], dtype=int)


def detection_metrics(labels: np.ndarray, probs: np.ndarray) -> list[float]:
    """AP and accuracies at p > 0.5 (overall, real, fake) as :func:`tffkit.metrics.binary_metrics` computes them."""
    pred = probs > 0.5
    real, fake = labels == 0, labels == 1
    nan = float("nan")
    return [average_precision(labels, probs), float((pred == (labels == 1)).mean()) if len(labels) else nan,
            float((~pred[real]).mean()) if real.any() else nan, float(pred[fake].mean()) if fake.any() else nan]


def weighted_detection_metrics(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`detection_metrics` of every resample given by its multiplicities ``weights`` (B, n) → (B, 4)."""
    pred = probs > 0.5
    real, fake = labels == 0, labels == 1
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (w @ (pred == fake)) / w.sum(1)
        real_acc = (w[:, real] @ ~pred[real]) / w[:, real].sum(1)
    return np.column_stack([weighted_ap(labels, probs[:, None], w)[:, 0], acc, real_acc,
                            weighted_fake_acc(labels, probs[:, None], w)[:, 0]])


def _mean_over_sets(per_set: np.ndarray) -> np.ndarray:
    """The mean over sets (axis −2) where a set's value is defined; NaN where none is."""
    finite = np.isfinite(per_set)
    count = finite.sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(finite, per_set, 0.0).sum(-2) / count, np.nan)


def metric_intervals(scores: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Per set and for the mean over sets: AP, accuracy, real and fake accuracy at 0.5 with their intervals over
    groups (strata: (set, label)). ``scores`` needs ``set, label, prob, group`` (a ``scores.csv``). The resamples'
    metrics come from each image's multiplicity in them (:func:`weighted_detection_metrics`), all at once."""
    names, code = _set_codes(scores["set"])
    labels, probs = scores["label"].to_numpy(int), scores["prob"].to_numpy(float)
    groups = (scores["group"] if "group" in scores else scores["path"]).astype(str).to_numpy()
    strata = [f"{s}/{y}" for s, y in zip(scores["set"], labels, strict=True)]
    members = [np.flatnonzero(code == i) for i in range(len(names))]
    per_set = np.array([detection_metrics(labels[m], probs[m]) for m in members], dtype=float)
    estimate = np.r_[per_set.ravel(), _mean_over_sets(per_set)]
    sampler = ClusterResampler(groups, strata=strata, resamples=resamples, seed=seed)
    blocks = []
    for w in sampler.multiplicity_blocks():
        block = np.stack([weighted_detection_metrics(labels[m], probs[m], w[:, m]) for m in members], 1)
        blocks.append(np.concatenate([block.reshape(len(w), -1), _mean_over_sets(block)], 1))
    values = np.concatenate(blocks) if blocks else np.zeros((0, len(estimate)))
    rows = []
    for i, name in enumerate([*names, "mean"]):
        part = code == i if name != "mean" else np.ones(len(code), dtype=bool)
        n_groups = len(set(groups[part])) if name != "mean" else len(set(zip(groups, scores["set"], strict=True)))
        for j, metric in enumerate(METRICS):
            col = i * len(METRICS) + j
            iv = sampler.interval_of(estimate[col], values[:, col])
            rows.append({"set": name, "metric": metric, "estimate": iv.estimate, "low": iv.low, "high": iv.high,
                         "groups": n_groups, "resamples": resamples, "seed": seed})
    return pd.DataFrame(rows)


def median_change(color: np.ndarray, gray: np.ndarray) -> float:
    """The change of the median p(fake) without colour, grayscale − colour, in percentage points (NaN when empty)."""
    return 100 * (float(np.median(gray)) - float(np.median(color))) if len(color) else float("nan")


def _set_intervals(groups: np.ndarray, code: np.ndarray, n_sets: int, estimates: Sequence[float], per_resample,
                   *, columns: int, resamples: int, seed: int) -> list[Interval]:
    """Per set, the interval of a statistic over fakes: groups resampled within each set (stratum = set);
    ``per_resample(w, members)`` gives the statistic of the set's images ``members`` for every row of the
    multiplicities ``w`` (B, n), from ``columns`` values per image (which bounds the resamples per block: a
    :class:`WeightedOrder` holds resamples × images × columns counts)."""
    sampler = ClusterResampler(groups, strata=code, resamples=resamples, seed=seed)
    members = [np.flatnonzero(code == i) for i in range(n_sets)]
    rows = int(np.clip(BLOCK_CELLS // max(1, len(code) * columns), 1, 100))
    blocks = [np.column_stack([per_resample(w, m) for m in members]) for w in sampler.multiplicity_blocks(rows)]
    values = np.concatenate(blocks) if blocks else np.zeros((0, n_sets))
    return [sampler.interval_of(estimates[i], values[:, i]) for i in range(n_sets)]


def median_change_intervals(probs: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = SEED
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per set, the change of the median p(fake) under colour removal (grayscale − colour, pp) with its interval over
    groups of fakes; and, for sets with ≤ ``FEW_GROUPS`` groups, the change per group with the warning when one group
    carries most of it. ``probs``: ``probabilities.csv`` (set, colour, grayscale, group)."""
    if probs.empty:
        return (pd.DataFrame(columns=["set", "estimate", "low", "high", "groups", "dominant_group", "dominant_share"]),
                pd.DataFrame(columns=["set", "group", "n", "median_change_pp"]))
    names, code = _set_codes(probs["set"])
    color, gray = probs["colour"].to_numpy(float), probs["grayscale"].to_numpy(float)
    groups = probs["group"].astype(str).to_numpy() if "group" in probs else probs["path"].astype(str).to_numpy()

    def change(sel: np.ndarray) -> float:
        return median_change(color[sel], gray[sel])

    def changes(w: np.ndarray, m: np.ndarray) -> np.ndarray:  # median_change of every resample of set m
        medians = WeightedOrder(np.column_stack([color[m], gray[m]]), w[:, m]).median()
        return 100 * (medians[:, 1] - medians[:, 0])

    found = _set_intervals(groups, code, len(names), [change(np.flatnonzero(code == i)) for i in range(len(names))],
                           changes, columns=2, resamples=resamples, seed=seed)
    rows, parts = [], []
    for i, name in enumerate(names):
        where = np.flatnonzero(code == i)
        own = list(dict.fromkeys(groups[where].tolist()))
        row = {"set": name, **found[i].as_dict(), "groups": len(own), "resamples": resamples, "seed": seed,
               "dominant_group": "", "dominant_share": float("nan")}
        if len(own) <= FEW_GROUPS:
            per = [{"set": name, "group": g, "n": int((groups[where] == g).sum()),
                    "median_change_pp": change(where[groups[where] == g])} for g in own]
            parts += per
            top = dominant_group([{"group": r["group"], "n": r["n"], "value": r["median_change_pp"]} for r in per],
                                 share=DOMINANT_SHARE)
            if top is not None:
                row.update(dominant_group=top["group"], dominant_share=top["share"])
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(parts, columns=["set", "group", "n", "median_change_pp"])


def paired_tests(color: np.ndarray, gray: np.ndarray, sets: Sequence[str], keys: Sequence[str],
                 alpha: float = 0.05) -> pd.DataFrame:
    """Per (set, T-FF): the Wilcoxon signed-rank p of the paired max activations (colour vs grayscale of the same
    fakes) and the paired effect size (median of grayscale − colour over the IQR of the colour values); conditional
    by effect when |effect| ≥ 0.5, by Wilcoxon when p ≤ ``alpha``."""
    sets = np.asarray(sets)
    rows = []
    for s in dict.fromkeys(sets.tolist()):
        m = sets == s
        for j, key in enumerate(keys):
            effect = paired_effect(color[m, j], gray[m, j])
            p = wilcoxon_p(color[m, j], gray[m, j]) if m.sum() > 1 else float("nan")
            rows.append({"set": s, "tff": j + 1, "key": key, "wilcoxon_p": p, "effect": effect,
                         "effect_conditional": bool(abs(effect) >= EFFECT_THRESHOLD),
                         "wilcoxon_conditional": bool(p <= alpha)})
    return pd.DataFrame(rows)


def detector_bh(tests: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Benjamini–Hochberg over every test of the detector — Mood's (``p``) and Wilcoxon's (``wilcoxon_p``) of all
    sets and T-FF together — as columns ``bh_mood`` and ``bh_wilcoxon`` (NaN p-values are never rejected)."""
    pooled = np.r_[tests["p"].to_numpy(float), tests["wilcoxon_p"].to_numpy(float)]
    ok = np.isfinite(pooled)
    rejected = np.zeros(len(pooled), dtype=bool)
    rejected[ok] = benjamini_hochberg(pooled[ok], alpha=alpha)[0]
    n = len(tests)
    return tests.assign(bh_mood=rejected[:n], bh_wilcoxon=rejected[n:])


def effect_share_intervals(color: np.ndarray, gray: np.ndarray, sets: Sequence[str], groups: Sequence[str], *,
                           resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Per set, the % of T-FF conditional by effect size (|effect| ≥ 0.5) with its interval: groups of fakes are
    resampled (within the set) and every T-FF's effect recomputed on the resample."""
    names, code = _set_codes(sets)
    if len(names) == 0:
        return pd.DataFrame(columns=["set", "estimate", "low", "high", "groups"])

    def share(sel: np.ndarray) -> float:
        return 100 * float(np.mean(np.abs(paired_effects(color[sel], gray[sel])) >= EFFECT_THRESHOLD))

    def shares(w: np.ndarray, m: np.ndarray) -> np.ndarray:  # share of every resample of set m
        before = WeightedOrder(color[m], w[:, m])
        diff = WeightedOrder(gray[m] - color[m], w[:, m]).median()
        effect = effect_size(diff, before.percentile(75) - before.percentile(25))
        return 100 * np.mean(np.abs(effect) >= EFFECT_THRESHOLD, axis=1)

    found = _set_intervals(groups, code, len(names), [share(np.flatnonzero(code == i)) for i in range(len(names))],
                           shares, columns=color.shape[1], resamples=resamples, seed=seed)
    groups = np.asarray([str(g) for g in groups], dtype=object)
    return pd.DataFrame([{"set": name, **found[i].as_dict(), "groups": len(set(groups[code == i])),
                          "resamples": resamples, "seed": seed} for i, name in enumerate(names)])


def paired_summary(tests: pd.DataFrame, shares: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per set: counts of conditional T-FF by Mood (raw, BH over the detector), by Wilcoxon (raw, BH) and by effect
    size, with the effect-size share's interval."""
    rows = []
    for s, part in tests.groupby("set", sort=False):
        iv = shares.set_index("set").loc[s]
        rows.append({"set": s, "k": k, "mood_count": int(part["colour_conditional"].sum()),
                     "mood_bh_count": int(part["bh_mood"].sum()),
                     "wilcoxon_count": int(part["wilcoxon_conditional"].sum()),
                     "wilcoxon_bh_count": int(part["bh_wilcoxon"].sum()),
                     "effect_count": int(part["effect_conditional"].sum()),
                     "mood_percent": 100 * float(part["colour_conditional"].sum()) / k,
                     "effect_percent": float(iv["estimate"]), "effect_low": float(iv["low"]),
                     "effect_high": float(iv["high"]), "groups": int(iv["groups"])})
    return pd.DataFrame(rows)


