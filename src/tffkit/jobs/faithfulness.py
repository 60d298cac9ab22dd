"""``tff faithfulness``: does a ranking find what matters? Deletion curves and AOPC of FF-RS against simpler
rankings and random ones (docs/algorithms.md §8), with the sanity checks of the rankings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .options import MAX_PER_CLASS_HELP, DetectorOptions, PaperCode, PassOptions, option, switch

if TYPE_CHECKING:
    import pandas as pd

    from ..analysis.faithfulness import FaithfulnessResult
    from ..data import DataSpec


@dataclass(frozen=True, kw_only=True)
class FaithfulnessOptions(DetectorOptions, PassOptions, PaperCode):
    """Options of ``tff faithfulness`` (and of a study's faithfulness step)."""

    sets: tuple[str, ...] | None = option(None, "sets (first folder level) of the test data to use; default all",
                                          nargs="+", study=False)
    max_per_class: int | None = option(None, MAX_PER_CLASS_HELP + " (test images of the deletion curves; in a study "
                                       "None means data.max_per_class)", type=int, metavar="N",
                                       study="deletion_max_per_class")
    source_sets: tuple[str, ...] | None = option(None, "sets of the source data to use; default all", nargs="+",
                                                 study=False)
    source_max_per_class: int | None = option(None, "use only the first N source images per (set, class, label) "
                                              "folder", type=int, metavar="N", study="max_per_class")
    min_prob: float = option(0.9, "source fakes with p(fake) ≥ this rank the units")
    ks: tuple[int, ...] | None = option(None, "units dropped per point of the curves (default: 1, 2, 4, … up to "
                                        "--k-max)", flag="--k", nargs="+", type=int)
    k_max: int = option(256, "largest k of the default log grid")
    random_repeats: int = option(20, "seeded random rankings: the null distribution of AOPC")
    resamples: int = option(1000, "cluster-bootstrap resamples of the intervals and of the top-k stability (seeded "
                            "by --seed)")
    seed: int = option(0, "seed of the random rankings and of the randomised detectors")
    top_k: int | None = option(None, "k of the top-k overlaps reported by the sanity checks (default: tff rank's "
                               "--k; in a study, steps.rank.k)", type=int)
    randomise: tuple[float, ...] = option((0.25, 0.5, 1.0), "cascading randomisation: re-draw this share of the "
                                          "parametrised modules from the top; one ω pass each (none: no "
                                          "randomisation check)", nargs="*", type=float, metavar="FRACTION")
    lrp_epsilon: float = option(1e-6, "ε of the LRP-ε ranking")
    attention: str = option("attnlrp", "attention rule: AttnLRP (softmax and uniform product rules) or CP-LRP "
                            "(attention weights held constant, relevance through the values only)",
                            choices=("attnlrp", "cp"), study=False, group="lrp")
    composite: str = option("paper", "LRP composite of the FF-RS ranking (docs/lrp.md): paper, attnlrp, cp-lrp or "
                            "fast (--attention cp applies on top)", choices=("paper", "attnlrp", "cp-lrp", "fast"),
                            study=False, group="lrp")
    bounds: str | None = switch("bounds")
    zplus_fallback: str | None = switch("zplus_fallback")
    dropout_site: str | None = switch("dropout_site", study="site")
    prob_dtype: str | None = switch("prob_dtype")

    def lrp(self) -> dict:
        """Explainer keywords, as :meth:`LRPOptions.lrp`: the composite and the attention rule (with the attnlrp,
        cp-lrp or fast composite, the attention rule only when not the default attnlrp)."""
        keep = self.composite == "paper" or self.attention != "attnlrp"
        return {"composite": self.composite, "attention": self.attention if keep else None}

    @property
    def top_k_used(self) -> int:
        """``top_k``, or tff rank's default k where None."""
        from .options import default_of
        from .rank import RankOptions

        return default_of(RankOptions, "k") if self.top_k is None else int(self.top_k)


@dataclass
class _Deletion:
    """What the deletion pass gives: the curves, the per-image table, the statistics, the sanity checks, the k grid,
    the detector's units, the test images smaller than the crop and the unreadable files (test and source)."""

    curves: pd.DataFrame
    images: pd.DataFrame
    stats: dict
    sanity: dict
    ks: list[int]
    n_units: int
    n_small: int
    unreadable: list[dict]


def faithfulness(*, source: DataSpec | str | os.PathLike, test: DataSpec | str | os.PathLike,
                 ranking: str | os.PathLike | None = None, options: FaithfulnessOptions = FaithfulnessOptions(),
                 out: str | os.PathLike | None = None) -> FaithfulnessResult:
    """Rank units five ways on the confident fakes of ``source`` (FF-RS from ``ranking``, an ffrs.csv, when given,
    else from this pass), score every ranking by deletion on ``test`` and write faithfulness.csv,
    faithfulness_summary.csv (AOPC with intervals and null percentiles), faithfulness_by_k.csv,
    faithfulness_images.csv (p(fake) per test image and variant), faithfulness.json, unit_scores.csv,
    deletion_curves.png and run.json to ``out`` (None: nothing written)."""
    from ..analysis.faithfulness import FaithfulnessResult
    from .runner import Job

    o = options
    if o.random_repeats < 2:
        raise ValueError(f"--random-repeats must be at least 2 (the null of AOPC), got {o.random_repeats}")
    record = {"source": str(source), "data": str(test), "ranking": str(ranking), "top_k": o.top_k_used}
    with Job("faithfulness", o, out=out, record=record) as job:
        found_source = job.find(source, o.source_sets, max_per_class=o.source_max_per_class, what="source")
        found = job.find(test, o.sets, max_per_class=o.max_per_class, what="test")
        fakes = [s for s in found_source.samples if s.label == 1]
        if not fakes:
            raise ValueError(f"no fake images under {source}")
        model = job.detector()
        prep = job.preprocessing(model, test)
        explainer = job.explainer(model, prep, **o.lrp())
        scores, orders = _rankings(job, model, explainer, prep, fakes, ranking)
        d = _deletion(job, explainer, prep, orders, scores, found.samples)
        if job.writes:
            _write(job.folder, d, scores, orders, ranking, len(fakes), o)
            job.finish(n_images=len(found.samples), n_source_images=len(fakes), n_skipped=len(d.unreadable),
                       unreadable=d.unreadable, **job.inputs(model, prep, d.n_small + scores.n_small))
    return FaithfulnessResult(d.curves, d.stats["summary"], d.sanity, d.stats)


def _rankings(job, model, explainer, prep, fakes, ranking):
    """Every ranking's scores from one pass over the source fakes, and their unit orders (FF-RS from ``ranking``
    when given)."""
    from ..analysis.faithfulness import unit_orders
    from ..analysis.ffrs import load_ranking
    from ..analysis.unit_scores import source_scores

    o, s = job.options, job.settings
    lrp = dict(bounds=s["bounds"], zplus_fallback=s["zplus_fallback"], **o.lrp())
    scores = source_scores(model, explainer, fakes, job.ctx, prep, o.min_prob, o.randomise, o.seed, o.lrp_epsilon,
                           lrp, o.preset, o.batch_size, o.workers, o.progress)
    if sum(scores.counts) == 0:
        raise ValueError(f"no source fake reached p ≥ {o.min_prob}: the rankings are undefined (lower min_prob)")
    table = load_ranking(ranking, explainer.layers) if ranking is not None else None
    return scores, unit_orders(scores, explainer.layers, table)


def _deletion(job, explainer, prep, orders, scores, samples) -> _Deletion:
    """The deletion curves of every ranking on the test ``samples`` (one pass), their statistics and the sanity
    checks."""
    from ..analysis.deletion_stats import deletion_statistics
    from ..analysis.dropout import score_variants
    from ..analysis.faithfulness import curve_table, deletion_variants, image_table, k_values, sanity_checks

    o, s = job.options, job.settings
    n_units = explainer.n_channels
    ks = k_values(o.ks, n_units, o.k_max)
    variants = deletion_variants(orders, ks, o.random_repeats, o.seed)
    tables, unreadable, n_small = score_variants(explainer, variants, samples, job.ctx, s["dropout_site"], o.preset,
                                                 o.batch_size, o.workers, o.progress, s["prob_dtype"], prep)
    images = image_table(variants, tables, samples)
    stats = deletion_statistics(images, resamples=o.resamples, seed=o.seed)
    sanity = sanity_checks(scores, scores.score("ffrs"), ks, min(o.top_k_used, n_units - 1), resamples=o.resamples,
                           seed=o.seed)
    return _Deletion(curve_table(variants, tables), images, stats, sanity, ks, n_units, n_small,
                     unreadable + scores.failed)


def _write(folder, d: _Deletion, scores, orders, ranking, n_fakes: int, o: FaithfulnessOptions) -> None:
    """The tables, faithfulness.json and deletion_curves.png."""
    from ..analysis.faithfulness import unit_table, verdicts
    from ..analysis.unit_scores import LABELS, SCORED
    from ..report.figures_dropout import plot_curves
    from ..results import write_csv, write_json

    summary = d.stats["summary"]
    write_csv(folder / "faithfulness.csv", d.curves)
    write_csv(folder / "faithfulness_summary.csv", summary)
    write_csv(folder / "faithfulness_by_k.csv", d.stats["by_k"])
    write_csv(folder / "faithfulness_images.csv", d.images)
    write_csv(folder / "unit_scores.csv", unit_table(scores, orders))
    write_json(folder / "faithfulness.json", {
        "k_grid": d.ks, "rankings": {n: LABELS[n] for n in [*SCORED, "random"]},
        "ffrs_from": str(ranking) if ranking is not None else "this pass", "random_repeats": o.random_repeats,
        "source_fakes": n_fakes, "confident_fakes": sum(scores.counts), "min_prob": o.min_prob,
        "n_units": d.n_units, "lrp_epsilon": o.lrp_epsilon, "verdicts": verdicts(summary), "sanity": d.sanity,
        "intervals": {"resamples": o.resamples, "seed": o.seed, "test_groups": d.stats["groups"],
                      "strata": "set, label", "level": 0.95},
        "monotone": d.stats["monotone"], "rises": d.stats["rises"]})
    plot_curves(d.curves, folder / "deletion_curves.png", LABELS)
