"""Scoring a detector on a dataset: per-image logits and probabilities in dataset order (the ``tff evaluate`` job is
:mod:`tffkit.jobs.evaluate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import distributed as tdist
from .data import Perturbation, Preprocessing, Sample
from .detectors import preprocessing_of
from .imagemeta import META_COLUMNS
from .metrics import probabilities
from .passes import DatasetPass


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
