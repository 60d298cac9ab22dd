"""Scoring a detector on a dataset and the ``tff evaluate`` job (metrics per set/class)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import distributed as tdist
from .analysis.intervals import RESAMPLES, SEED, metric_intervals
from .conventions import resolve
from .data import DataSpec, Perturbation, Preprocessing, Sample
from .detectors import Weights, preprocessing_of
from .imagemeta import META_COLUMNS
from .inputs import find_data, input_record, load_model, run_preprocessing
from .metrics import format_table, metrics_table, probabilities, undefined_ap_note
from .outputs import run_folder
from .passes import DatasetPass
from .results import RunRecord, display_path, write_csv, write_json


@dataclass
class Scores:
    """Per-image detector outputs (all ranks merged) and the files that could not be read."""

    table: pd.DataFrame
    failed: list[dict[str, str]]
    n_small: int = 0


@torch.no_grad()
def score_samples(model: nn.Module, samples: Sequence[Sample], ctx: tdist.DistContext,
                  preset: str = "detector", perturb: Perturbation | None = None, batch_size: int = 64,
                  num_workers: int | None = None, progress: bool = True, desc: str = "scoring",
                  prob_dtype: str = "float64", preprocessing: Preprocessing | None = None) -> Scores:
    """Logits and probabilities (``prob_dtype``, see :func:`probabilities`) for every readable sample with its file
    metadata (format, size, JPEG quality); exact under torchrun (no padding). An image listed in several sets (a
    shared real folder) is scored once. ``preprocessing``: default the detector's (:func:`preprocessing_of`)."""
    prep = preprocessing or preprocessing_of(model)
    was_training = model.training
    model.eval()
    first: dict[str, int] = {}
    unique: list[Sample] = []
    owner = []  # sample → its position in ``unique``
    for s in samples:
        if s.path not in first:
            first[s.path] = len(unique)
            unique.append(s)
        owner.append(first[s.path])
    run = DatasetPass(unique, ctx, preset, perturb, batch_size, num_workers, desc, progress, prep, keep_info=True)
    idx_parts, logit_parts = [], []
    for images, indices in run:
        idx_parts.append(indices)
        logit_parts.append(model(prep.normalize(images)).reshape(-1).float())  # on the device: no sync per batch
    model.train(was_training)
    index, logit = tdist.gather_rows(idx_parts, logit_parts)
    info = run.gather_info()
    row_of = {int(u): k for k, u in enumerate(index)}
    keep = [i for i, o in enumerate(owner) if o in row_of]
    table = scores_table(samples, np.asarray(keep, dtype=np.int64),
                         logit[[row_of[owner[i]] for i in keep]] if keep else logit[:0], prob_dtype,
                         [info.get(owner[i]) for i in keep])
    return Scores(table, run.gather_failed(), run.gather_small())


def scores_table(samples: Sequence[Sample], index: np.ndarray, logit: np.ndarray,
                 prob_dtype: str = "float64", info: Sequence[dict | None] | None = None) -> pd.DataFrame:
    """One row per scored sample in dataset order: path, set, class, label, group (the unit of replication: the
    sample's group, or its path when none is known), logit, prob (in ``prob_dtype``) and, with ``info``, the file's
    format, size, JPEG quality estimate and byte count."""
    order = np.argsort(index, kind="stable")
    index, logit = index[order], logit[order]
    table = pd.DataFrame({
        "path": [samples[i].path for i in index],
        "set": [samples[i].set for i in index],
        "class": [samples[i].cls for i in index],
        "label": [samples[i].label for i in index],
        "group": [samples[i].unit for i in index],
        "logit": logit.astype(np.float64),
        "prob": probabilities(logit, prob_dtype),
    })
    if info is not None:
        rows = [info[k] or {} for k in order]
        for col in META_COLUMNS:
            values = [r.get(col) for r in rows]
            table[col] = pd.array(values, dtype="Int64") if col in ("width", "height", "jpeg_quality",
                                                                     "file_bytes") else values
    return table


@dataclass
class Evaluation:
    """Result of :func:`evaluate`: per-image scores, the metrics table and skipped files."""

    scores: pd.DataFrame
    metrics: pd.DataFrame
    failed: list[dict[str, str]]
    settings: dict | None = None
    inputs: dict | None = None
    intervals: pd.DataFrame | None = None


