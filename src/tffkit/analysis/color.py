"""Colour ablation (docs/algorithms.md §5), the algorithms: detector metrics and counterfeit probabilities on colour vs
grayscale images, and which top-k T-FF are colour-conditional (Mood's median test on their max spatial activations).
The ``tff color`` job is :func:`tffkit.jobs.color.color`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import median_test

from .. import distributed as tdist
from ..data import Perturbation, Preprocessing
from ..lrp import Explainer
from ..passes import DatasetPass
from .activations import TFF, MaxActivationTap

VERSIONS = {"colour": Perturbation(), "grayscale": Perturbation(grayscale=True)}
TABLE_METRICS = {"ap": "AP", "real_acc": "real", "fake_acc": "fake"}


def color_metrics_table(metrics: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-set metrics of each version → (tidy rows version/set/metric/value in %, the paper's Table I.1 layout:
    one row per version, columns ``<set> AP``, ``<set> real``, ``<set> fake``)."""
    rows = []
    for version, table in metrics.items():
        sets = table[(table["class"] == "all") & (table["set"] != "mean")]
        for _, r in sets.iterrows():
            rows += [{"version": version, "set": r["set"], "metric": m, "value": 100 * float(r[m])}
                     for m in TABLE_METRICS]
    tidy = pd.DataFrame(rows)
    wide = tidy.assign(column=tidy["set"] + " " + tidy["metric"].map(TABLE_METRICS))
    order = list(dict.fromkeys(wide["column"]))
    wide = wide.pivot(index="version", columns="column", values="value").reindex(list(metrics))[order]
    return tidy, wide.reset_index()


MEDIAN_COLUMNS = ["set", "n", "median_colour", "median_grayscale", "median_change_pp", "median_change_pct"]


def median_probability_change(color: pd.DataFrame, gray: pd.DataFrame,
                              min_prob: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fakes whose colour p ≥ ``min_prob``: (per-fake p colour/grayscale, per-set medians and their change).

    Sign convention: positive = grayscale raises p. ``median_change_pp`` = 100·(m_gray − m_colour), percentage
    points (the paper's box plots); ``median_change_pct`` = 100·(m_gray − m_colour)/m_colour, relative (NaN
    when m_colour = 0)."""
    keep = ["path", "set", "prob"] + (["group"] if "group" in color else [])
    both = color[color["label"] == 1][keep].merge(
        gray[gray["label"] == 1][["path", "prob"]], on="path", suffixes=("_c", "_g"))
    both = both[both["prob_c"] >= min_prob].rename(columns={"prob_c": "colour", "prob_g": "grayscale"})
    rows = []
    for s, part in both.groupby("set", sort=False):
        mc, mg = float(part["colour"].median()), float(part["grayscale"].median())
        rows.append({"set": s, "n": len(part), "median_colour": mc, "median_grayscale": mg,
                     "median_change_pp": 100 * (mg - mc),
                     "median_change_pct": 100 * (mg - mc) / mc if mc != 0 else float("nan")})
    return both.reset_index(drop=True), pd.DataFrame(rows, columns=MEDIAN_COLUMNS)


def max_activations(explainer: Explainer, tffs: Sequence[TFF], samples, ctx: tdist.DistContext,
                    perturb: Perturbation | None = None, site: str = "folded",
                    **pass_args) -> tuple[np.ndarray, np.ndarray]:
    """(dataset indices (N,), max spatial activation at ``site`` (N, K)) of every readable sample, all ranks,
    sorted."""
    tap = MaxActivationTap(explainer, tffs, site)
    dtype = next(explainer.model.buffers()).dtype
    prep = pass_args.get("preprocessing") or Preprocessing()
    idx, vals = [], []
    for images, indices in DatasetPass(samples, ctx, perturb=perturb, **pass_args):
        idx.append(indices)
        vals.append(tap.run(prep.normalize(images, dtype))[0].double())  # on the device: no sync per batch
    index, values = tdist.gather_rows(idx, vals, (len(tffs),))
    order = np.argsort(index, kind="stable")
    return index[order], values[order]


def mood_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mood's median test of two samples: (statistic, p-value, grand median); (nan, nan, m) when undefined
    (e.g. every value equal: no observation above the grand median)."""
    try:
        stat, p, med, _ = median_test(a, b)
        return float(stat), float(p), float(med)
    except ValueError:
        return float("nan"), float("nan"), float(np.median(np.concatenate([a, b])))


def benjamini_hochberg(p: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Rejections of the Benjamini–Hochberg step-up procedure at FDR ``alpha`` (NaN p-values never rejected)."""
    p = np.asarray(p, dtype=np.float64)
    ok = ~np.isnan(p)
    out = np.zeros(p.shape, dtype=bool)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    order = np.argsort(q, kind="stable")
    below = q[order] <= alpha * np.arange(1, m + 1) / m
    n_reject = int(np.nonzero(below)[0].max()) + 1 if below.any() else 0
    rejected = np.zeros(m, dtype=bool)
    rejected[order[:n_reject]] = True
    out[ok] = rejected
    return out


def mood_tests(color: np.ndarray, gray: np.ndarray, sets: Sequence[str], keys: Sequence[str],
               alpha: float = 0.05) -> pd.DataFrame:
    """One row per (set, T-FF): medians, Mood's statistic and p-value, colour-conditional (p ≤ alpha) and
    the Benjamini–Hochberg decision over the k tests of the set. ``color``/``gray``: (N, K), ``sets``: (N,)."""
    sets = np.asarray(sets)
    rows = []
    for s in dict.fromkeys(sets.tolist()):
        m = sets == s
        part = []
        for j, key in enumerate(keys):
            stat, p, med = mood_test(color[m, j], gray[m, j])
            part.append({"set": s, "tff": j + 1, "key": key, "n": int(m.sum()),
                         "median_colour": float(np.median(color[m, j])),
                         "median_grayscale": float(np.median(gray[m, j])), "grand_median": med,
                         "statistic": stat, "p": p, "colour_conditional": bool(p <= alpha)})
        bh = benjamini_hochberg(np.array([r["p"] for r in part]), alpha)
        rows += [{**r, "bh_colour_conditional": bool(b)} for r, b in zip(part, bh, strict=True)]
    return pd.DataFrame(rows)


def color_conditional_summary(tests: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per set: count and % (100·count/k) of colour-conditional T-FF, raw p ≤ α and BH-corrected."""
    rows = []
    for s, part in tests.groupby("set", sort=False):
        c, b = int(part["colour_conditional"].sum()), int(part["bh_colour_conditional"].sum())
        rows.append({"set": s, "k": k, "count": c, "percent": 100 * c / k, "bh_count": b, "bh_percent": 100 * b / k})
    return pd.DataFrame(rows)
