"""Training and validation data for ``tff train`` (docs/algorithms.md §6, Wang et al. 2020).

Training: resize the shorter side to ``load_size`` where smaller, Gaussian blur (σ ~ U[0, 3], p=0.5),
JPEG (quality U{30..100}, p=0.5, PIL or OpenCV codec drawn with equal odds), RandomCrop, horizontal flip,
RandomGrayscale(0.5) for colour-robust detectors. Validation: same resize, blur σ=1.5 and PIL JPEG
quality 65 with the training probabilities (a fixed draw per image, so the validation set is the same
every epoch), CenterCrop, no flip and never grayscale.

Every random draw comes from a generator seeded by ``(seed, stream, epoch, index)``, so an image's
augmentation does not depend on the number of processes or loader workers, and a resumed run
replays exactly. Transforms return what they drew (:class:`AugmentParams`) for inspection.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from .data import Batch, Sample, center_crop, collate_images, jpeg_compress, load_rgb, to_grayscale

JPEG_CODECS: tuple[str, ...] = ("pil", "cv2")  # Wang et al.'s ``jpg_method``
TRAIN_STREAM, VAL_STREAM, ORDER_STREAM = 0, 1, 2


@dataclass(frozen=True)
class AugmentParams:
    """What one transform call drew; ``None`` means the step was not applied."""

    resized_to: tuple[int, int] | None
    blur_sigma: float | None
    jpeg_quality: int | None
    jpeg_codec: str | None
    crop_top_left: tuple[int, int]
    flip: bool
    grayscale: bool


def jpeg_roundtrip(img: np.ndarray, quality: int, codec: str) -> np.ndarray:
    """Encode an HWC uint8 RGB array as JPEG at ``quality`` with ``codec`` ('pil' or 'cv2') and decode it."""
    if codec == "cv2":
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode the image")
        return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
    return np.asarray(jpeg_compress(Image.fromarray(img), quality))


def resize_if_smaller(img: Image.Image, size: int) -> Image.Image:
    """Bilinear resize so that the shorter side is ``size`` when it is smaller; else unchanged."""
    w, h = img.size
    if min(w, h) >= size:
        return img
    scale = size / min(w, h)
    return img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)


@dataclass(frozen=True)
class Augment:
    """One configured pipeline; ``aug(img, rng)`` → (HWC uint8 array of crop×crop, :class:`AugmentParams`).

    ``blur_sigma`` / ``jpeg_quality`` are inclusive ranges (equal ends = a fixed value).
    """

    load_size: int = 256
    crop_size: int = 224
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    jpeg_codecs: tuple[str, ...] = JPEG_CODECS
    random_crop: bool = True
    flip_prob: float = 0.5
    gray_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.crop_size > self.load_size:
            raise ValueError(f"crop size {self.crop_size} is larger than load size {self.load_size}")
        for name in ("blur_prob", "jpeg_prob", "flip_prob", "gray_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> tuple[np.ndarray, AugmentParams]:
        size0 = img.size
        img = resize_if_smaller(img, self.load_size)
        resized = img.size if img.size != size0 else None
        arr = np.asarray(img, dtype=np.uint8)
        sigma = quality = codec = None
        if rng.random() < self.blur_prob:
            sigma = float(rng.uniform(*self.blur_sigma))
            if sigma > 0:
                out = gaussian_filter(arr.astype(np.float32), sigma=(sigma, sigma, 0))
                arr = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        if rng.random() < self.jpeg_prob:
            quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            codec = self.jpeg_codecs[int(rng.integers(len(self.jpeg_codecs)))]
            arr = jpeg_roundtrip(np.ascontiguousarray(arr), quality, codec)
        c = self.crop_size
        h, w = arr.shape[:2]
        if self.random_crop:
            top, left = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
            arr = arr[top:top + c, left:left + c]
        else:
            top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
            arr = center_crop(arr, c)
        flip = bool(rng.random() < self.flip_prob)
        if flip:
            arr = arr[:, ::-1]
        gray = bool(rng.random() < self.gray_prob)
        if gray:
            arr = np.asarray(to_grayscale(Image.fromarray(np.ascontiguousarray(arr))))
        return np.ascontiguousarray(arr), AugmentParams(resized, sigma, quality, codec, (top, left), flip, gray)


def training_augment(color_robust: bool = False, blur_prob: float = 0.5, jpeg_prob: float = 0.5,
                     crop_size: int = 224, load_size: int = 256) -> Augment:
    """Wang et al.'s training pipeline; RandomGrayscale(0.5) only for a colour-robust detector."""
    return Augment(load_size, crop_size, blur_prob, (0.0, 3.0), jpeg_prob, (30, 100), JPEG_CODECS,
                   random_crop=True, flip_prob=0.5, gray_prob=0.5 if color_robust else 0.0)


