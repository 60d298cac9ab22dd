"""Uncertainty of the dropout step (docs/algorithms.md §10): ΔAP and Δ fake accuracy per k with intervals
over groups, random-k as a null distribution, and the shape of the curves — all from ``dropout_scores.csv`` (one
probability column per variant, each image's group), so every number can be recomputed without the model.

The baseline and a variant are scored on the same images, so each resample draws the groups once and recomputes
both: the interval of a difference is paired. Random-k replicas are not averaged into one number: their ΔAP values
form the null distribution in which top-k and low-k are placed as a percentile (never a ratio to the null's mean).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .deletion_stats import resampled_metrics
from .intervals import RESAMPLES, SEED
from .replicates import over_replicates, verdict
from .uncertainty import ClusterResampler, average_precisions, null_percentile

RANDOM_REPEATS = 20  # random-k replicas by default: the null distribution of the changes (docs/algorithms.md §10)
ID_COLUMNS = ["path", "set", "class", "label", "group"]
METRICS = ("ap", "fake_acc")
_VARIANT = re.compile(r"^(top|low|random|replicate)-(\d+)(?:#r(\d+))?$")
REPLICATED = ("random", "replicate")  # kinds with several replicas: random-k draws, top-k of resampled rankings


def variant_column(kind: str, k: int, replica: int = 0) -> str:
    """The column of a variant in ``dropout_scores.csv``: ``baseline``, ``top-12``, ``low-12``, ``random-12#r3``."""
    if kind == "baseline":
        return "baseline"
    return f"{kind}-{k}#r{replica}" if kind in REPLICATED else f"{kind}-{k}"


