"""Colour ablation (docs/algorithms.md §5): detector metrics and counterfeit probabilities on colour vs
grayscale images, and which top-k T-FF are colour-conditional (Mood's median test on their max spatial activations).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import median_test

from .. import distributed as tdist
from ..conventions import resolve
from ..data import Perturbation, Preprocessing
from ..evaluate import score_samples
from ..inputs import explainer_for, find_data, input_record, load_model, run_preprocessing
from ..lrp import Explainer
from ..metrics import metrics_table, probabilities
from ..outputs import run_folder
from ..passes import DatasetPass
from ..results import RunRecord, write_csv, write_json
from .activations import TFF, MaxActivationTap, bn_scale, load_tffs, tff_keys
from .intervals import (
    RESAMPLES,
    SEED,
    detector_bh,
    effect_share_intervals,
    median_change_intervals,
    paired_summary,
    paired_tests,
)

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


def colour_conditional_summary(tests: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per set: count and % (100·count/k) of colour-conditional T-FF, raw p ≤ α and BH-corrected."""
    rows = []
    for s, part in tests.groupby("set", sort=False):
        c, b = int(part["colour_conditional"].sum()), int(part["bh_colour_conditional"].sum())
        rows.append({"set": s, "k": k, "count": c, "percent": 100 * c / k, "bh_count": b, "bh_percent": 100 * b / k})
    return pd.DataFrame(rows)