def evaluate(arch: str, weights: str | os.PathLike | Weights | None, data: str | os.PathLike | DataSpec,
             out: str | os.PathLike | None = None, sets: Sequence[str] | None = None,
             preset: str = "detector", perturb: Perturbation | None = None, batch_size: int = 64,
             device: str = "auto", num_workers: int | None = None, max_per_class: int | None = None,
             progress: bool = True, paper_code: bool = False, prob_dtype: str | None = None,
             cal_compare: str | None = None, *, resamples: int = RESAMPLES, bootstrap_seed: int = SEED) -> Evaluation:
    """Score ``data`` with the detector and write ``metrics.csv``, ``scores.csv``, ``run.json`` to ``out``.

    ``weights``: the checkpoint (or :class:`~tffkit.detectors.Weights`: backbone, trust, random); ``data``: a root
    (layout found automatically) or a :class:`~tffkit.data.DataSpec`. ``paper_code`` takes the public code's
    probability precision and calibrated comparison unless ``prob_dtype`` / ``cal_compare`` are given
    (:mod:`tffkit.conventions`). ``metrics_ci.csv``: AP and accuracies per set and their mean with 95% intervals
    over groups (``resamples`` cluster-bootstrap resamples, seeded by ``bootstrap_seed``; docs/algorithms.md §10)."""
    ctx = tdist.init(device)
    settings = resolve(paper_code, prob_dtype=prob_dtype, cal_compare=cal_compare)
    record = RunRecord("evaluate", dict(arch=arch, weights=str(weights), data=str(data), sets=sets,
                                        preset=preset, perturb=(perturb or Perturbation()).__dict__,
                                        batch_size=batch_size, max_per_class=max_per_class, resamples=resamples,
                                        bootstrap_seed=bootstrap_seed, **settings), ctx.world)
    with run_folder(out, ctx) as folder:  # checked before the model is built; replaced whole at the end
        found = find_data(data, sets, max_per_class=max_per_class, main=ctx.is_main)
        samples = found.samples
        model = load_model(arch, weights, ctx.device, ctx.is_main)
        prep = run_preprocessing(model, data)
        scores = score_samples(model, samples, ctx, preset, perturb, batch_size, num_workers, progress,
                               prob_dtype=settings["prob_dtype"], preprocessing=prep)
        table = metrics_table(scores.table, cal_compare=settings["cal_compare"])
        inputs = input_record(found, model, prep, preset, weights, scores.n_small, ctx.is_main)
        intervals = metric_intervals(scores.table, resamples=resamples, seed=bootstrap_seed) \
            if ctx.is_main and len(scores.table) else None
        if folder is not None and ctx.is_main:
            write_csv(folder / "scores.csv", scores.table)
            write_csv(folder / "metrics.csv", table)
            if intervals is not None:
                write_csv(folder / "metrics_ci.csv", intervals)
            write_json(folder / "skipped.json", scores.failed)
            record.write(folder, settings=settings, n_images=len(samples), n_scored=len(scores.table),
                         n_skipped=len(scores.failed), skipped=scores.failed, device=str(ctx.device), **inputs)
    return Evaluation(scores.table, table, scores.failed, settings, inputs, intervals)


def print_evaluation(ev: Evaluation) -> None:
    """Print the metrics table (percent) and any skipped files."""
    cols = ["set", "class", "n_real", "n_fake", "n_saturated", "n_tied", "ap", "acc", "real_acc", "fake_acc",
            "cal_threshold", "cal_real_acc", "cal_fake_acc"]
    print(format_table(ev.metrics, [c for c in cols if c in ev.metrics]))
    note = undefined_ap_note(ev.metrics)
    if note:
        print(note)
    s = ev.settings or {"prob_dtype": "float64", "cal_compare": "ge"}
    print(f"(metrics in %; p in {s['prob_dtype']} (n_saturated: p exactly 0 or 1, n_tied: p shared with another "
          f"image); cal_* use a threshold t calibrated on the same test set — test-calibrated — with "
          f"p {'≥' if s['cal_compare'] == 'ge' else '>'} t counted as fake)")
    if ev.intervals is not None and len(ev.intervals):
        print(interval_text(ev.intervals))
    if ev.failed:
        print(f"skipped {len(ev.failed)} unreadable file(s):")
        for row in ev.failed[:20]:
            print(f"  {display_path(row['path'])}: {row['error']}")


def interval_text(intervals: pd.DataFrame) -> str:
    """The 95% intervals over groups of AP and fake accuracy per set, one line each (percent)."""
    lines = []
    for name, part in intervals.groupby("set", sort=False):
        cells = [f"{m} {100 * r.estimate:.1f} [{100 * r.low:.1f}, {100 * r.high:.1f}]"
                 for m, r in zip(part["metric"], part.itertuples(), strict=True)]
        lines.append(f"  {name} ({int(part['groups'].iloc[0])} groups): " + ", ".join(cells))
    first = intervals.iloc[0]
    return (f"95% intervals over groups (cluster bootstrap, {int(first['resamples'])} resamples, seed "
            f"{int(first['seed'])}; metrics_ci.csv):\n" + "\n".join(lines))