def scores_wide(heads: Sequence[tuple[str, int, int]], tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per image (rows of the first table): its identity and group, and p(fake) under every variant
    (``heads``: (kind, k, replica) per table, the baseline first)."""
    first = tables[0]
    wide = first[[c for c in ID_COLUMNS if c in first]].copy()
    if "group" not in wide:
        wide["group"] = wide["path"]
    for (kind, k, replica), table in zip(heads, tables, strict=True):
        wide[variant_column(kind, k, replica)] = table["prob"].to_numpy()
    return wide


def _metrics(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(variants, metrics): AP and fake accuracy at 0.5 of every column of ``probs`` (n, variants)."""
    fake = labels == 1
    acc = (probs[fake] > 0.5).mean(axis=0) if fake.any() else np.full(probs.shape[1], np.nan)
    return np.stack([average_precisions(labels, probs), acc], axis=1)


def _resampled_deltas(wide: pd.DataFrame, columns: Sequence[str], *, resamples: int, seed: int) -> np.ndarray:
    """(resamples, variants − 1, sets + 1, metrics): the change from the baseline (``columns[0]``) in every
    resample, per set and averaged over sets (the resampled metrics of :func:`~.deletion_stats.resampled_metrics`:
    strata (set, label), the same draws as :class:`ClusterResampler` with this seed)."""
    _, metrics, _ = resampled_metrics(wide, columns, resamples=resamples, seed=seed)
    per = np.stack([metrics[m][1:] for m in METRICS], -1).transpose(0, 2, 1, 3)  # (B, variants, sets, metrics)
    change = per[:, 1:] - per[:, :1]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no set defines a metric: NaN
        return np.concatenate([change, np.nanmean(change, axis=2, keepdims=True)], axis=2)


def _parse(columns: Sequence[str]) -> tuple[list[tuple[str, int, int]], dict[int, list[str]]]:
    """(top/low variants and the top-k of each ranking replicate as (kind, k, replica), random replica columns per
    k)."""
    fixed, random = [], {}
    order = {"top": 0, "low": 1, "replicate": 2}
    for c in columns:
        m = _VARIANT.match(c)
        if m is None:
            continue
        kind, k, replica = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        if kind == "random":
            random.setdefault(k, []).append(c)
        else:
            fixed.append((kind, k, replica))
    return sorted(fixed, key=lambda v: (v[1], order[v[0]], v[2])), random


def dropout_effects(wide: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Per top-k / low-k variant (and the top-k of each ranking replicate: kind ``replicate``), set (and the mean over
    sets) and metric (AP, fake accuracy at 0.5): the change from the baseline with its 95% interval over groups
    (strata (set, label), paired), and where random-k replicas exist the variant's percentile in their null
    distribution of changes with the null's 2.5–97.5 percentile range."""
    fixed, random = _parse(wide.columns)
    sets = sorted(dict.fromkeys(wide["set"].astype(str)))
    code = wide["set"].astype(str).map({s: i for i, s in enumerate(sets)}).to_numpy()
    labels = wide["label"].to_numpy(int)
    columns = ["baseline"] + [variant_column(*v) for v in fixed]
    probs = wide[columns].to_numpy(float)

    def deltas(idx: np.ndarray, probs: np.ndarray = probs) -> np.ndarray:
        """(variants − 1, sets + 1, metrics): change from the baseline per set and averaged over sets."""
        per_set = np.empty((probs.shape[1], len(sets), len(METRICS)))
        for i in range(len(sets)):
            sel = idx[code[idx] == i]
            per_set[:, i] = _metrics(labels[sel], probs[sel])
        change = per_set[1:] - per_set[:1]
        with np.errstate(all="ignore"):
            return np.concatenate([change, np.nanmean(change, axis=1, keepdims=True)], axis=1)

    shape = (len(fixed), len(sets) + 1, len(METRICS))
    strata = [f"{s}/{y}" for s, y in zip(wide["set"], labels, strict=True)]
    sampler = ClusterResampler(wide["group"].astype(str), strata=strata, resamples=resamples, seed=seed)
    estimate = deltas(np.arange(len(wide))).ravel()
    values = _resampled_deltas(wide, columns, resamples=resamples, seed=seed).reshape(resamples, -1)
    found = [sampler.interval_of(e, values[:, i]) for i, e in enumerate(estimate)]
    nulls = {k: np.stack([deltas(np.arange(len(wide)), wide[["baseline", c]].to_numpy(float))[0] for c in cols])
             for k, cols in random.items()}  # (replicas, sets + 1, metrics) of point estimates
    groups = wide["group"].astype(str).to_numpy()
    n_groups = [len(set(groups[code == i])) for i in range(len(sets))] + [len(set(zip(groups, code, strict=True)))]
    rows = []
    for v, (kind, k, replica) in enumerate(fixed):
        for i, name in enumerate([*sets, "mean"]):
            for j, metric in enumerate(METRICS):
                iv = found[np.ravel_multi_index((v, i, j), shape)]
                null = nulls[k][:, i, j] if k in nulls else np.zeros(0)
                finite = null[np.isfinite(null)]
                rows.append({"kind": kind, "k": k, "replica": replica, "set": name, "metric": metric,
                             "delta": iv.estimate,
                             "low": iv.low, "high": iv.high, "groups": n_groups[i],
                             "null_percentile": null_percentile(iv.estimate, null), "null_replicas": len(finite),
                             "null_low": float(np.percentile(finite, 2.5)) if len(finite) else float("nan"),
                             "null_high": float(np.percentile(finite, 97.5)) if len(finite) else float("nan"),
                             "resamples": resamples, "seed": seed})
    return pd.DataFrame(rows)


def curve_findings(summary: pd.DataFrame, effects: pd.DataFrame) -> list[dict]:
    """Per set (and the mean over sets), the top-k AP curve over every k: where it is not monotone (AP rises as more
    top units are dropped) and every k whose removal raises AP with an interval above zero (a finding: ω counts
    positive relevance only, so removing top units can help the detector)."""
    out = []
    ap = summary[summary["kind"].isin(["baseline", "top"])].groupby(["set", "k"])["ap"].mean().unstack("set")
    ap["mean"] = ap.mean(axis=1)
    for name in ap.columns:
        curve = ap[name].dropna().sort_index()
        rises = [int(k) for k, step in zip(curve.index[1:], np.diff(curve.to_numpy()), strict=True) if step > 0]
        mine = effects[(effects["kind"] == "top") & (effects["set"] == name) & (effects["metric"] == "ap")]
        raised = [int(r.k) for r in mine.itertuples() if r.low > 0]
        out.append({"set": name, "ks": [int(k) for k in curve.index if k > 0], "monotone": not rises,
                    "rises_at": rises, "raises_ap": raised})
    return out


def replicate_findings(effects: pd.DataFrame, *, where: str = "mean", metric: str = "ap") -> list[dict]:
    """Per k, whether dropping the top-k lowers ``metric`` (on ``where``: a set or the mean over sets) for the ranking
    of all source images and for each ranking replicate (resampled source set), each judged on its own interval
    ("yes": interval below 0, "no": above, else "not shown"); the replicates' changes as median and range and the
    claim over them (:func:`~.replicates.verdict`: "yes" only when every replicate shows it)."""
    part = effects[(effects["set"] == where) & (effects["metric"] == metric)]
    judged = {"yes": lambda r: r.high < 0, "no": lambda r: r.low > 0}

    def holds(r) -> str:
        return next((word for word, test in judged.items() if test(r)), "not shown")

    out = []
    for k, rows in part.groupby("k", sort=True):
        reps = rows[rows["kind"] == "replicate"].sort_values("replica")
        top = rows[rows["kind"] == "top"]
        if not len(reps) or not len(top):
            continue
        full = top.iloc[0]
        per = [holds(r) for r in reps.itertuples()]
        out.append({"k": int(k), "set": where, "metric": metric, "claim": f"dropping the top-{k} lowers {metric}",
                    "all_sources": {"delta": float(full["delta"]), "low": float(full["low"]),
                                    "high": float(full["high"]), "holds": holds(full)},
                    "replicates": over_replicates(reps["delta"].tolist()), "per_replicate": per,
                    "holds": verdict(per)})
    return out
