"""``tff rank``: ω of every unit over the confident fakes of a source set, ranked (docs/algorithms.md §3)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .options import (
    MAX_PER_CLASS_HELP,
    DataSelection,
    DetectorOptions,
    LRPOptions,
    PaperCode,
    PassOptions,
    option,
    switch,
)

if TYPE_CHECKING:
    from ..analysis.rank import RankResult
    from ..data import DataSpec


@dataclass(frozen=True, kw_only=True)
class RankOptions(DetectorOptions, PassOptions, LRPOptions, PaperCode, DataSelection):
    """Options of ``tff rank`` (and of a study's rank step)."""

    max_per_class: int | None = option(None, MAX_PER_CLASS_HELP, type=int, metavar="N")
    min_prob: float = option(0.9, "fakes with p(fake) ≥ this are used")
    with_reals: bool = option(False, "also rank with reals (p ≤ 1 − min-prob, seed −1)")
    k: int = option(114, "top-k reported in ffrs.json and figures")
    unit_ranking: str = option("by-kind", "by-kind: each kind of unit (conv channels, MLP neurons, residual "
                               "dimensions, attention heads) ranked separately and merged by quantile, so a top-k is "
                               "not decided by layer width; global: one descending-ω order (docs/algorithms.md §3)",
                               choices=("by-kind", "global"))
    replicates: int = option(0, "also rank on N resampled source sets (cluster bootstrap of the source groups, in the "
                             "same pass): ffrs_replicates.csv holds every replicate's ranking (tff dropout and "
                             "tff color carry them to their headline numbers), ffrs.csv each unit's share of "
                             "replicates holding it in the top-k, ffrs.json the top-k's overlap over replicates")
    seed: int = option(0, "seed of the random resized crops (--rank-crop random-resized) and of the replicates")
    bounds: str | None = switch("bounds")
    zplus_fallback: str | None = switch("zplus_fallback")
    rank_crop: str | None = switch("rank_crop")


def rank(data: DataSpec | str | os.PathLike, *, options: RankOptions = RankOptions(),
         out: str | os.PathLike | None = None) -> RankResult:
    """ω (docs/algorithms.md §3) with one LRP pass per batch over the fakes of ``data`` (and the reals with
    ``with_reals``), reduced exactly across processes; writes ffrs.csv, ffrs.json, relevance_budget.csv and the
    figures to ``out`` (None: nothing written)."""
    import torch

    from ..analysis.rank import NoConfidentImagesError, no_confident_fakes, omega_pass, source_replicates
    from ..passes import DatasetPass
    from .runner import Job

    o = options
    with Job("rank", o, out=out, record={"data": str(data)}) as job:
        found = job.find(data, o.sets, max_per_class=o.max_per_class)
        samples = [s for s in found.samples if o.with_reals or s.label == 1]
        if not samples:
            raise NoConfidentImagesError(f"no fake images under {data}")
        model = job.detector()
        crop = {"crop_mode": "random-resized", "crop_seed": o.seed} if job.settings["rank_crop"] != "center" else {}
        prep = job.preprocessing(model, data, **crop)
        run = DatasetPass(samples, job.ctx, o.preset, None, o.batch_size, o.workers, "ranking (LRP)", o.progress,
                          prep).start()
        explainer = job.explainer(model, prep, **o.lrp())  # traced while the workers decode
        labels = torch.tensor([s.label for s in samples], device=job.device)
        draws = source_replicates([s.unit for s in samples], [s.set for s in samples], replicates=o.replicates,
                                  seed=o.seed, device=job.device) if o.replicates else None
        acc, idx, prob = omega_pass(explainer, run, prep.normalize, labels, o.min_prob, o.with_reals, job.device,
                                    draws)
        failed, n_small = run.gather_failed(), run.gather_small()
        labels = labels.cpu().numpy()[idx]
        if int(acc.counts[0]) == 0:
            raise no_confident_fakes(prob, labels, o.min_prob)
        result = _result(explainer, acc, samples, idx, labels, prob, failed, found.group_source, o)
        if job.writes:
            _write(job, result, explainer, acc)
            job.finish(n_images=len(samples), n_skipped=len(failed), **job.inputs(model, prep, n_small))
    return result


def _result(explainer, acc, samples, idx, labels, prob, failed, group_source: str, o: RankOptions) -> RankResult:
    """The ranking (and the reals' with ``with_reals``) and ffrs.json's summary."""
    from ..analysis.ffrs import ranking_table
    from ..analysis.rank import RankResult, confident_groups, replicate_ranks, replicate_stability, summarize

    omega = acc.omega().cpu().numpy()
    table = ranking_table(explainer.layers, omega[0], unit_ranking=o.unit_ranking)
    reals = ranking_table(explainer.layers, omega[1], unit_ranking=o.unit_ranking) if o.with_reals else None
    summary = summarize(table, explainer, o.k, labels, prob, o.min_prob, failed, acc, o.with_reals)
    summary["unit_ranking"] = o.unit_ranking
    summary["top_k_unit_kinds"] = {kind: int(n) for kind, n in table.head(o.k)["unit"].value_counts(sort=False).items()}
    summary.update(confident_groups([samples[i].unit for i in idx], labels, prob, o.min_prob, group_source))
    ranks = None
    if o.replicates:
        ranks = replicate_ranks(explainer.layers, table, acc.replicate_omega().cpu().numpy(),
                                unit_ranking=o.unit_ranking)
        share, stability = replicate_stability(ranks, o.k)
        table["top_k_replicates"] = share
        summary["replicates"] = {**stability, "seed": o.seed, "unit": "source groups (cluster bootstrap within sets)"}
    return RankResult(table, reals, summary, ranks)


def _write(job, result: RankResult, explainer, acc) -> None:
    """ffrs.csv (and ffrs_reals.csv), ffrs.json, relevance_budget.csv and the two figures."""
    from ..analysis.ffrs import REPLICATES_FILE
    from ..analysis.rank import relevance_budget
    from ..report.figures_tff import plot_ranking
    from ..results import write_csv, write_json

    o = job.options
    write_csv(job.folder / "ffrs.csv", result.ranking.drop(columns=["layer_index"]))
    if result.ranking_reals is not None:
        write_csv(job.folder / "ffrs_reals.csv", result.ranking_reals.drop(columns=["layer_index"]))
    if result.replicate_ranks is not None:
        write_csv(job.folder / REPLICATES_FILE, result.replicate_ranks)
    write_json(job.folder / "ffrs.json", result.summary)
    write_csv(job.folder / "relevance_budget.csv", relevance_budget(explainer, acc, o.with_reals))
    plot_ranking(result.ranking, [layer.name for layer in explainer.layers], o.k, job.folder)
