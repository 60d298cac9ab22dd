"""``tff dropout``: the sensitivity assessment (docs/algorithms.md §4) — drop the top-k, random-k and low-k feature
maps of a ranking and re-measure detection per test set, every variant from one pass over the data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..reference import PAPER_DETECTORS
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
class DropoutOptions(DetectorOptions, PassOptions, IntervalOptions, PaperCode, DataSelection):
    """Options of ``tff dropout`` (and of a study's dropout step)."""

    k: int = option(114, "feature maps to drop (paper: 114 ResNet-50, 27 B0)")
    k_sweep: tuple[int, ...] | None = option(None, "several k, one set of variants each (overrides --k)", nargs="+",
                                             type=int)
    random_repeats: int = option(20, "random-k draws per k: the null distribution in which top-k and low-k are "
                                 "placed (percentile); the tables show their mean ± std")
    seed: int = option(0, "seed of the random-k draws (both --random-k protocols)")
    train_set: tuple[str, ...] = option(("progan",), "sets whose accuracy threshold stays 0.5 (the training family)",
                                        nargs="*", type=str, study=False)
    paper_detector: str | None = option(None, "show the paper's numbers for this released detector beside ours",
                                        choices=PAPER_DETECTORS, study=False)
    dropout_site: str | None = switch("dropout_site", study="site")
    prob_dtype: str | None = switch("prob_dtype")
    cal_compare: str | None = switch("cal_compare")
    random_k: str | None = switch("random_k")

    @property
    def ks(self) -> list[int]:
        """The k of every set of variants: ``k_sweep``, else ``k``."""
        return [int(k) for k in (self.k_sweep or (self.k,))]


def dropout(data: DataSpec | str | os.PathLike, *, ranking: str | os.PathLike,
            options: DropoutOptions = DropoutOptions(), out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Baseline and every variant (top-k, random-k × ``random_repeats``, low-k per k) of ``ranking`` (tff rank's
    ffrs.csv or a public key,mean_relevance file) scored on ``data`` from one pass; returns the long table
    (dropout.csv). ``paper_code`` takes the public code's site, probability precision, calibrated comparison and
    random-k protocol (``pooled``: :func:`~tffkit.analysis.dropout.pool_random`) unless given
    (:mod:`tffkit.conventions`). Writes dropout.csv, dropout_summary.csv, dropout_table.md/.tex, ap_vs_k.png,
    dropout_scores.csv (every image's p(fake) under every variant), dropout_effects.csv (the changes per k with 95%
    intervals over groups and their percentile among the random-k replicas) and dropout.json (the shape of the top-k
    curves) to ``out`` (None: nothing written)."""
    from ..analysis.dropout import (
        calibrated_thresholds,
        pool_random,
        score_variants,
        variant_table,
        variants_of,
    )
    from ..analysis.ffrs import load_ranking
    from .runner import Job

    o = options
    with Job("dropout", o, out=out, record={"data": str(data), "ranking": str(ranking), "ks": o.ks}) as job:
        found = job.find(data, o.sets, max_per_class=o.max_per_class)
        model = job.detector()
        prep = job.preprocessing(model, data)
        explainer = job.explainer(model, prep, forward_only=True)
        s = job.settings
        variants, ties = variants_of(load_ranking(ranking, explainer.layers), o.ks, o.random_repeats, o.seed,
                                     protocol=s["random_k"])
        replicated = _replicate_variants(ranking, o.ks)
        scores, unreadable, n_small = score_variants(explainer, variants + replicated, found.samples, job.ctx,
                                                     s["dropout_site"], o.preset, o.batch_size, o.workers, o.progress,
                                                     s["prob_dtype"], prep)
        scores, replicate_scores = scores[:len(variants)], scores[len(variants):]
        thresholds = calibrated_thresholds(scores[0], o.train_set)
        if s["random_k"] == "pooled":
            variants, scores = pool_random(variants, scores)
        long = variant_table(variants, scores, thresholds, ties, s["cal_compare"])
        if job.writes:
            _write(job.folder, long, variants + replicated, scores + replicate_scores, o)
            job.finish(n_images=len(found.samples), n_skipped=len(unreadable), unreadable=unreadable,
                       thresholds=thresholds, ties=ties, **job.inputs(model, prep, n_small))
    return long


def _replicate_variants(ranking, ks) -> list:
    """The top-k of every ranking replicate (``tff rank --replicates``: ffrs_replicates.csv beside the ranking) for
    each k: scored in the same pass, reported as the headline's value over replicates (dropout.json)."""
    from ..analysis.ffrs import ChannelSets, load_replicate_tops

    return [ChannelSets(f"replicate-{k}", "replicate", k, r, tuple(top))
            for k, tops in load_replicate_tops(ranking, ks).items() for r, top in enumerate(tops, start=1)]


def _write(folder, long, variants, scores, o: DropoutOptions) -> None:
    """dropout.csv, the summary and its tables, ap_vs_k.png, the per-image scores, the effects and dropout.json."""
    from pathlib import Path

    from ..analysis.dropout import summarize
    from ..analysis.dropout_stats import curve_findings, dropout_effects, replicate_findings, scores_wide
    from ..reference import paper_numbers
    from ..report.figures_dropout import plot_ap_vs_k
    from ..results import atomic_write, write_csv, write_json
    from ..wording import paper_layout

    write_csv(folder / "dropout.csv", long)
    summary = summarize(long)
    write_csv(folder / "dropout_summary.csv", summary)
    paper = paper_numbers("dropout", o.paper_detector) if o.paper_detector else None
    for fmt, suffix in (("markdown", "md"), ("latex", "tex")):
        text = paper_layout(summary, fmt, paper)
        atomic_write(folder / f"dropout_table.{suffix}", lambda tmp, text=text: Path(tmp).write_text(text))
    plot_ap_vs_k(summary, folder / "ap_vs_k.png")
    heads = [("baseline", 0, 0) if v is None else (v.kind, v.k, v.replica) for v in variants]
    wide = scores_wide(heads, scores)
    write_csv(folder / "dropout_scores.csv", wide)
    effects = dropout_effects(wide, resamples=o.resamples, seed=o.bootstrap_seed)
    write_csv(folder / "dropout_effects.csv", effects)
    write_json(folder / "dropout.json", {"curves": curve_findings(summary, effects), "resamples": o.resamples,
                                         "bootstrap_seed": o.bootstrap_seed, "random_repeats": o.random_repeats,
                                         "ranking_replicates": replicate_findings(effects)})
