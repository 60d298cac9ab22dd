"""Uncertainty of deletion curves (docs/algorithms.md §8 and §10): every ranking's AP and fake accuracy per k
on cluster-bootstrap resamples of the test images, the AOPC with its 95% interval, its percentile in the null of
the random rankings' AOPCs, paired differences, and where a curve is not monotone.

Everything is recomputed from the per-image probabilities of every variant (``faithfulness_images.csv``: one row
per test image, one column per ranking, replica and k), so the intervals can be re-derived from the files. A
resample is a vector of image counts (an image's group drawn c times counts c times), and the AP of weighted
images is exact: the tie structure of the scores does not depend on the weights, so each variant is sorted once.
The same resamples serve the undropped model and every curve (paired differences).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .uncertainty import LEVEL, RESAMPLES, ClusterResampler, null_percentile, weighted_ap, weighted_fake_acc

COLUMN = re.compile(r"^p:(?P<ranking>[^#]+)#(?P<replica>\d+)@(?P<k>\d+)$")
BASELINE = "p:baseline#0@0"
METRICS = ("ap", "fake_acc")
CHUNK = 64  # resamples per block of the count matrix


def column(ranking: str, replica: int, k: int) -> str:
    """The per-image file's column of one variant, e.g. ``p:ffrs#0@16``."""
    return f"p:{ranking}#{int(replica)}@{int(k)}"


def parse_columns(images: pd.DataFrame) -> list[tuple[str, int, int, str]]:
    """(ranking, replica, k, column) of every dropped variant of a per-image table (the baseline excluded)."""
    out = []
    for c in images.columns:
        m = COLUMN.match(c)
        if m and c != BASELINE:
            out.append((m["ranking"], int(m["replica"]), int(m["k"]), c))
    return out


def resampled_metrics(images: pd.DataFrame, columns: Sequence[str], *, resamples: int = RESAMPLES, seed: int = 0
                      ) -> tuple[list[str], dict[str, np.ndarray], int]:
    """Per set, AP and fake accuracy of every column on all images (row 0) and on ``resamples`` cluster-bootstrap
    resamples of the groups within each (set, label) stratum. Returns (sets, {metric: (1 + B, sets, columns)},
    number of groups)."""
    sets = sorted(images["set"].astype(str).unique())
    labels = images["label"].to_numpy()
    strata = images["set"].astype(str) + "/" + images["label"].astype(str)
    sampler = ClusterResampler(images["group"].astype(str).tolist(), strata=strata.tolist(), resamples=resamples,
                               seed=seed)
    probs = images[list(columns)].to_numpy(dtype=np.float64)
    rows = {s: np.flatnonzero(images["set"].astype(str).to_numpy() == s) for s in sets}
    out = {m: np.full((1 + resamples, len(sets), len(columns)), np.nan) for m in METRICS}
    start = 0
    for counts in itertools.chain([np.ones((1, len(images)))], sampler.multiplicity_blocks(CHUNK)):
        stop = start + len(counts)
        for j, s in enumerate(sets):
            idx = rows[s]
            out["ap"][start:stop, j] = weighted_ap(labels[idx], probs[idx], counts[:, idx])
            out["fake_acc"][start:stop, j] = weighted_fake_acc(labels[idx], probs[idx], counts[:, idx])
        start = stop
    return sets, out, sampler.n_groups


def _interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(estimate = row 0, low, high) of one statistic's (1 + B,) values; NaN bounds without finite resamples."""
    rest = values[1:][np.isfinite(values[1:])]
    if not np.isfinite(values[0]) or not len(rest):
        return float(values[0]), float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(rest, [tail, 100 - tail])
    return float(values[0]), float(low), float(high)


def _rises(values: Sequence[float], ks: Sequence[int], base: float) -> list[dict]:
    """Where a deletion curve goes up: each k whose metric exceeds the previous point's (k = 0: undropped)."""
    prev, out = base, []
    for k, v in zip(ks, values, strict=True):
        if v > prev:
            out.append({"k": int(k), "rise_pp": round(100 * float(v - prev), 4), "above_baseline": bool(v > base)})
        prev = v
    return out


