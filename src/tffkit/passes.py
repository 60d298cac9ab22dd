"""The one dataset-pass loop: sharded loader → batches on the device → failures gathered.

Every analysis (evaluate, rank, dropout, lrpmax, colour) iterates a :class:`DatasetPass`, does its
per-batch work on the device, then reduces exactly across processes with
:mod:`tffkit.distributed`. The batches are planned over the whole dataset, the same for any number of
processes, and each process takes whole batches (``rank::world``): an image is always computed in the
same batch, so per-image results do not depend on the world size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch

from . import distributed as tdist
from .data import ImageDataset, Perturbation, Preprocessing, Sample, SizeGroupedBatchSampler, collate_images, image_size
from .progress import progress_bar


def plan_batches(samples: Sequence[Sample], by_size: bool, batch_size: int) -> list[list[int]]:
    """Every batch of the whole dataset (dataset indices), independent of the world size: consecutive runs of
    ``batch_size`` or, when whole images are batched (``by_size``), of images of one size."""
    n = len(samples)
    if not by_size:
        return [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]
    sizes = {i: image_size(samples[i].path) for i in range(n)}  # headers only; every rank plans the same batches
    return list(SizeGroupedBatchSampler(range(n), sizes, batch_size))


def default_workers(world: int = 1, limit: int | None = 8) -> int:
    """Data-loading workers per process: the cores this process can use but one, at most ``limit``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(limit or cores, cores // max(1, world) - 1))


class DatasetPass:
    """Iterate this rank's shard of ``samples`` as ``(uint8 images on device, dataset indices)``.

    Undecodable files are skipped and remembered in :attr:`failed`; :meth:`gather_failed` returns
    every rank's failures as ``{'path', 'error'}`` rows sorted by path. ``preprocessing`` is the detector's
    (resize, crop, small images; the ``preset`` picks its spatial part); images smaller than the crop are counted
    (:meth:`gather_small`), and with ``keep_info`` each image's metadata is kept (:meth:`gather_info`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        ctx: tdist.DistContext,
        preset: str = "detector",
        perturb: Perturbation | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        desc: str = "images",
        progress: bool = True,
        preprocessing: Preprocessing | None = None,
        keep_info: bool = False,
    ):
        self.samples = samples
        self.ctx = ctx
        self.dataset = ImageDataset(samples, preset, perturb or Perturbation(), preprocessing=preprocessing)
        by_size = self.dataset.spatial.batched_by_size
        self.batches = plan_batches(samples, by_size, batch_size)[ctx.rank::ctx.world]  # whole batches
        self.indices = [i for batch in self.batches for i in batch]
        self.batch_size = batch_size
        self.num_workers = default_workers(ctx.world) if num_workers is None else num_workers
        self.desc = desc
        self.progress = progress and ctx.is_main
        self.bar = None
        self.failed: list[tuple[int, str]] = []
        self.keep_info = keep_info
        self.info: dict[int, dict] = {}
        self.n_small = 0
        self._started: Iterator | None = None

    def start(self) -> DatasetPass:
        """Start the loader workers now, so they decode the first batches while the caller still builds its
        model (the next iteration uses them)."""
        if self._started is None:
            self._started = iter(self._loader())
        return self

    def _loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self.batches,
            collate_fn=collate_images,
            num_workers=self.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
            persistent_workers=False,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.failed, self.info, self.n_small = [], {}, 0
        batches, self._started = self._started or iter(self._loader()), None
        n, total = len(self.indices), len(self.samples)
        desc = self.desc if self.ctx.world == 1 else f"{self.desc} (rank 0's {n} of {total})"
        self.bar = bar = progress_bar(n, desc, "img", self.progress)
        for batch in batches:
            self.failed.extend(batch.failed)
            for i, info in zip(batch.indices.tolist(), batch.info or [], strict=False):
                self.n_small += bool(info and info.get("smaller_than_crop"))
                if self.keep_info:
                    self.info[i] = info
            if batch.images is not None:
                yield batch.images.to(self.ctx.device, non_blocking=True), batch.indices
            # counted once the caller has processed the batch (it asks for the next one), not when decoded
            bar.update(len(batch.indices) + len(batch.failed))
        bar.close()

    def gather_small(self) -> int:
        """Images of all ranks that were smaller than the crop."""
        return int(sum(tdist.gather_objects(self.n_small)))

    def gather_info(self) -> dict[int, dict]:
        """Every rank's per-image metadata (``keep_info=True``), by dataset index."""
        return {i: info for part in tdist.gather_objects(self.info) for i, info in part.items()}

    def gather_failed(self) -> list[dict[str, str]]:
        """All ranks' undecodable files as rows ``{'path', 'error'}``."""
        rows = [{"path": self.samples[i].path, "error": e} for i, e in self.failed]
        merged = [r for part in tdist.gather_objects(rows) for r in part]
        return sorted(merged, key=lambda r: r["path"])
