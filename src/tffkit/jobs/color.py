"""``tff color``: the colour ablation (docs/algorithms.md §5) — detector metrics and counterfeit probabilities on
colour vs grayscale images, and which top-k T-FF are colour-conditional (Mood's median test and the paired analysis
on their max spatial activations)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .options import (
    DataSelection,
    DetectorOptions,
    IntervalOptions,
    PaperCode,
    PassOptions,
    option,
    switch,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..data import DataSpec


@dataclass(frozen=True, kw_only=True)
class ColorOptions(DetectorOptions, PassOptions, IntervalOptions, PaperCode, DataSelection):
    """Options of ``tff color`` (and of a study's color step)."""

    k: int = option(114, "number of top-ranked T-FF (paper: 114 ResNet-50, 27 B0)")
    test_fakes: int | None = option(500, "Mood's tests of the T-FF use at most the first N fakes of each (set, class) "
                                    "(paper: 500)", type=int, metavar="N", study="max_per_class")
    min_prob: float = option(0.2, "fakes with colour p(fake) >= this enter the box plots")
    alpha: float = option(0.05, "significance level of Mood's test")
    activation_site: str | None = switch("activation_site")
    prob_dtype: str | None = switch("prob_dtype")

    def test_limit(self) -> int | None:
        """Fakes per (set, class) of Mood's tests: ``test_fakes``, at most ``max_per_class``."""
        limits = [n for n in (self.test_fakes, self.max_per_class) if n is not None]
        return min(limits) if limits else None


def color(data: DataSpec | str | os.PathLike, *, options: ColorOptions = ColorOptions(),
          out: str | os.PathLike | None = None, ranking: str | os.PathLike | None = None,
          color_scores: pd.DataFrame | None = None) -> dict[str, Any]:
    """Table I.1 metrics, median-probability box plots and, with a ``ranking`` (ffrs.csv or a public
    key,mean_relevance file), the colour-conditional top-k T-FF; writes CSV/JSON/PNG to ``out`` (None: nothing).

    ``color_scores`` (a ``scores.csv`` of the same detector and images, e.g. from ``tff evaluate``) replaces the
    colour scoring pass (its probabilities are recomputed from the logits in the effective ``prob_dtype``). Beside
    Mood's test, the paired analysis (Wilcoxon, effect size, BH over the detector's tests) and 95% intervals over
    groups of fakes (the cluster bootstrap of ``options``; docs/algorithms.md §10)."""
    from .runner import Job

    o = options
    with Job("color", o, out=out, record={"data": str(data), "ranking": str(ranking)}) as job:
        found = job.find(data, o.sets, max_per_class=o.max_per_class)
        model = job.detector()
        prep = job.preprocessing(model, data)
        scores, n_small = _scores(job, model, prep, found.samples, color_scores)
        result = _probabilities(job, scores)
        if ranking is not None:
            result.update(_tff_tests(job, model, prep, data, ranking))
        if job.is_main:
            js = _summary(job, result, len(found.samples))
            _write(job, {"color.json": js})
            job.finish(**js, **job.inputs(model, prep, n_small))
    return result


def _pass_args(job, prep) -> dict:
    o = job.options
    return dict(preset=o.preset, batch_size=o.batch_size, num_workers=o.workers, progress=o.progress,
                preprocessing=prep)


def _write(job, files: dict[str, Any]) -> None:
    """CSV tables and JSON documents of the main process (when the job writes)."""
    if not job.writes:
        return
    from ..results import write_csv, write_json

    for name, value in files.items():
        (write_json if name.endswith(".json") else write_csv)(job.folder / name, value)


def _scores(job, model, prep, samples, color_scores) -> tuple[dict, int]:
    """version → scores table (colour, grayscale) and the number of images smaller than the crop."""
    from ..analysis.color import VERSIONS
    from ..evaluate import score_samples
    from ..metrics import probabilities

    dtype = job.settings["prob_dtype"]
    if color_scores is not None:
        color_scores = color_scores.assign(prob=probabilities(color_scores["logit"].to_numpy(), dtype))
    scored = {v: score_samples(model, samples, job.ctx, perturb=p, desc=f"scoring ({v})", prob_dtype=dtype,
                               **_pass_args(job, prep)) for v, p in VERSIONS.items()
              if not (v == "colour" and color_scores is not None)}
    scores = {v: color_scores if v not in scored else scored[v].table for v in VERSIONS}
    return scores, max((sc.n_small for sc in scored.values()), default=0)


def _probabilities(job, scores: dict) -> dict[str, Any]:
    """Table I.1 and the change of the median probability (with its intervals); the box plots."""
    from ..analysis.color import color_metrics_table, median_probability_change
    from ..analysis.intervals import median_change_intervals
    from ..metrics import metrics_table

    o = job.options
    tidy, wide = color_metrics_table({v: metrics_table(t, calibrate=False) for v, t in scores.items()})
    probs, changes = median_probability_change(scores["colour"], scores["grayscale"], o.min_prob)
    boot = dict(resamples=o.resamples, seed=o.bootstrap_seed)
    change_ci, change_groups = median_change_intervals(probs, **boot) if job.is_main else (None, None)
    _write(job, {"median_probability_ci.csv": change_ci, "median_probability_groups.csv": change_groups,
                 "color_metrics.csv": tidy, "table_color_gray.csv": wide, "median_probability.csv": changes,
                 "probabilities.csv": probs})
    if job.writes and len(probs):
        from ..report.figures_tff import probability_boxplot

        probability_boxplot(probs, changes, job.folder / "median_probability.png", o.min_prob)
    return {"metrics": tidy, "table": wide, "median_change": changes, "median_change_ci": change_ci,
            "median_change_groups": change_groups}


def _tff_tests(job, model, prep, data, ranking) -> dict[str, Any]:
    """Mood's and the paired tests of the top-k T-FF on the test fakes, colour vs grayscale (and, where the ranking
    has replicates, the effect-size share of each replicate's top-k from the same pass)."""
    import numpy as np

    from ..analysis.activations import bn_scale, load_tffs, tff_keys
    from ..analysis.color import VERSIONS, max_activations
    from ..analysis.ffrs import load_replicate_tops
    from ..inputs import find_data

    o, site = job.options, job.settings["activation_site"]
    explainer = job.explainer(model, prep, forward_only=True)
    tffs = load_tffs(ranking, o.k, explainer)
    tops = load_replicate_tops(ranking, [o.k]).get(o.k, [])
    units = list(dict.fromkeys([*tffs, *(u for top in tops for u in top)]))  # the top-k first, then the replicates'
    keys = tff_keys(explainer, tffs)
    fakes = [s for s in find_data(data, o.sets, max_per_class=o.test_limit(), main=False).samples if s.label == 1]
    acts = {v: max_activations(explainer, units, fakes, job.ctx, p, site, desc=f"max activations ({v})",
                               **_pass_args(job, prep)) for v, p in VERSIONS.items()}
    (ic, ac), (ig, ag) = acts["colour"], acts["grayscale"]
    common, pc, pg = np.intersect1d(ic, ig, return_indices=True)
    ac, ag = ac[pc], ag[pg]
    negative = bn_scale(explainer, tffs) < 0
    fakes = [fakes[i] for i in common]
    result = _tests(job, ac[:, :len(tffs)], ag[:, :len(tffs)], fakes, keys, negative)
    result["negative_gamma_keys"] = [key for key, neg in zip(keys, negative, strict=True) if neg]
    if tops and job.is_main:
        column = {u: i for i, u in enumerate(units)}
        cols = [[column[u] for u in top] for top in tops]
        result["replicates"] = _replicate_shares(ac, ag, [f.set for f in fakes], cols, result["paired"])
    return result


def _replicate_shares(ac, ag, sets, cols, paired) -> list[dict]:
    """Per set, the % of top-k T-FF conditional by effect size for the ranking of all source images (with its
    interval) and for each ranking replicate (point estimates; median and range over them)."""
    import numpy as np

    from ..analysis.replicates import over_replicates
    from ..analysis.uncertainty import EFFECT_THRESHOLD, paired_effects

    sets = np.asarray(sets)
    out = []
    for row in paired.to_dict("records"):
        m = sets == row["set"]
        per = [100 * float(np.mean(np.abs(paired_effects(ac[m][:, c], ag[m][:, c])) >= EFFECT_THRESHOLD))
               for c in cols]
        out.append({"set": row["set"], "statistic": "colour-conditional top-k T-FF by effect size, %",
                    "all_sources": {"estimate": row["effect_percent"], "low": row["effect_low"],
                                    "high": row["effect_high"]},
                    "replicates": over_replicates(per), "per_replicate": per})
    return out


def _tests(job, ac, ag, fakes, keys, negative) -> dict[str, Any]:
    """The tests' tables from the (N, K) activations of ``fakes`` in colour (``ac``) and grayscale (``ag``)."""
    import pandas as pd

    from ..analysis.color import color_conditional_summary, mood_tests
    from ..analysis.intervals import detector_bh, effect_share_intervals, paired_summary, paired_tests

    o, site = job.options, job.settings["activation_site"]
    set_of, group_of = [f.set for f in fakes], [f.unit for f in fakes]
    tests = mood_tests(ac, ag, set_of, keys, o.alpha)
    tests = detector_bh(tests.merge(paired_tests(ac, ag, set_of, keys, o.alpha), on=["set", "tff", "key"]), o.alpha)
    tests["negative_gamma"] = negative[tests["tff"].to_numpy() - 1]
    tests["activation_site"] = site
    summary = color_conditional_summary(tests, len(keys)).assign(activation_site=site,
                                                                  n_negative_gamma=int(negative.sum()))
    boot = dict(resamples=o.resamples, seed=o.bootstrap_seed)
    shares = effect_share_intervals(ac, ag, set_of, group_of, **boot) if job.is_main else None
    paired = paired_summary(tests, shares, len(keys)) if job.is_main else None
    if job.writes:
        base = pd.DataFrame({"path": [f.path for f in fakes], "set": set_of, "class": [f.cls for f in fakes],
                             "group": group_of})
        paper = summary.set_index("set")[["percent", "count", "bh_percent", "bh_count"]].T
        _write(job, {**{f"activations_{v}.csv": pd.concat([base, pd.DataFrame(a, columns=keys)], axis=1)
                        for v, a in (("colour", ac), ("grayscale", ag))},
                     "mood_tests.csv": tests, "colour_conditional.csv": summary,
                     "colour_conditional_paired.csv": paired,
                     "table_colour_conditional.csv": paper.rename_axis("row").reset_index()})
        _distributions(job, ac, ag, set_of, keys, tests, summary)
    return {"tests": tests, "summary": summary, "n_negative_gamma": int(negative.sum()), "paired": paired}


def _distributions(job, ac, ag, set_of, keys, tests, summary) -> None:
    """Per set: the distributions of each T-FF's max activation, colour vs grayscale."""
    import numpy as np

    from ..report.figures_tff import activation_distributions

    site, alpha = job.settings["activation_site"], job.options.alpha
    for s in dict.fromkeys(set_of):
        m = np.asarray(set_of) == s
        p = tests[tests["set"] == s]["p"].to_numpy()
        pct = float(summary.loc[summary["set"] == s, "percent"].iloc[0])
        title = (f"{s}: max spatial activation ({site}) of the top-{len(keys)} T-FF on {int(m.sum())} "
                 f"fakes, colour vs grayscale ({pct:.1f}% colour-conditional, Mood p ≤ {alpha})")
        activation_distributions(ac[m], ag[m], keys, p, job.folder / f"distributions_{s}.png", title)


def _summary(job, result: dict, n_images: int) -> dict[str, Any]:
    """color.json."""
    o = job.options
    js = {"median_change": result["median_change"].to_dict("records"),
          "median_change_ci": result["median_change_ci"].to_dict("records"),
          "n_images": n_images, "prob_dtype": job.settings["prob_dtype"],
          "activation_site": job.settings["activation_site"], "resamples": o.resamples,
          "bootstrap_seed": o.bootstrap_seed}
    if "summary" in result:
        js["colour_conditional"] = result["summary"].to_dict("records")
        js["colour_conditional_paired"] = result["paired"].to_dict("records")
        js["n_negative_gamma"] = result["n_negative_gamma"]
        js["negative_gamma_keys"] = result["negative_gamma_keys"]
    if "replicates" in result:
        js["ranking_replicates"] = result["replicates"]
    return js
