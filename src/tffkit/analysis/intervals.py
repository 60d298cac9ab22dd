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
    average_precision,
    benjamini_hochberg,
    dominant_group,
    paired_effect,
    paired_effects,
    wilcoxon_p,
)

SEED = 0  # the bootstrap's seed by default (one default for every step)
DOMINANT_SHARE = 0.75  # warn when one group carries more than this share of an effect (|value| × images)
METRICS = ("ap", "acc", "real_acc", "fake_acc")


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


def metric_intervals(scores: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Per set and for the mean over sets: AP, accuracy, real and fake accuracy at 0.5 with their intervals over
    groups (strata: (set, label)). ``scores`` needs ``set, label, prob, group`` (a ``scores.csv``)."""
    names, code = _set_codes(scores["set"])
    labels, probs = scores["label"].to_numpy(int), scores["prob"].to_numpy(float)
    groups = (scores["group"] if "group" in scores else scores["path"]).astype(str).to_numpy()
    strata = [f"{s}/{y}" for s, y in zip(scores["set"], labels, strict=True)]

    def statistic(idx: np.ndarray) -> np.ndarray:
        per_set = np.array([detection_metrics(labels[sel], probs[sel])
                            for sel in (idx[code[idx] == i] for i in range(len(names)))], dtype=float)
        with np.errstate(all="ignore"):
            mean = [np.nanmean(col) if np.isfinite(col).any() else np.nan for col in per_set.T]
        return np.r_[per_set.ravel(), mean]

    found = ClusterResampler(groups, strata=strata, resamples=resamples, seed=seed).intervals(statistic)
    rows = []
    for i, name in enumerate([*names, "mean"]):
        part = code == i if name != "mean" else np.ones(len(code), dtype=bool)
        n_groups = len(set(groups[part])) if name != "mean" else len(set(zip(groups, scores["set"], strict=True)))
        for j, metric in enumerate(METRICS):
            iv = found[i * len(METRICS) + j]
            rows.append({"set": name, "metric": metric, "estimate": iv.estimate, "low": iv.low, "high": iv.high,
                         "groups": n_groups, "resamples": resamples, "seed": seed})
    return pd.DataFrame(rows)


def median_change(color: np.ndarray, gray: np.ndarray) -> float:
    """The change of the median p(fake) without colour, grayscale − colour, in percentage points (NaN when empty)."""
    return 100 * (float(np.median(gray)) - float(np.median(color))) if len(color) else float("nan")


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

    found = ClusterResampler(groups, strata=code, resamples=resamples, seed=seed).intervals(
        lambda idx: [change(idx[code[idx] == i]) for i in range(len(names))])
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

    def share(idx: np.ndarray) -> list[float]:
        out = []
        for i in range(len(names)):
            sel = idx[code[idx] == i]
            out.append(100 * float(np.mean(np.abs(paired_effects(color[sel], gray[sel])) >= EFFECT_THRESHOLD))
                       if len(sel) else float("nan"))
        return out

    found = ClusterResampler(groups, strata=code, resamples=resamples, seed=seed).intervals(share)
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