def deletion_statistics(images: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = 0,
                        reference: str = "ffrs") -> dict:
    """From a per-image table (path, set, label, group, :data:`BASELINE` and one column per variant): the per-k
    table, the AOPC summary (interval, null percentile, difference to the random mean and to ``reference``, with
    intervals) and where curves rise. Random rankings are named ``random``; each other ranking has replica 0."""
    variants = parse_columns(images)
    cols = [BASELINE] + [c for *_, c in variants]
    sets, values, n_groups = resampled_metrics(images, cols, resamples=resamples, seed=seed)
    names = list(dict.fromkeys(r for r, *_ in variants))
    ks = sorted({k for _, _, k, _ in variants})
    replicas = {r: sorted({rep for r_, rep, _, _ in variants if r_ == r}) for r in names}
    pos = {(r, rep, k): 1 + i for i, (r, rep, k, _) in enumerate(variants)}
    by_k, aopc, rises = [], {}, {}
    for m in METRICS:
        v = values[m]  # (1 + B, sets, 1 + variants)
        # (replicas, 1 + B, sets, k): the drop in pp of each replica's curve
        per = {r: np.stack([100 * (v[:, :, :1] - v[:, :, [pos[(r, rep, k)] for k in ks]]) for rep in replicas[r]])
               for r in names}
        for r, c in per.items():
            a = c.mean(3)
            aopc[(r, m)] = np.concatenate([a, a.mean(2, keepdims=True)], 2)  # + "all": the mean over sets
        by_k += _per_k_rows(per, m, sets, ks, v, pos, replicas)
        for r in names:
            for j, s in enumerate(sets):
                found = _rises([v[0, j, pos[(r, 0, k)]] for k in ks], ks, v[0, j, 0]) if r != "random" else []
                if found:
                    rises.setdefault(r, {}).setdefault(m, {})[s] = found
    monotone = {r: {m: {s: s not in rises.get(r, {}).get(m, {}) for s in sets} for m in METRICS}
                for r in names if r != "random"}
    return {"by_k": pd.DataFrame(by_k), "summary": _aopc_summary(aopc, sets, reference), "rises": rises,
            "monotone": monotone, "groups": int(n_groups), "resamples": int(resamples), "seed": int(seed),
            "sets": sets, "ks": ks}


def _per_k_rows(per: dict, metric: str, sets: Sequence[str], ks: Sequence[int], values: np.ndarray, pos: dict,
                replicas: dict) -> list[dict]:
    """Every ranking's metric and drop at every k with its interval (random: the mean over its replicas) and, for
    the others, the percentile of the drop among the random rankings' drops at that k."""
    null = per["random"][:, 0] if "random" in per else None  # (replicas, sets, k) on all images
    rows = []
    for r, c in per.items():
        mean = c.mean(0)
        for j, s in enumerate(sets):
            for i, k in enumerate(ks):
                est, low, high = _interval(mean[:, j, i])
                row = {"ranking": r, "k": int(k), "set": s, "metric": metric,
                       "value": float(np.mean([values[0, j, pos[(r, rep, k)]] for rep in replicas[r]])),
                       "drop_pp": est, "drop_low": low, "drop_high": high}
                if r != "random" and null is not None:
                    row["null_percentile"] = null_percentile(est, null[:, j, i])
                rows.append(row)
    return rows


def _aopc_summary(aopc: dict, sets: Sequence[str], reference: str) -> pd.DataFrame:
    """One row per ranking, set (and ``all``) and metric: AOPC with interval; for random the mean over its
    replicas (interval of that mean) and the null's std, min and max; for the others the null percentile and the
    paired differences to the random mean and to ``reference``."""
    rows = []
    for (r, m), a in aopc.items():  # a: (replicas, 1 + B, sets + 1)
        mean = a.mean(0)
        null = aopc.get(("random", m))
        for j, s in enumerate([*sets, "all"]):
            est, low, high = _interval(mean[:, j])
            row = {"ranking": r, "set": s, "metric": m, "aopc": est, "aopc_low": low, "aopc_high": high,
                   "replicas": len(a)}
            if r == "random":
                finals = a[:, 0, j]
                row.update(null_std=float(finals.std()), null_min=float(finals.min()), null_max=float(finals.max()))
            elif null is not None:
                row["null_percentile"] = null_percentile(est, null[:, 0, j])
                row.update(_diff("vs_random", mean[:, j] - null.mean(0)[:, j]))
            ref = aopc.get((reference, m))
            if ref is not None and r not in (reference, "random"):
                row.update(_diff(f"vs_{reference}", mean[:, j] - ref.mean(0)[:, j]))
            rows.append(row)
    return pd.DataFrame(rows)


def _diff(name: str, values: np.ndarray) -> dict:
    est, low, high = _interval(values)
    shown = np.isfinite(low) and (low > 0 or high < 0)
    return {f"diff_{name}": est, f"diff_{name}_low": low, f"diff_{name}_high": high,
            f"diff_{name}_shown": bool(shown)}


