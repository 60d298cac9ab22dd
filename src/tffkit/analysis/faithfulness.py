"""Faithfulness of unit rankings (docs/algorithms.md §8): does dropping a ranking's top units hurt detection more
than dropping those of simpler rankings, or of a random one?

Rankings: FF-RS (ω), LRP-ε, mean activation, |gradient × activation| (:mod:`.unit_scores`, one pass over the
source fakes) and random (seeded permutations). Each is scored by feature-map deletion on the test sets: AP and
fake accuracy (p > 0.5) as its top-k units are dropped, k on a log grid — every ranking's every k from one pass
over the test data (:func:`~tffkit.analysis.dropout.score_variants`). The area over the perturbation curve
(AOPC) summarises a curve: the mean over the k grid of baseline − metric, in percentage points, reported with its
95% cluster-bootstrap interval over the groups of test images and as a percentile in the null distribution of the
random rankings' AOPCs (:mod:`.deletion_stats`; never as a ratio to the null's mean). Sanity checks: ω of
cascading randomisations of the detector (Spearman ρ with the trained ω), the stability of every ranking over two
disjoint halves of the source images (Spearman ρ, top-k overlap) and its top-k stability over bootstrap
resamples of the groups of source fakes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..wording import direction
from .deletion_stats import BASELINE, column
from .dropout import set_metrics
from .ffrs import ChannelSets, channel_key, ranking_table
from .uncertainty import RESAMPLES
from .unit_scores import LABELS, SCORED, SourceScores, topk_stability

METRICS = ("ap", "fake_acc")
RANDOM_REPEATS = 20  # random rankings: the null of AOPC (docs/algorithms.md §10: ≥ 20), as FaithfulnessOptions
Pair = tuple[str, int]


def k_grid(n_units: int, k_max: int = 256) -> list[int]:
    """1, 2, 4, … up to ``k_max`` and below the number of units."""
    top = min(k_max, n_units - 1)
    if top < 1:
        raise ValueError(f"a deletion curve needs at least 2 units, the detector has {n_units}")
    return [2 ** i for i in range(int(np.log2(top)) + 1)]


def k_values(ks: Sequence[int] | None, n_units: int, k_max: int = 256) -> list[int]:
    """The k of the deletion curves: ``ks`` sorted without repeats, else :func:`k_grid`; each between 1 and the
    detector's units − 1."""
    out = sorted({int(k) for k in ks}) if ks else k_grid(n_units, k_max)
    if out[0] < 1 or out[-1] >= n_units:
        raise ValueError(f"every k must lie between 1 and {n_units - 1} (the detector's units − 1)")
    return out


def order_of(layers, score: np.ndarray) -> list[Pair]:
    """Units by descending score, ties by layer order then unit (as ω's ranking)."""
    table = ranking_table(layers, np.asarray(score, dtype=np.float64))
    return list(zip(table["layer"], table["channel"].astype(int), strict=True))


def unit_orders(scores: SourceScores, layers, ffrs: pd.DataFrame | None = None) -> dict[str, list[Pair]]:
    """Every scored ranking's units in descending order; FF-RS from ``ffrs`` (a loaded ffrs.csv) when given."""
    orders = {name: order_of(layers, scores.score(name)) for name in SCORED}
    if ffrs is not None:
        orders["ffrs"] = list(zip(ffrs["layer"], ffrs["channel"].astype(int), strict=True))
    return orders


def deletion_variants(orders: dict[str, Sequence[Pair]], ks: Sequence[int], random_repeats: int = RANDOM_REPEATS,
                      seed: int = 0) -> list[ChannelSets | None]:
    """The undropped model (None), then every ranking's top-k for each k, then ``random_repeats`` seeded random
    rankings (permutations of all units, so a replica's sets are nested in k)."""
    units = sorted(next(iter(orders.values())))
    out: list[ChannelSets | None] = [None]
    for name, order in orders.items():
        out += [ChannelSets(f"{name}-{k}", name, k, 0, tuple(order[:k])) for k in ks]
    for r in range(random_repeats):
        perm = np.random.default_rng([seed, r]).permutation(len(units))
        out += [ChannelSets(f"random-{k}", "random", k, r, tuple(units[i] for i in perm[:k])) for k in ks]
    return out


