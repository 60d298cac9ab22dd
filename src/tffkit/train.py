"""``tff train``: universal and colour-robust detectors with Wang et al.'s recipe (docs/algorithms.md §6).

Adam (lr 1e-4, betas 0.9/0.999), BCE-with-logits on one logit, a *global* batch of 64 (split across
torchrun processes, so the recipe does not depend on their number), validation every epoch, early
stopping on validation accuracy (patience 5, then lr ÷ 10, stop when lr < 1e-6). ``model_best.pth``
and ``model_last.pth`` are in Wang's format; the latter carries the optimiser, progress, early-stopping
and random states for an exact ``resume``. One ``history.csv`` row per epoch.

This module is the training itself (:class:`Trainer`, :func:`fit`); the job — options, output folder, resume or
refuse, ``run.json`` — is :func:`tffkit.jobs.train.train`.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from torch import nn
from tqdm.auto import tqdm

from . import augment as aug
from . import distributed as tdist
from .data import DataSpec, as_spec, discover
from .detectors import (
    build_detector,
    fake_logit,
    load_init_weights,
    load_state,
    read_checkpoint,
    resolve,
    save_checkpoint,
)
from .layouts import format_summary
from .metrics import accuracies, average_precision
from .passes import default_workers
from .progress import progress_bar
from .results import write_csv
from .trainstate import EarlyStopping, checksum, new_partial, restored, rng_state, set_rng_state, storable, tensorboard

RESUME_KEYS = ("arch", "batch_size", "lr", "seed", "blur_prob", "jpeg_prob", "color_robust", "crop_size",
               "load_size", "amp", "max_per_class", "train_digest", "val_digest")


def stored_config(o: Any, data: str, val: str, out: str, train_digest: str = "",
                  val_digest: str = "") -> dict[str, Any]:
    """The settings that define a run as ``model_last.pth`` and ``model_best.pth`` store them (``o``: the
    :class:`tffkit.jobs.train.TrainOptions`; ``data``, ``val``, ``out``: the roots and the output folder; the digests
    of the images found); :data:`RESUME_KEYS` of it must match to resume."""
    return {"arch": o.arch, "data": data, "val": val, "out": out, "color_robust": o.color_robust, "init": o.init,
            "blur_prob": o.blur_prob, "jpeg_prob": o.jpeg_prob, "batch_size": o.batch_size, "lr": o.lr,
            "max_epochs": o.max_epochs, "max_steps": o.max_steps, "seed": o.seed, "amp": o.amp,
            "crop_size": o.crop_size, "load_size": o.load_size, "max_per_class": o.max_per_class,
            "patience": o.patience, "min_lr": o.min_lr, "save_every": o.save_every, "train_digest": train_digest,
            "val_digest": val_digest, "trust_init": o.trust_checkpoint}


class Trainer:
    """Data, model, optimiser and the training step; :func:`fit` drives it epoch by epoch. ``options``: a
    :class:`tffkit.jobs.train.TrainOptions` (its ``init`` a path or None); ``out``: the output folder (stored in the
    checkpoints' config)."""

    def __init__(self, options: Any, ctx: tdist.DistContext, data: str | os.PathLike | DataSpec,
                 val: str | os.PathLike | DataSpec, out: str | os.PathLike = ""):
        cfg = options
        num_workers, progress = cfg.workers, cfg.progress
        if cfg.amp not in ("off", "bf16") or cfg.batch_size < ctx.world:
            raise ValueError(f"--amp must be 'off' or 'bf16' (got {cfg.amp!r}) and the global batch size "
                             f"({cfg.batch_size}) at least the number of processes ({ctx.world})")
        self.options, self.ctx, self.dev = cfg, ctx, ctx.device
        self.progress = progress and ctx.is_main
        # GPU training decodes + augments ≈ 250 photos/s per worker (measured on a 2-core CPU): use every core
        limit = None if self.dev.type == "cuda" else 8
        self.workers = default_workers(ctx.world, limit) if num_workers is None else num_workers
        if self.dev.type == "cpu" and self.workers:  # loader workers + compute threads ≤ cores (no oversubscription)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            torch.set_num_threads(max(1, min(torch.get_num_threads(), cores // ctx.world - self.workers)))
        found = [discover(as_spec(d), max_per_class=cfg.max_per_class) for d in (data, val)]
        self.train_samples, self.val_samples = found[0].samples, found[1].samples
        self.data_found = [f.summary() for f in found]
        for what, f in zip(("training", "validation"), self.data_found, strict=True):
            _log(ctx, f"{what} {format_summary(f)}")
        self.config = stored_config(cfg, str(data), str(val), str(out),
                                    aug.samples_digest(self.train_samples, str(data)),
                                    aug.samples_digest(self.val_samples, str(val)))
        self.train_set = aug.AugmentedDataset(self.train_samples, aug.training_augment(
            cfg.color_robust, cfg.blur_prob, cfg.jpeg_prob, cfg.crop_size, cfg.load_size), cfg.seed, aug.TRAIN_STREAM)
        self.val_set = aug.AugmentedDataset(self.val_samples, aug.validation_augment(
            cfg.blur_prob, cfg.jpeg_prob, cfg.crop_size, cfg.load_size), 0, aug.VAL_STREAM)
        torch.manual_seed(cfg.seed)
        self.detector = resolve(cfg.arch)
        self.prep = self.detector.preprocessing  # the detector's normalisation (CLIP's for the CLIP detectors)
        self.net = build_detector(cfg.arch)
        self.init_report = load_init_weights(self.net, cfg.init, cfg.trust_checkpoint) if cfg.init else None
        self.memory_format = torch.channels_last if self.dev.type == "cuda" else torch.contiguous_format
        self.net.to(self.dev, memory_format=self.memory_format).train()
        self.model: nn.Module = self.net
        if ctx.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        if self.dev.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def loader(self, epoch: int, skip: int = 0) -> torch.utils.data.DataLoader:
        """This rank's batches of ``epoch`` from global batch ``skip`` on (workers seeded from seed, epoch, rank)."""
        c = self.options
        batches = aug.epoch_batches(len(self.train_samples), c.batch_size, c.seed, epoch, self.ctx.rank,
                                    self.ctx.world, skip)
        return aug.make_loader(self.train_set, batches, (c.seed, epoch, self.ctx.rank), self.workers, self.dev)

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        x = self.prep.normalize(images.to(self.dev, non_blocking=True))
        return x.contiguous(memory_format=self.memory_format)

    def logits(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The fake logit per image (a two-class head as its log-odds, the detector's polarity applied)."""
        return fake_logit(net(self._images(images)), self.detector.fake_index)

    def step(self, batch: aug.TrainBatch) -> tuple[torch.Tensor, int]:
        """One optimiser step on the global batch; returns (summed BCE of this rank, images of this rank).

        The loss is the mean over the global batch whatever the split; when a rank's share is empty
        (short last batch, unreadable files) gradients are summed by hand instead of through DDP.
        """
        n_local = 0 if batch.images is None else len(batch.images)
        n_global, n_empty = tdist.all_reduce_host([n_local, int(n_local == 0)])
        world = self.ctx.world
        loss_sum = torch.zeros((), device=self.dev)
        if n_global == 0:
            return loss_sum, 0
        self.optimizer.zero_grad(set_to_none=True)
        if n_local:
            net = self.model if n_empty == 0 else self.net
            with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.options.amp == "bf16"):
                logits = self.logits(net, batch.images)
            labels = batch.labels.to(self.dev, non_blocking=True)
            loss_sum = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="sum")
            (loss_sum * ((world if n_empty == 0 else 1) / n_global)).backward()
        if world > 1 and n_empty:
            for p in self.net.parameters():
                p.grad = torch.zeros_like(p) if p.grad is None else p.grad
                tdist.all_reduce_sum(p.grad)
        self.optimizer.step()
        return loss_sum.detach(), n_local

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Loss, accuracy (p > 0.5) and AP on the whole validation set, exact across processes."""
        if tdist.active():  # BatchNorm statistics of rank 0 (those checkpointed) on every rank
            for buf in self.net.buffers():
                torch.distributed.broadcast(buf, src=0)
        self.net.eval()
        n, bs = len(self.val_samples), self.options.batch_size  # whole batches per rank: logits independent of world
        batches = [[(i, 0) for i in range(s, min(n, s + bs))] for s in range(0, n, bs)][self.ctx.rank::self.ctx.world]
        idx, logits, failed = [], [], []
        bar = progress_bar(sum(map(len, batches)), "validation", "img", self.progress, leave=False)
        for batch in aug.make_loader(self.val_set, batches, (0, 0, self.ctx.rank), self.workers, self.dev):
            failed += [self.val_samples[i].path for i, _ in batch.failed]
            if batch.images is not None:
                with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.options.amp == "bf16"):
                    out = self.logits(self.net, batch.images)
                idx.append(batch.indices)
                logits.append(out.float())
            bar.update(len(batch.indices) + len(batch.failed))  # once computed, not when decoded
        bar.close()
        self.net.train()
        index, logit = tdist.gather_rows(idx, logits)
        logit = logit.astype(np.float64)
        skipped = sorted(p for part in tdist.gather_objects(failed) for p in part)
        labels = np.array([self.val_samples[i].label for i in index], dtype=np.float64)
        loss = float(np.mean(np.logaddexp(0.0, logit) - labels * logit)) if len(index) else float("nan")
        prob = expit(logit)
        return {"val_loss": loss, "val_acc": accuracies(labels, prob)["acc"], "val_ap": average_precision(labels, prob),
                "n_val": int(len(index)), "val_skipped": skipped}

    def rng_state(self) -> dict[str, Any]:
        """This process's random states (:func:`tffkit.trainstate.rng_state`)."""
        return rng_state(self.dev)

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore the random states of :meth:`rng_state`."""
        set_rng_state(state, self.dev)


def _log(ctx: tdist.DistContext, msg: str) -> None:
    if ctx.is_main:
        tqdm.write(msg)


def _save_last(tr: Trainer, out: Path, st: dict[str, Any], partial: dict[str, Any]) -> None:
    rngs, partials = tdist.gather_objects(tr.rng_state()), tdist.gather_objects(storable(partial))
    if tr.ctx.is_main:
        save_checkpoint(out / "model_last.pth", tr.net, arch=tr.options.arch, optimizer=tr.optimizer.state_dict(),
                        progress=st, rng=rngs, partial=partials, config=tr.config, world=tr.ctx.world)
    tdist.barrier()


def _resume(tr: Trainer, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    ck = read_checkpoint(path, what="training checkpoint")
    old, new = ck.get("config", {}), tr.config
    diff = [f"{k}: {old.get(k)!r} → {new[k]!r}" for k in RESUME_KEYS if old.get(k) != new[k]]
    if diff:
        raise ValueError(f"cannot resume {path}: the run was started with other settings ({'; '.join(diff)})")
    load_state(tr.net, ck, tr.options.arch)
    tr.optimizer.load_state_dict(ck["optimizer"])
    if ck["world"] != tr.ctx.world:
        _log(tr.ctx, f"warning: resuming a {ck['world']}-process run with {tr.ctx.world} processes "
                     "(same data order, but random states and partial-epoch statistics are not per-rank exact)")
    r = tr.ctx.rank
    tr.set_rng_state(ck["rng"][r % len(ck["rng"])])
    partial = restored(ck["partial"][r]) if ck["world"] == tr.ctx.world else new_partial()
    return ck["progress"], partial


def _train_epoch(tr: Trainer, out: Path, st: dict[str, Any], partial: dict[str, Any]) -> bool:
    """Train the rest of epoch ``st['epoch']``; False when ``max_steps`` stopped it (checkpoint written)."""
    start, max_steps, save_every = time.time() - partial["time"], tr.options.max_steps, tr.options.save_every
    loss_acc = torch.zeros((), dtype=torch.float64, device=tr.dev) + partial["loss_sum"]
    bar = progress_bar(-(-len(tr.train_samples) // tr.options.batch_size), f"epoch {st['epoch']}", "step", tr.progress,
                       leave=False, initial=st["batch"])
    for batch in tr.loader(st["epoch"], st["batch"]):
        loss_sum, n = tr.step(batch)
        loss_acc += loss_sum
        partial["n"] += n
        partial["seen"].append(batch.indices.numpy())
        partial["failed"] += [tr.train_samples[i].path for i, _ in batch.failed]
        st["batch"] += 1
        st["step"] += 1
        bar.update(1)
        stop = max_steps is not None and st["step"] >= max_steps
        if stop or (save_every and st["step"] % save_every == 0):
            partial.update(loss_sum=float(loss_acc), time=time.time() - start, seen=[np.concatenate(partial["seen"])])
            _save_last(tr, out, st, partial)
        if stop:
            st["stopped"] = "max_steps"
            bar.close()
            return False
    bar.close()
    partial.update(loss_sum=float(loss_acc), time=time.time() - start)
    return True


def _epoch_row(tr: Trainer, st: dict[str, Any], partial: dict[str, Any]) -> dict[str, Any]:
    """Validate and merge every rank's epoch statistics into one history row."""
    v = tr.validate()
    totals = tdist.all_reduce_sum(torch.tensor([partial["loss_sum"], partial["n"]], dtype=torch.float64,
                                               device=tr.dev)).tolist()
    parts = tdist.gather_objects((np.concatenate(partial["seen"]) if partial["seen"] else np.zeros(0, np.int64),
                                  partial["failed"]))
    seen = np.sort(np.concatenate([p[0] for p in parts])).astype(np.int64)
    failed = sorted(f for p in parts for f in p[1])
    st["skipped"] = sorted(set(st["skipped"]) | set(failed) | set(v["val_skipped"]))
    n_seen = int(totals[1])
    return {"epoch": st["epoch"], "lr": tr.optimizer.param_groups[0]["lr"], "train_loss": totals[0] / max(1, n_seen),
            "val_loss": v["val_loss"], "val_acc": v["val_acc"], "val_ap": v["val_ap"],
            "images_per_s": n_seen / max(partial["time"], 1e-9), "time_s": partial["time"], "steps": st["step"],
            "n_seen": n_seen, "n_skipped": len(failed), "seen_sha1": hashlib.sha1(seen.tobytes()).hexdigest()[:16],
            "n_val": v["n_val"], "val_skipped": len(v["val_skipped"])}


def _end_epoch(tr: Trainer, out: Path, st: dict[str, Any], es: EarlyStopping, row: dict[str, Any]) -> EarlyStopping:
    """Best checkpoint, early stopping / lr decay, then ``model_last.pth`` and ``history.csv``."""
    ctx, cfg = tr.ctx, tr.options
    st["history"].append(row)
    _log(ctx, f"epoch {row['epoch']}: lr {row['lr']:.1e} train_loss {row['train_loss']:.4f} val_loss "
              f"{row['val_loss']:.4f} val_acc {row['val_acc']:.4f} val_ap {row['val_ap']:.4f} "
              f"({row['images_per_s']:.0f} img/s)")
    if st["best"] is None or row["val_acc"] > st["best"]["val_acc"]:
        st["best"] = {k: row[k] for k in ("epoch", "val_acc", "val_ap", "val_loss", "train_loss")}
        if ctx.is_main:
            save_checkpoint(out / "model_best.pth", tr.net, arch=cfg.arch, epoch=row["epoch"], metrics=st["best"],
                            config=tr.config)
    if es.update(row["val_acc"]):
        for group in tr.optimizer.param_groups:
            group["lr"] /= 10.0
        st["lr_drops"] += 1
        lr = tr.optimizer.param_groups[0]["lr"]
        if lr < cfg.min_lr:
            st["stopped"] = "early_stopping"
            _log(ctx, f"no improvement for {cfg.patience} epochs and lr {lr:.1e} < {cfg.min_lr:.0e}: stopping")
        else:
            es = EarlyStopping(cfg.patience, delta=0.002)
            _log(ctx, f"no improvement for {cfg.patience} epochs: lr divided by 10 → {lr:.1e}")
    st.update(epoch=row["epoch"] + 1, batch=0, es=asdict(es))
    _save_last(tr, out, st, new_partial())
    if ctx.is_main:
        write_csv(out / "history.csv", st["history"])
    return es


def fit(tr: Trainer, out: Path, resume: bool = False) -> dict[str, Any]:
    """Train until early stopping, ``max_epochs`` or ``max_steps`` (``resume``: from ``out/model_last.pth``),
    writing the checkpoints and ``history.csv`` to ``out``; returns final/best metrics and the output paths."""
    ctx, cfg = tr.ctx, tr.options
    last = out / "model_last.pth"
    st: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "es": asdict(EarlyStopping(cfg.patience)), "best": None,
                          "history": [], "stopped": None, "lr_drops": 0, "skipped": []}
    partial, resumed = new_partial(), resume
    if resumed:
        st, partial = _resume(tr, last)
        _log(ctx, f"resuming {last}: epoch {st['epoch']}, batch {st['batch']}, step {st['step']}")
    elif tr.init_report:
        rep = tr.init_report
        _log(ctx, f"init from {rep['path']}: loaded {rep['loaded']}/{rep['total']} tensors; "
                  f"re-initialised head: {', '.join(rep['reinitialised']) or 'none'}")
    else:
        _log(ctx, f"no --init: training {cfg.arch} from scratch")
    _log(ctx, f"{len(tr.train_samples)} training / {len(tr.val_samples)} validation images, {ctx.world} process(es) "
              f"on {ctx.device}, global batch {cfg.batch_size}, {tr.workers} loader worker(s) and "
              f"{torch.get_num_threads()} thread(s) per process")
    if st["stopped"] != "early_stopping":
        st["stopped"] = None
    writer = tensorboard(out, ctx)
    es = EarlyStopping(**st["es"])
    while st["stopped"] is None:
        if cfg.max_epochs is not None and st["epoch"] >= cfg.max_epochs:
            st["stopped"] = "max_epochs"
        elif cfg.max_steps is not None and st["step"] >= cfg.max_steps:
            st["stopped"] = "max_steps"
        elif _train_epoch(tr, out, st, partial):
            row = _epoch_row(tr, st, partial)
            es = _end_epoch(tr, out, st, es, row)
            partial = new_partial()
            if writer is not None:
                for key in ("lr", "train_loss", "val_loss", "val_acc", "val_ap", "images_per_s"):
                    writer.add_scalar(key, row[key], row["epoch"])
                writer.flush()
    if writer is not None:
        writer.close()
    if ctx.is_main and st["history"]:  # also repairs a history.csv left behind by a kill
        write_csv(out / "history.csv", st["history"])
    best = out / "model_best.pth"
    result = {"out": str(out), "model_best": str(best) if best.is_file() else None, "model_last": str(last),
              "history": str(out / "history.csv"), "epochs": st["epoch"], "steps": st["step"],
              "stopped": st["stopped"], "lr": tr.optimizer.param_groups[0]["lr"], "best": st["best"],
              "final": st["history"][-1] if st["history"] else None, "init": tr.init_report,
              "n_train": len(tr.train_samples), "n_val": len(tr.val_samples), "skipped": st["skipped"],
              "device": str(ctx.device), "world": ctx.world, "resumed": resumed,
              "ranks_in_sync": len(set(tdist.gather_objects(checksum(tr.net)))) == 1}
    return result
