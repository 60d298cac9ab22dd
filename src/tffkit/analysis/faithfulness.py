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

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import distributed as tdist
from ..conventions import resolve
from ..inputs import explainer_for, find_data, input_record, load_model, run_preprocessing
from ..outputs import run_folder
from ..results import RunRecord, write_csv, write_json
from ..wording import direction
from .deletion_stats import BASELINE, column, deletion_statistics
from .dropout import score_variants, set_metrics
from .ffrs import ChannelSets, channel_key, load_ranking, ranking_table
from .uncertainty import RESAMPLES
from .unit_scores import LABELS, SCORED, SourceScores, source_scores, topk_stability

METRICS = ("ap", "fake_acc")
RANDOM_REPEATS = 20  # random rankings: the null of AOPC (docs/algorithms.md §10: ≥ 20); CLI and study default
Pair = tuple[str, int]


def k_grid(n_units: int, k_max: int = 256) -> list[int]:
    """1, 2, 4, … up to ``k_max`` and below the number of units."""
    top = min(k_max, n_units - 1)
    if top < 1:
        raise ValueError(f"a deletion curve needs at least 2 units, the detector has {n_units}")
    return [2 ** i for i in range(int(np.log2(top)) + 1)]


def order_of(layers, score: np.ndarray) -> list[Pair]:
    """Units by descending score, ties by layer order then unit (as ω's ranking)."""
    table = ranking_table(layers, np.asarray(score, dtype=np.float64))
    return list(zip(table["layer"], table["channel"].astype(int), strict=True))


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


def faithfulness(arch: str, weights, source, data, out: str | os.PathLike | None, ranking=None,
                 sets: Sequence[str] | None = None, source_sets: Sequence[str] | None = None,
                 ks: Sequence[int] | None = None, k_max: int = 256, random_repeats: int = RANDOM_REPEATS, seed: int = 0,
                 min_prob: float = 0.9, top_k: int = 114, randomise: Sequence[float] = (0.25, 0.5, 1.0),
                 lrp_epsilon: float = 1e-6, source_max_per_class: int | None = None,
                 max_per_class: int | None = None, preset: str = "detector", batch_size: int = 64,
                 device: str = "auto", num_workers: int | None = None, progress: bool = True,
                 paper_code: bool = False, bounds: str | None = None, zplus_fallback: str | None = None,
                 site: str | None = None, prob_dtype: str | None = None,
                 attention: str = "attnlrp", resamples: int = RESAMPLES) -> FaithfulnessResult:
    """Rank units five ways on the confident fakes of ``source`` (FF-RS from ``ranking``, an ffrs.csv, when given,
    else from this pass), score every ranking by deletion on ``data`` and write faithfulness.csv,
    faithfulness_summary.csv (AOPC with intervals and null percentiles), faithfulness_by_k.csv,
    faithfulness_images.csv (p(fake) per test image and variant), faithfulness.json, unit_scores.csv,
    deletion_curves.png and run.json to ``out``. ``resamples``: cluster-bootstrap resamples (seeded by ``seed``)."""
    if random_repeats < 2:
        raise ValueError(f"--random-repeats must be at least 2 (the null of AOPC), got {random_repeats}")
    ctx = tdist.init(device)
    settings = resolve(paper_code, bounds=bounds, zplus_fallback=zplus_fallback, dropout_site=site,
                       prob_dtype=prob_dtype)
    record = RunRecord("faithfulness", dict(
        arch=arch, weights=str(weights), source=str(source), data=str(data), ranking=str(ranking), sets=sets,
        source_sets=source_sets, ks=list(ks) if ks else None, k_max=k_max, random_repeats=random_repeats,
        seed=seed, min_prob=min_prob, top_k=top_k, randomise=list(randomise), lrp_epsilon=lrp_epsilon,
        source_max_per_class=source_max_per_class, max_per_class=max_per_class, preset=preset,
        batch_size=batch_size, attention=attention, resamples=resamples, **settings), ctx.world)
    with run_folder(out, ctx) as folder:  # checked before the model is built; replaced whole at the end
        found_source = find_data(source, source_sets, max_per_class=source_max_per_class, main=ctx.is_main,
                                 what="source")
        found = find_data(data, sets, max_per_class=max_per_class, main=ctx.is_main, what="test")
        fakes = [s for s in found_source.samples if s.label == 1]
        if not fakes:
            raise ValueError(f"no fake images under {source}")
        model = load_model(arch, weights, ctx.device, ctx.is_main)
        prep = run_preprocessing(model, data)
        lrp = dict(bounds=settings["bounds"], attention=attention, zplus_fallback=settings["zplus_fallback"])
        explainer = explainer_for(model, prep, **lrp)
        scores = source_scores(model, explainer, fakes, ctx, prep, min_prob, randomise, seed, lrp_epsilon, lrp,
                               preset, batch_size, num_workers, progress)
        if sum(scores.counts) == 0:
            raise ValueError(f"no source fake reached p ≥ {min_prob}: the rankings are undefined (lower min_prob)")
        layers = explainer.layers
        omega = scores.score("ffrs")
        orders = {name: order_of(layers, scores.score(name)) for name in SCORED}
        if ranking is not None:
            table = load_ranking(ranking, layers)
            orders["ffrs"] = list(zip(table["layer"], table["channel"].astype(int), strict=True))
        n_units = explainer.n_channels
        ks = sorted({int(k) for k in ks}) if ks else k_grid(n_units, k_max)
        if ks[0] < 1 or ks[-1] >= n_units:
            raise ValueError(f"every k must lie between 1 and {n_units - 1} (the detector's units − 1)")
        top_k = min(top_k, n_units - 1)
        variants = deletion_variants(orders, ks, random_repeats, seed)
        tables, unreadable, n_small = score_variants(explainer, variants, found.samples, ctx, settings["dropout_site"],
                                                     preset, batch_size, num_workers, progress,
                                                     settings["prob_dtype"], prep)
        curves = curve_table(variants, tables)
        images = image_table(variants, tables, found.samples)
        stats = deletion_statistics(images, resamples=resamples, seed=seed)
        summary = stats["summary"]
        sanity = sanity_checks(scores, omega, ks, top_k, resamples=resamples, seed=seed)
        if folder is not None and ctx.is_main:
            write_csv(folder / "faithfulness.csv", curves)
            write_csv(folder / "faithfulness_summary.csv", summary)
            write_csv(folder / "faithfulness_by_k.csv", stats["by_k"])
            write_csv(folder / "faithfulness_images.csv", images)
            write_csv(folder / "unit_scores.csv", unit_table(scores, orders))
            write_json(folder / "faithfulness.json", {
                "k_grid": ks, "rankings": {n: LABELS[n] for n in [*SCORED, "random"]},
                "ffrs_from": str(ranking) if ranking is not None else "this pass", "random_repeats": random_repeats,
                "source_fakes": len(fakes), "confident_fakes": sum(scores.counts), "min_prob": min_prob,
                "n_units": n_units, "lrp_epsilon": lrp_epsilon, "verdicts": verdicts(summary), "sanity": sanity,
                "intervals": {"resamples": resamples, "seed": seed, "test_groups": stats["groups"],
                              "strata": "set, label", "level": 0.95},
                "monotone": stats["monotone"], "rises": stats["rises"]})
            plot_curves(curves, folder / "deletion_curves.png")
            record.write(folder, settings=settings, n_images=len(found.samples), n_source_images=len(fakes),
                         n_skipped=len(unreadable) + len(scores.failed), unreadable=unreadable + scores.failed,
                         **input_record([found_source, found], model, prep, preset, weights, n_small + scores.n_small))
    return FaithfulnessResult(curves, summary, sanity, stats)


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


