"""A study's robustness step: the test images scored clean and once per perturbation, the paired changes of AP and
the real and fake accuracies and DEAR's asymmetry (docs/algorithms.md §10; the algorithms are
:mod:`tffkit.analysis.robustness`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .options import (
    MAX_PER_CLASS_HELP,
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
class RobustnessOptions(DetectorOptions, PassOptions, IntervalOptions, PaperCode, DataSelection):
    """Options of the robustness step (``steps.robustness`` of a study)."""

    jpeg: tuple[int, ...] = option((75, 50), "JPEG re-compression qualities, one perturbation each", nargs="+",
                                   type=int, metavar="Q")
    resize: tuple[float, ...] = option((0.5,), "resize factors, one perturbation each", nargs="+", type=float,
                                       metavar="FACTOR")
    blur: tuple[float, ...] = option((1.0,), "Gaussian blur sigmas, one perturbation each", nargs="+", type=float,
                                     metavar="SIGMA")
    grayscale: bool = option(True, "also the grayscale version (ITU-R 601 luma replicated to RGB)")
    max_per_class: int | None = option(None, MAX_PER_CLASS_HELP + " (in a study: null for data.max_per_class, and "
                                       "then the evaluate step's clean scores are reused)", type=int, metavar="N")
    prob_dtype: str | None = switch("prob_dtype")

    def perturbations(self) -> dict:
        """name → :class:`~tffkit.data.Perturbation` (:func:`tffkit.analysis.robustness.perturbations_of`)."""
        from ..analysis.robustness import perturbations_of

        return perturbations_of(jpeg=self.jpeg, resize=self.resize, blur=self.blur, grayscale=self.grayscale)


def robustness(data: DataSpec | str | os.PathLike, *, options: RobustnessOptions = RobustnessOptions(),
               out: str | os.PathLike | None = None, clean_scores: pd.DataFrame | None = None) -> dict:
    """Score the test images of ``data`` once per perturbation of ``options`` and write ``robustness.csv``
    (:func:`~tffkit.analysis.robustness.paired_changes`), ``robustness.json``
    (:func:`~tffkit.analysis.robustness.asymmetry` per perturbation on the mean over sets, and per set), ``scores.csv``
    (one row per image and version, ``perturbation`` = ``none`` for clean) and ``run.json``. ``clean_scores``: a
    ``scores.csv`` of the same detector and images (the evaluate step's), replacing the clean pass (its p recomputed
    from the logits in ``prob_dtype``). Returns ``changes``, ``asymmetry`` and the paired ``table`` (on the main
    process; empty elsewhere)."""
    from ..evaluate import score_samples
    from ..metrics import probabilities
    from .runner import Job

    o = options
    perturbations = o.perturbations()
    record = {"data": str(data), "perturbations": {k: p.__dict__ for k, p in perturbations.items()}}
    with Job("robustness", o, out=out, record=record) as job:
        found = job.find(data, o.sets, max_per_class=o.max_per_class)
        model = job.detector()
        prep = job.preprocessing(model, data)
        dtype = job.settings["prob_dtype"]
        args = dict(preset=o.preset, batch_size=o.batch_size, num_workers=o.workers, progress=o.progress,
                    prob_dtype=dtype, preprocessing=prep)
        if clean_scores is None:
            clean = score_samples(model, found.samples, job.ctx, desc="scoring (clean)", **args).table
        else:
            clean = clean_scores.assign(prob=probabilities(clean_scores["logit"].to_numpy(), dtype))
        scored = {name: score_samples(model, found.samples, job.ctx, perturb=p, desc=f"scoring ({name})", **args)
                  for name, p in perturbations.items()}
        if not job.is_main:
            return {}
        result, js = _tables(o, perturbations, clean, scored, dtype)
        if job.writes:
            _write(job, result, js, clean, scored, model, prep)
    return result


def _tables(o: RobustnessOptions, perturbations: dict, clean, scored: dict, dtype: str) -> tuple[dict, dict]:
    """The paired table, its changes and verdicts, and robustness.json's content."""
    from ..analysis.robustness import asymmetry, paired_changes, paired_table

    table = paired_table(clean, {n: s.table for n, s in scored.items()})
    changes = paired_changes(table, list(perturbations), resamples=o.resamples, seed=o.bootstrap_seed)
    verdicts = asymmetry(changes)
    per_set = [v for s in dict.fromkeys(changes["set"]) if s != "mean" for v in asymmetry(changes, set_name=s)]
    js = {"perturbations": {k: p.__dict__ for k, p in perturbations.items()}, "asymmetry": verdicts,
          "asymmetry_per_set": per_set, "n_paired": len(table), "n_clean": len(clean), "prob_dtype": dtype,
          "resamples": o.resamples, "bootstrap_seed": o.bootstrap_seed}
    return {"changes": changes, "asymmetry": verdicts, "table": table}, js


def _write(job, result: dict, js: dict, clean, scored: dict, model, prep) -> None:
    """scores.csv (clean and perturbed, long), robustness.csv, robustness.json and run.json."""
    import pandas as pd

    from ..analysis.robustness import CLEAN
    from ..results import write_csv, write_json

    long = pd.concat([clean.assign(perturbation=CLEAN)] + [s.table.assign(perturbation=n)
                                                            for n, s in scored.items()], ignore_index=True)
    keep = ["path", "set", "label", "group", "perturbation", "logit", "prob"]
    write_csv(job.folder / "scores.csv", long[[c for c in keep if c in long]])
    write_csv(job.folder / "robustness.csv", result["changes"])
    write_json(job.folder / "robustness.json", js)
    failed = [f for s in scored.values() for f in s.failed]
    job.finish(n_skipped=len(failed), **js,
               **job.inputs(model, prep, max((s.n_small for s in scored.values()), default=0)))
