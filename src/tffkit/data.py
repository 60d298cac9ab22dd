"""Forensic image datasets: folder discovery, robust decoding, presets and perturbations.

Images live in folders named ``0_real`` (label 0) and ``1_fake`` (label 1), at any depth under a
root (ForenSynths: ``test/<set>/<class>/{0_real,1_fake}`` or ``test/<set>/{0_real,1_fake}``).
The first folder below the root is the *set*, the folders between it and ``0_real``/``1_fake``
form the *class*. Labels come from folder names only, never from ``ImageFolder`` ordering.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
LABEL_DIRS = {"0_real": 0, "1_fake": 1}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("center224", "full")


class DatasetLayoutError(ValueError):
    """The data root does not follow the ``0_real`` / ``1_fake`` layout."""


@dataclass(frozen=True)
class Sample:
    """One image on disk with its label (0 real, 1 fake), set and class."""

    path: str
    label: int
    set: str
    cls: str


@dataclass(frozen=True)
class Perturbation:
    """Deterministic image perturbations applied before cropping and normalisation."""

    grayscale: bool = False
    jpeg: int | None = None
    blur: float | None = None
    resize: float | None = None

    def apply(self, img: Image.Image) -> Image.Image:
        """Apply resize → blur → JPEG → grayscale (ITU-R 601 luma, replicated to RGB)."""
        if self.resize is not None and self.resize != 1.0:
            w, h = img.size
            size = (max(1, round(w * self.resize)), max(1, round(h * self.resize)))
            img = img.resize(size, Image.BILINEAR)
        if self.blur:
            img = img.filter(ImageFilter.GaussianBlur(radius=float(self.blur)))
        if self.jpeg is not None:
            img = jpeg_compress(img, int(self.jpeg))
        if self.grayscale:
            img = to_grayscale(img)
        return img

    def describe(self) -> str:
        """A short name such as ``gray+jpeg75`` (``none`` when nothing is applied)."""
        parts = []
        if self.resize not in (None, 1.0):
            parts.append(f"resize{self.resize:g}")
        if self.blur:
            parts.append(f"blur{self.blur:g}")
        if self.jpeg is not None:
            parts.append(f"jpeg{self.jpeg}")
        if self.grayscale:
            parts.append("gray")
        return "+".join(parts) or "none"


def to_grayscale(img: Image.Image) -> Image.Image:
    """ITU-R 601-2 luma (PIL ``convert('L')``) replicated to three channels."""
    return img.convert("L").convert("RGB")


def jpeg_compress(img: Image.Image, quality: int) -> Image.Image:
    """Round-trip an image through PIL's JPEG codec at ``quality``."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode any image (grayscale, palette, RGBA, CMYK, 16-bit) to 8-bit RGB; raises on bad files."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
            arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return Image.fromarray(arr, mode="L").convert("RGB")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            return img.convert("RGBA").convert("RGB")
        return img.convert("RGB")


