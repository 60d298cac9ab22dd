"""``tff train``: a universal or colour-robust detector with Wang et al.'s recipe (docs/algorithms.md §6).

The training itself (data, augmentation, the step, validation, early stopping, checkpoints) is :mod:`tffkit.train`;
this job checks the output folder, decides whether a run resumes, and writes ``run.json``. Unlike the other jobs it
writes into ``out`` directly (no staged folder): the checkpoints written so far must survive a killed run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .options import ARCH_HELP, MAX_PER_CLASS_HELP, option

if TYPE_CHECKING:
    from ..data import DataSpec


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """Options of ``tff train`` (and of a study's ``steps.color_robust.train``, beside its ``data`` and ``val``)."""

    arch: str = option("resnet50", ARCH_HELP)
    color_robust: bool = option(False, "RandomGrayscale(p=0.5) in training (CR detector)", study=False)
    init: str | None = option(None, "same-architecture weights to start from (e.g. torchvision ImageNet; head "
                              "re-initialised); default: none (from scratch)", metavar="PATH|none")
    blur_prob: float = option(0.5, "probability of Gaussian blur, sigma ~ U[0,3]")
    jpeg_prob: float = option(0.5, "probability of JPEG, quality ~ U{30..100}")
    batch_size: int = option(64, "global batch size (split across processes)")
    lr: float = option(1e-4, "Adam learning rate")
    max_epochs: int | None = option(None, "stop after N epochs (default: early stopping only)", type=int)
    max_steps: int | None = option(None, "stop (and checkpoint) after N optimiser steps", type=int)
    save_every: int | None = option(None, "also write model_last.pth every N steps (resumable mid-epoch)", type=int,
                                    metavar="STEPS")
    seed: int = option(0, "seed of the initialisation, augmentations and data order")
    amp: str = option("off", "bf16 autocast", choices=("off", "bf16"))
    resume: bool = option(False, "continue from OUT/model_last.pth", study=False)
    crop_size: int = option(224, "RandomCrop (training) / CenterCrop (validation)")
    load_size: int = option(256, "shorter side resized up to this size when smaller")
    max_per_class: int | None = option(None, MAX_PER_CLASS_HELP, type=int, metavar="N")
    patience: int = option(5, "epochs without a better validation accuracy before the learning rate is divided by 10",
                           cli=False)
    min_lr: float = option(1e-6, "stop when the divided learning rate falls below this", cli=False)
    device: str = option("auto", "auto, cpu, cuda or cuda:N (auto picks CUDA when present)", study=False)
    workers: int | None = option(None, "data-loading worker processes per process; default: this process's cores "
                                 "minus one", type=int, study=False)
    progress: bool = option(True, "print no progress (by default a bar on a terminal, a line every 5%% otherwise)",
                            flag="--no-progress", study=False)
    trust_checkpoint: bool = option(False, "allow an --init file holding pickled Python objects (unpickling can run "
                                    "code)", study="trust_init")
    trust_code: bool = option(False, "allow a python:<file.py or module>:<factory> detector, which runs that Python "
                              "code (like --trust-checkpoint for pickles; default: refuse). The file's SHA-256 goes "
                              "to run.json", study=False)


def train(data: DataSpec | str | os.PathLike, val: DataSpec | str | os.PathLike, *,
          options: TrainOptions = TrainOptions(), out: str | os.PathLike) -> dict[str, Any]:
    """Train a detector on ``data`` (a root or :class:`~tffkit.data.DataSpec`), validating on ``val`` every epoch;
    BCE on its fake logit (a two-class head trains through its log-odds). Writes ``model_best.pth``,
    ``model_last.pth``, ``history.csv`` and ``run.json`` to ``out``; with ``resume``, continues from
    ``out/model_last.pth`` (refused without it when that file exists).

    Stops by early stopping, ``max_epochs`` or ``max_steps`` (total optimiser steps; checkpoints then too);
    ``save_every`` also checkpoints every N steps. Returns final/best metrics and the output paths."""
    from dataclasses import replace
    from pathlib import Path

    import torch

    from .. import distributed as tdist
    from ..data import as_spec
    from ..outputs import check_writable
    from ..train import Trainer, fit

    ctx = tdist.init(options.device)
    check_writable(out)  # before any model is built
    out = Path(out)
    o = replace(options, init=None if options.init in (None, "", "none") else str(options.init))
    last = out / "model_last.pth"
    if last.is_file() and not o.resume:
        raise ValueError(f"{last} exists: pass --resume to continue that run or choose another --out")
    threads = torch.get_num_threads()
    try:
        tr = Trainer(o, ctx, as_spec(data), as_spec(val), out)
        record = _record(tr, o)
        result = fit(tr, out, resume=last.is_file())
    finally:
        torch.set_num_threads(threads)
    if ctx.is_main:
        record.write(out, data_found=tr.data_found, **{k: v for k, v in result.items() if k != "final"})
    tdist.barrier()
    return result


def _record(tr, o: TrainOptions):
    """run.json's record: the options, the data and what identifies the images found."""
    from dataclasses import asdict

    from ..results import RunRecord

    c = tr.config
    args = {**{k: v for k, v in asdict(o).items() if k != "progress"}, "data": c["data"], "val": c["val"],
            "out": c["out"], "train_digest": c["train_digest"], "val_digest": c["val_digest"]}
    return RunRecord("train", args, tr.ctx.world)