def validation_augment(blur_prob: float = 0.5, jpeg_prob: float = 0.5, crop_size: int = 224,
                       load_size: int = 256) -> Augment:
    """Validation: blur σ=1.5 and PIL JPEG 65 (training probabilities), CenterCrop, no flip, no grayscale."""
    return Augment(load_size, crop_size, blur_prob, (1.5, 1.5), jpeg_prob, (65, 65), ("pil",),
                   random_crop=False, flip_prob=0.0, gray_prob=0.0)


def item_rng(seed: int, stream: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one image's draws in one epoch (``stream``: training, validation or order)."""
    return np.random.default_rng([seed, stream, epoch, index])


class AugmentedDataset(torch.utils.data.Dataset):
    """``ds[(index, epoch)]`` → ``(CHW uint8 tensor, label, index)``, or ``(None, index, error)``."""

    def __init__(self, samples: Sequence[Sample], augment: Augment, seed: int = 0, stream: int = TRAIN_STREAM):
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.samples, self.augment, self.seed, self.stream = samples, augment, seed, stream

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        try:
            arr, _ = self.augment(load_rgb(self.samples[index].path), item_rng(self.seed, self.stream, epoch, index))
        except Exception as exc:  # noqa: BLE001 - undecodable files are skipped and counted
            return None, index, f"{type(exc).__name__}: {exc}"
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()), self.samples[index].label, index


@dataclass
class TrainBatch(Batch):
    """A :class:`~tffkit.data.Batch` with the float labels of its decodable images."""

    labels: torch.Tensor


def collate_training(items: Iterable) -> TrainBatch:
    """:func:`~tffkit.data.collate_images` of ``(image, index)`` plus the labels of the decodable items."""
    items = list(items)
    batch = collate_images([item if item[0] is None else (item[0], item[2]) for item in items])
    labels = torch.tensor([item[1] for item in items if item[0] is not None], dtype=torch.float32)
    return TrainBatch(batch.images, batch.indices, batch.failed, labels)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``range(n)`` for ``epoch`` (identical on every process)."""
    return item_rng(seed, ORDER_STREAM, epoch, 0).permutation(n)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  skip: int = 0) -> list[list[tuple[int, int]]]:
    """This rank's share (``rank::world``) of every global batch of the epoch, from batch ``skip`` on.

    ``batch_size`` is global: every process makes the same number of steps and together they cover
    each image of the epoch exactly once (no padding); a share may be empty on a short last batch.
    """
    order = epoch_order(n, seed, epoch)
    return [[(int(i), epoch) for i in order[s:s + batch_size][rank::world]]
            for s in range(skip * batch_size, n, batch_size)]


def samples_digest(samples: Sequence[Sample], root: str | os.PathLike) -> str:
    """A short hash of the (relative path, label) list: resuming checks the data did not change."""
    text = "\n".join(f"{os.path.relpath(s.path, root)}\t{s.label}" for s in samples)
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def seed_worker(seed: int, epoch: int, rank: int, worker_id: int) -> None:
    """Seed Python, NumPy and torch in a loader worker from (seed, epoch, rank, worker)."""
    s = int(np.random.SeedSequence([seed, epoch, rank, worker_id]).generate_state(1)[0])
    cv2.setNumThreads(1)  # no OpenCV thread pool inside forked loader workers
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def make_loader(dataset: AugmentedDataset, batches: list[list[tuple[int, int]]], seed: tuple[int, int, int],
                workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """A loader over precomputed batches; workers seeded by :func:`seed_worker`, main RNG left untouched."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate_training, num_workers=workers,
        pin_memory=device.type == "cuda", worker_init_fn=functools.partial(seed_worker, *seed),
        generator=torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0])),
        prefetch_factor=4 if workers else None)