def _label_dirs(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in dirnames:
            if name in LABEL_DIRS:
                found.append(Path(dirpath) / name)
    return sorted(found)


def find_samples(
    root: str | os.PathLike,
    sets: Sequence[str] | None = None,
    max_per_class: int | None = None,
    max_per_label: int | None = None,
) -> list[Sample]:
    """Walk ``root`` for ``0_real``/``1_fake`` folders; deterministic order (set, class, label, name).

    ``max_per_class`` keeps the first N images of each (set, class, label); ``max_per_label`` the
    first N of each (set, label). Raises :class:`DatasetLayoutError` saying what was expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"data root {root} does not exist or is not a folder")
    label_dirs = _label_dirs(root)
    if not label_dirs:
        raise DatasetLayoutError(
            f"no '0_real' or '1_fake' folder found under {root}. Expected ForenSynths layout: "
            "ROOT/<set>/<class>/{0_real,1_fake}/*.png, ROOT/<set>/{0_real,1_fake}/*.png "
            "or ROOT/{0_real,1_fake}/*.png"
        )
    groups: dict[tuple[str, str, int], list[str]] = {}
    for d in label_dirs:
        rel = d.parent.relative_to(root).parts
        set_name = rel[0] if rel else root.name
        cls = "/".join(rel[1:])
        files = sorted(
            str(d / f) for f in os.listdir(d)
            if Path(f).suffix.lower() in IMAGE_EXTENSIONS and (d / f).is_file()
        )
        groups.setdefault((set_name, cls, LABEL_DIRS[d.name]), []).extend(files)
    all_sets = sorted({k[0] for k in groups})
    if sets:
        missing = [s for s in sets if s not in all_sets]
        if missing:
            raise DatasetLayoutError(
                f"set(s) {missing} not found under {root}; sets found: {all_sets}"
            )
        groups = {k: v for k, v in groups.items() if k[0] in set(sets)}
    samples: list[Sample] = []
    taken_per_label: dict[tuple[str, int], int] = {}
    for (set_name, cls, label) in sorted(groups):
        files = groups[(set_name, cls, label)]
        if max_per_class is not None:
            files = files[:max_per_class]
        for f in files:
            key = (set_name, label)
            if max_per_label is not None and taken_per_label.get(key, 0) >= max_per_label:
                break
            taken_per_label[key] = taken_per_label.get(key, 0) + 1
            samples.append(Sample(f, label, set_name, cls))
    if not samples:
        raise DatasetLayoutError(
            f"the '0_real'/'1_fake' folders under {root} hold no images "
            f"(extensions {sorted(IMAGE_EXTENSIONS)})"
        )
    return samples


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the file header, or None if it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable header
        return None


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """Samples → uint8 CHW tensors (un-normalised) after perturbation and preset crop.

    Items are ``(tensor, index)``, or ``(None, index, error)`` for files that cannot be decoded;
    :func:`collate_images` separates those out so they are counted, listed and skipped.
    """

    samples: Sequence[Sample]
    preset: str = "center224"
    perturb: Perturbation = field(default_factory=Perturbation)
    crop: int = 224

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {PRESETS}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        try:
            img = self.perturb.apply(load_rgb(self.samples[index].path))
        except Exception as exc:  # noqa: BLE001 - report and skip any decoding failure
            return None, index, f"{type(exc).__name__}: {exc}"
        arr = np.asarray(img, dtype=np.uint8)
        if self.preset == "center224":
            arr = center_crop(arr, self.crop)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), index


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Centre crop an HWC array to size×size, zero-padding when smaller (as torchvision does)."""
    h, w = arr.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        arr = np.pad(arr, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = arr.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return arr[top:top + size, left:left + size]


@dataclass
class Batch:
    """A collated batch: uint8 images (B,3,H,W), dataset indices, and the files that failed."""

    images: torch.Tensor | None
    indices: torch.Tensor
    failed: list[tuple[int, str]]

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors, so copies to the GPU run asynchronously (the DataLoader's
        ``pin_memory=True`` calls this; without it a dataclass batch is silently left pageable)."""
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v.pin_memory() for k, v in tensors.items()
                                            if isinstance(v, torch.Tensor)})


def collate_images(items: Iterable) -> Batch:
    """Stack decodable items; collect ``(index, error)`` for the rest."""
    good, idx, failed = [], [], []
    for item in items:
        if item[0] is None:
            failed.append((item[1], item[2]))
        else:
            good.append(item[0])
            idx.append(item[1])
    images = torch.stack(good) if good else None
    return Batch(images, torch.tensor(idx, dtype=torch.long), failed)


class SizeGroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of indices whose images share one size (the ``full`` preset); order is deterministic."""

    def __init__(self, indices: Sequence[int], sizes: Sequence[tuple[int, int] | None], batch_size: int):
        self.batches: list[list[int]] = []
        groups: dict[object, list[int]] = {}
        for i in indices:
            groups.setdefault(sizes[i] or ("unreadable", i), []).append(i)
        for key in sorted(groups, key=lambda k: groups[k][0]):
            members = groups[key]
            for s in range(0, len(members), batch_size):
                self.batches.append(members[s:s + batch_size])

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B,3,H,W) → ImageNet-normalised float tensor on the same device."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    return (images.to(dtype) / 255.0 - mean) / std
