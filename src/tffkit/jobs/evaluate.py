"""``tff evaluate``: AP and accuracies of a detector per set and class, with 95% intervals over groups."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    from ..data import DataSpec, Perturbation


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions(DetectorOptions, PassOptions, IntervalOptions, PaperCode, DataSelection):
    """Options of ``tff evaluate`` (and of a study's evaluate steps)."""

    grayscale: bool = option(False, "ITU-R 601 luma replicated to RGB", study=False)
    jpeg: int | None = option(None, "JPEG re-compression at quality Q", type=int, metavar="Q", study=False)
    blur: float | None = option(None, "Gaussian blur sigma", type=float, metavar="SIGMA", study=False)
    resize: float | None = option(None, "resize by a factor", type=float, metavar="FACTOR", study=False)
    prob_dtype: str | None = switch("prob_dtype")
    cal_compare: str | None = switch("cal_compare")

    def perturbation(self) -> Perturbation:
        """The :class:`~tffkit.data.Perturbation` of the test images these options name."""
        from ..data import Perturbation

        return Perturbation(self.grayscale, self.jpeg, self.blur, self.resize)


@dataclass
class Evaluation:
    """Result of :func:`evaluate`: per-image scores, the metrics table and skipped files."""

    scores: pd.DataFrame
    metrics: pd.DataFrame
    failed: list[dict[str, str]]
    settings: dict | None = None
    inputs: dict | None = None
    intervals: pd.DataFrame | None = None


def evaluate(data: DataSpec | str | os.PathLike, *, options: EvaluateOptions = EvaluateOptions(),
             out: str | os.PathLike | None = None) -> Evaluation:
    """Score ``data`` (a root, layout found automatically, or a :class:`~tffkit.data.DataSpec`) with the detector and
    write ``metrics.csv``, ``scores.csv``, ``metrics_ci.csv``, ``skipped.json`` and ``run.json`` to ``out`` (None:
    nothing written). ``paper_code`` takes the public code's probability precision and calibrated comparison unless
    ``prob_dtype`` / ``cal_compare`` are given (:mod:`tffkit.conventions`). ``metrics_ci.csv``: AP and accuracies
    per set and their mean with 95% intervals over groups (``resamples`` cluster-bootstrap resamples, seeded by
    ``bootstrap_seed``; docs/algorithms.md §10)."""
    from ..analysis.intervals import metric_intervals
    from ..evaluate import score_samples
    from ..metrics import metrics_table
    from .runner import Job

    o = options
    with Job("evaluate", o, out=out, record={"data": str(data)}) as job:
        found = job.find(data, o.sets, max_per_class=o.max_per_class)
        model = job.detector()
        prep = job.preprocessing(model, data)
        scores = score_samples(model, found.samples, job.ctx, o.preset, o.perturbation(), o.batch_size, o.workers,
                               o.progress, prob_dtype=job.settings["prob_dtype"], preprocessing=prep)
        table = metrics_table(scores.table, cal_compare=job.settings["cal_compare"])
        inputs = job.inputs(model, prep, scores.n_small)
        intervals = metric_intervals(scores.table, resamples=o.resamples, seed=o.bootstrap_seed) \
            if job.is_main and len(scores.table) else None
        if job.writes:
            _write(job, scores, table, intervals, inputs, len(found.samples))
    return Evaluation(scores.table, table, scores.failed, job.settings, inputs, intervals)


def _write(job, scores, table, intervals, inputs: dict, n_images: int) -> None:
    """scores.csv, metrics.csv, metrics_ci.csv, skipped.json and run.json."""
    from ..results import write_csv, write_json

    write_csv(job.folder / "scores.csv", scores.table)
    write_csv(job.folder / "metrics.csv", table)
    if intervals is not None:
        write_csv(job.folder / "metrics_ci.csv", intervals)
    write_json(job.folder / "skipped.json", scores.failed)
    job.finish(n_images=n_images, n_scored=len(scores.table), n_skipped=len(scores.failed), skipped=scores.failed,
               **inputs)