def plot_curves(curves: pd.DataFrame, path: Path, metrics: Sequence[str] = METRICS) -> None:
    """Deletion curves: one panel per test set and metric, the metric (%) against the units dropped (log scale),
    one line per ranking (random: mean ± std band), the undropped model dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures_tff import readable_pt
    from ..results import save_figure

    sets = list(dict.fromkeys(curves["set"]))
    names = {"ap": "AP (%)", "fake_acc": "fake accuracy, p > 0.5 (%)"}
    colors = {"ffrs": "tab:red", "lrp-epsilon": "tab:purple", "activation": "tab:green", "taylor": "tab:orange",
              "random": "tab:blue"}
    width = min(16.0, 3.4 * len(sets))
    with plt.rc_context({"font.size": readable_pt(width)}):
        fig, axes = plt.subplots(len(metrics), len(sets), figsize=(width, 3.0 * len(metrics) + 0.8), squeeze=False,
                                 sharex=True)
        for j, s in enumerate(sets):
            part = curves[curves["set"] == s]
            for i, m in enumerate(metrics):
                ax = axes[i, j]
                ax.axhline(100 * part[part["ranking"] == "baseline"][m].iloc[0], color="gray", linestyle="--",
                           label="no unit dropped")
                for name, color in colors.items():
                    sub = part[part["ranking"] == name].groupby("k")[m]
                    if not len(sub):
                        continue
                    mean, std = 100 * sub.mean(), 100 * sub.std(ddof=0).fillna(0.0)
                    ax.plot(mean.index, mean.values, marker="o", markersize=3, color=color, label=LABELS[name])
                    if name == "random":
                        ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.2)
                ax.set_xscale("log", base=2)
                ax.set_title(s if i == 0 else "")
                if i == len(metrics) - 1:
                    ax.set_xlabel("units dropped (top-k)")
                if j == 0:
                    ax.set_ylabel(names.get(m, m))
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.suptitle("Deletion curves: detection as each ranking's top units are dropped")
        fig.tight_layout()
        fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)), bbox_to_anchor=(0.5, 0.0),
                   frameon=False)
        save_figure(fig, path)