def curve_table(variants: Sequence[ChannelSets | None], scores: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Long table: ranking, k, replica, set, ap, fake_acc, real_acc (threshold 0.5); the undropped model is
    ranking ``baseline`` with k = 0."""
    rows = []
    for variant, sc in zip(variants, scores, strict=True):
        head = ({"ranking": "baseline", "k": 0, "replica": 0} if variant is None else
                {"ranking": variant.kind, "k": variant.k, "replica": variant.replica})
        thresholds = {s: 0.5 for s in sc["set"].unique()}
        rows += [{**head, "set": r["set"], "ap": r["ap"], "fake_acc": r["fake_acc"], "real_acc": r["real_acc"]}
                 for r in set_metrics(sc, thresholds)]
    return pd.DataFrame(rows)


def aopc_table(curves: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """AOPC per ranking, set (and ``all``: the mean over sets) and metric, in percentage points: the mean over the
    k grid of baseline − metric, per replica, then mean and std (ddof 0) over replicas (point estimates; the
    intervals and null percentiles come from :func:`~.deletion_stats.deletion_statistics`)."""
    base = curves[curves["ranking"] == "baseline"].set_index("set")
    dropped = curves[curves["ranking"] != "baseline"]
    rows = []
    for (ranking, replica, set_name), part in dropped.groupby(["ranking", "replica", "set"], sort=False):
        for m in metrics:
            rows.append({"ranking": ranking, "replica": replica, "set": set_name, "metric": m,
                         "aopc": 100.0 * float(np.mean(base.loc[set_name, m] - part[m].to_numpy()))})
    per = pd.DataFrame(rows)
    per = pd.concat([per, per.groupby(["ranking", "replica", "metric"], sort=False)["aopc"].mean().reset_index()
                     .assign(set="all")], ignore_index=True)
    grouped = per.groupby(["ranking", "set", "metric"], sort=False)["aopc"]
    out = pd.DataFrame({"aopc": grouped.mean(), "aopc_std": grouped.std(ddof=0), "replicas": grouped.size()})
    return out.reset_index()


def top_overlap(a: Sequence[Pair], b: Sequence[Pair], k: int) -> float:
    """Share of the top-k of ``a`` that is in the top-k of ``b``."""
    return len(set(a[:k]) & set(b[:k])) / k


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's ρ (scipy.stats.spearmanr; None where a side is constant)."""
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = spearmanr(a, b).statistic
    return None if rho is None or not np.isfinite(rho) else float(rho)


def sanity_checks(scores: SourceScores, ffrs: np.ndarray, ks: Sequence[int], top_k: int, *,
                  resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Split-half stability of every ranking, its top-k stability over bootstrap resamples of the groups of source
    fakes, and ω of each randomised detector against the trained ``ffrs``."""
    layers = scores.layers
    grid = sorted({*map(int, ks), int(top_k)})
    bootstrap = {name: topk_stability(*scores.buckets(name), grid, resamples=resamples, seed=seed)
                 for name in SCORED}
    halves = {}
    for name in SCORED:
        a, b = scores.halves(name)
        oa, ob = order_of(layers, a), order_of(layers, b)
        halves[name] = {"spearman": spearman(a, b), "top_k_overlap": top_overlap(oa, ob, top_k),
                        "overlap_by_k": {int(k): top_overlap(oa, ob, k) for k in ks}}
    trained = order_of(layers, ffrs)
    randomised = [{"fraction": s["fraction"], "modules_redrawn": len(s["modules"]), "top_module": s["modules"][0],
                   "spearman": spearman(ffrs, s["omega"]),
                   "top_k_overlap": top_overlap(trained, order_of(layers, s["omega"]), top_k)}
                  for s in scores.randomised]
    return {"top_k": int(top_k), "fakes_per_half": scores.counts, "split_half": halves, "randomised": randomised,
            "bootstrap": bootstrap, "buckets_hashed": scores.hashed}


def verdicts(summary: pd.DataFrame, metric: str = "ap") -> dict[str, str]:
    """One sentence per ranking from the AOPC of AP over all test sets, with its interval and its percentile in the
    null of random AOPCs; differences to the random mean are written as a direction only where their interval
    excludes zero."""
    rows = summary[(summary["set"] == "all") & (summary["metric"] == metric)].set_index("ranking")
    out = {}
    for name, r in rows.iterrows():
        interval = f"{r['aopc']:.1f} [{r['aopc_low']:.1f}, {r['aopc_high']:.1f}] pp of AP"
        if name == "random":
            out[name] = (f"{LABELS[name]}: AOPC {interval} (mean of {int(r['replicas'])} seeded rankings; their "
                         f"AOPCs {r['null_min']:.1f} to {r['null_max']:.1f}, std {r['null_std']:.1f})")
            continue
        text = f"{LABELS.get(name, name)}: AOPC {interval}"
        if "null_percentile" in r and pd.notna(r["null_percentile"]):
            diff = direction(r["diff_vs_random"], r["diff_vs_random_low"], r["diff_vs_random_high"])
            text += (f", percentile {r['null_percentile']:.0f} of {int(rows.loc['random', 'replicas'])} random "
                     f"rankings; against their mean {diff}")
        out[name] = text
    return out


@dataclass
class FaithfulnessResult:
    """The deletion curves (long), the AOPC summary (intervals, null percentiles), the sanity checks and every
    statistic of :func:`~.deletion_stats.deletion_statistics`."""

    curves: pd.DataFrame
    summary: pd.DataFrame
    sanity: dict
    stats: dict


def image_table(variants: Sequence[ChannelSets | None], tables: Sequence[pd.DataFrame], samples) -> pd.DataFrame:
    """One row per scored test image (path, set, label, group) and its p(fake) under every variant (columns
    ``p:<ranking>#<replica>@<k>``, the undropped model ``p:baseline#0@0``): what the intervals are computed from."""
    unit = {s.path: s.unit for s in samples}
    head = tables[0]
    out = {"path": head["path"], "set": head["set"], "label": head["label"], "group": head["path"].map(unit)}
    for variant, sc in zip(variants, tables, strict=True):
        name = BASELINE if variant is None else column(variant.kind, variant.replica, variant.k)
        out[name] = sc["prob"].to_numpy()
    return pd.DataFrame(out)


def unit_table(scores: SourceScores, orders: dict[str, Sequence[Pair]]) -> pd.DataFrame:
    """One row per unit: key, kind, each ranking's score and rank (1 = first dropped)."""
    layers = scores.layers
    table = pd.DataFrame({"layer": [layer.name for layer in layers for _ in range(layer.channels)],
                          "channel": [c for layer in layers for c in range(layer.channels)],
                          "unit": [layer.kind for layer in layers for _ in range(layer.channels)]})
    table.insert(2, "key", [channel_key(layer.name, c, layer.channels) for layer in layers
                            for c in range(layer.channels)])
    position = {(n, c): i for i, (n, c) in enumerate(zip(table["layer"], table["channel"], strict=True))}
    for name in SCORED:
        table[f"{name}_score"] = scores.score(name)
        rank = np.empty(len(table), dtype=np.int64)
        rank[[position[p] for p in orders[name]]] = np.arange(1, len(table) + 1)
        table[f"{name}_rank"] = rank
    return table.sort_values("ffrs_rank", kind="stable").reset_index(drop=True)