def run_color(arch: str, weights: str | os.PathLike | None, data: str | os.PathLike, out: str | os.PathLike,
              sets: Sequence[str] | None = None, ranking: str | os.PathLike | None = None, k: int = 114,
              max_per_class: int | None = 500, metrics_max_per_class: int | None = None, min_prob: float = 0.2,
              alpha: float = 0.05, preset: str = "detector", batch_size: int = 64, device: str = "auto",
              num_workers: int | None = None, progress: bool = True,
              colour_scores: pd.DataFrame | None = None, paper_code: bool = False,
              activation_site: str | None = None, prob_dtype: str | None = None, *, resamples: int = RESAMPLES,
              bootstrap_seed: int = SEED) -> dict:
    """The ``tff color`` job: Table I.1 metrics, median-probability box plots, colour-conditional T-FF.

    ``colour_scores`` (a ``scores.csv`` of the same detector and images, e.g. from ``tff evaluate``)
    replaces the colour scoring pass (its probabilities are recomputed from the logits in ``prob_dtype``).
    ``paper_code`` takes the public code's activation site (pre-BN) and probability precision unless
    ``activation_site`` / ``prob_dtype`` are given (:mod:`tffkit.conventions`). Beside Mood's test, the paired
    analysis (Wilcoxon, effect size, BH over the detector's tests) and 95% intervals over groups of fakes
    (``resamples`` cluster-bootstrap resamples seeded by ``bootstrap_seed``; docs/algorithms.md §10)."""
    from ..report import figures_tff as fig

    ctx = tdist.init(device)
    settings = resolve(paper_code, activation_site=activation_site, prob_dtype=prob_dtype)
    site, dtype = settings["activation_site"], settings["prob_dtype"]
    record = RunRecord("color", dict(arch=arch, weights=str(weights), data=str(data), sets=sets, ranking=str(ranking),
                                     k=k, max_per_class=max_per_class, metrics_max_per_class=metrics_max_per_class,
                                     min_prob=min_prob, alpha=alpha, preset=preset, batch_size=batch_size,
                                     resamples=resamples, bootstrap_seed=bootstrap_seed, **settings), ctx.world)
    with run_folder(out, ctx) as folder:  # checked before the model is built; replaced whole at the end
        out = folder  # the staging folder (becomes OUT when the run finishes)
        found = find_data(data, sets, max_per_class=metrics_max_per_class, main=ctx.is_main)
        samples = found.samples
        model = load_model(arch, weights, ctx.device, ctx.is_main)
        prep = run_preprocessing(model, data)
        pass_args = dict(preset=preset, batch_size=batch_size, num_workers=num_workers, progress=progress,
                         preprocessing=prep)
        if colour_scores is not None:
            colour_scores = colour_scores.assign(prob=probabilities(colour_scores["logit"].to_numpy(), dtype))
        scored = {v: score_samples(model, samples, ctx, perturb=p, desc=f"scoring ({v})", prob_dtype=dtype,
                                   **pass_args) for v, p in VERSIONS.items()
                  if not (v == "colour" and colour_scores is not None)}
        scores = {v: colour_scores if v not in scored else scored[v].table for v in VERSIONS}
        n_small = max((sc.n_small for sc in scored.values()), default=0)
        tidy, wide = color_metrics_table({v: metrics_table(t, calibrate=False) for v, t in scores.items()})
        probs, changes = median_probability_change(scores["colour"], scores["grayscale"], min_prob)
        boot = dict(resamples=resamples, seed=bootstrap_seed)
        change_ci, change_groups = median_change_intervals(probs, **boot) if ctx.is_main else (None, None)
        result = {"metrics": tidy, "table": wide, "median_change": changes, "median_change_ci": change_ci,
                  "median_change_groups": change_groups}
        if ctx.is_main:
            write_csv(out / "median_probability_ci.csv", change_ci)
            write_csv(out / "median_probability_groups.csv", change_groups)
            write_csv(out / "color_metrics.csv", tidy)
            write_csv(out / "table_color_gray.csv", wide)
            write_csv(out / "median_probability.csv", changes)
            write_csv(out / "probabilities.csv", probs)
            if len(probs):
                fig.probability_boxplot(probs, changes, out / "median_probability.png", min_prob)
        if ranking is not None:
            explainer = explainer_for(model, prep)
            tffs = load_tffs(ranking, k, explainer)
            keys = tff_keys(explainer, tffs)
            fakes = [s for s in find_data(data, sets, max_per_class=max_per_class, main=False).samples
                     if s.label == 1]
            acts = {v: max_activations(explainer, tffs, fakes, ctx, p, site, desc=f"max activations ({v})", **pass_args)
                    for v, p in VERSIONS.items()}
            negative = bn_scale(explainer, tffs) < 0
            (ic, ac), (ig, ag) = acts["colour"], acts["grayscale"]
            common, pc, pg = np.intersect1d(ic, ig, return_indices=True)
            ac, ag = ac[pc], ag[pg]
            set_of = [fakes[i].set for i in common]
            tests = mood_tests(ac, ag, set_of, keys, alpha)
            tests = detector_bh(tests.merge(paired_tests(ac, ag, set_of, keys, alpha), on=["set", "tff", "key"]),
                                alpha)
            group_of = [fakes[i].unit for i in common]
            tests["negative_gamma"] = negative[tests["tff"].to_numpy() - 1]
            tests["activation_site"] = site
            summary = colour_conditional_summary(tests, len(tffs)).assign(activation_site=site,
                                                                         n_negative_gamma=int(negative.sum()))
            shares = effect_share_intervals(ac, ag, set_of, group_of, **boot) if ctx.is_main else None
            paired = paired_summary(tests, shares, len(tffs)) if ctx.is_main else None
            result.update(tests=tests, summary=summary, n_negative_gamma=int(negative.sum()), paired=paired)
            if ctx.is_main:
                base = pd.DataFrame({"path": [fakes[i].path for i in common], "set": set_of,
                                     "class": [fakes[i].cls for i in common], "group": group_of})
                for v, a in (("colour", ac), ("grayscale", ag)):
                    write_csv(out / f"activations_{v}.csv", pd.concat([base, pd.DataFrame(a, columns=keys)], axis=1))
                write_csv(out / "mood_tests.csv", tests)
                write_csv(out / "colour_conditional.csv", summary)
                write_csv(out / "colour_conditional_paired.csv", paired)
                paper = summary.set_index("set")[["percent", "count", "bh_percent", "bh_count"]].T
                write_csv(out / "table_colour_conditional.csv", paper.rename_axis("row").reset_index())
                for s in dict.fromkeys(set_of):
                    m = np.asarray(set_of) == s
                    p = tests[tests["set"] == s]["p"].to_numpy()
                    pct = float(summary.loc[summary["set"] == s, "percent"].iloc[0])
                    title = (f"{s}: max spatial activation ({site}) of the top-{len(tffs)} T-FF on {int(m.sum())} "
                             f"fakes, colour vs grayscale ({pct:.1f}% colour-conditional, Mood p ≤ {alpha})")
                    fig.activation_distributions(ac[m], ag[m], keys, p, out / f"distributions_{s}.png", title)
        if ctx.is_main:
            js = {"median_change": changes.to_dict("records"), "median_change_ci": change_ci.to_dict("records"),
                  "n_images": len(samples), "prob_dtype": dtype, "activation_site": site,
                  "resamples": resamples, "bootstrap_seed": bootstrap_seed}
            if "summary" in result:
                js["colour_conditional"] = result["summary"].to_dict("records")
                js["colour_conditional_paired"] = result["paired"].to_dict("records")
                js["n_negative_gamma"] = result["n_negative_gamma"]
                js["negative_gamma_keys"] = [key for key, neg in zip(keys, negative, strict=True) if neg]
            write_json(out / "color.json", js)
            record.write(out, device=str(ctx.device), settings=settings, **js,
                         **input_record(found, model, prep, preset, weights, n_small))
    return result
