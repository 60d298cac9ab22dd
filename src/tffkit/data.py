"""Forensic image datasets: decoding, perturbations, the detector's preprocessing and batching.

Where the images are and which label each has is :mod:`tffkit.layouts` (ForenSynths, GenImage,
DiffusionForensics, paired fake-only sets, CSV manifests); :mod:`tffkit.preprocess` is the detector's resize, crop
and normalisation. Labels come from folder names (or a manifest) only, never from ``ImageFolder`` ordering.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageFilter, UnidentifiedImageError

from .imagemeta import image_metadata
from .layouts import DatasetLayoutError, DataSpec, Discovery, Sample, as_spec, discover, find_samples
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, PRESETS, Preprocessing, center_crop, normalize_with
from .tables import table_row
from .walk import IMAGE_EXTENSIONS

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "PRESETS", "Batch", "DataSpec", "DatasetLayoutError",
           "Discovery", "ImageDataset", "ImageRefused", "Perturbation", "Preprocessing", "Sample",
           "SizeGroupedBatchSampler", "as_spec", "center_crop", "collate_images", "discover", "find_samples",
           "image_size", "jpeg_compress", "load_rgb", "normalize", "to_grayscale"]


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


# Images above MAX_PIXELS are refused from their header, before decoding (a 420 KB PNG of 12000² px decodes to
# 432 MB): the limit at which PIL itself warns of a decompression bomb. Images with a side below MIN_SIDE are
# refused when scored: blown up to a 224-px crop they are flat frames that hold no forensic trace.
MAX_PIXELS = 89_478_485
MIN_SIDE = 16


class ImageRefused(ValueError):
    """An image that is not decoded or not scored (too many pixels, too small, a format this PIL cannot read)."""


def _open(path: str | os.PathLike) -> Image.Image:
    if table_row(path) is not None:  # a row of a parquet/Arrow table: its bytes, read now (tffkit.tables)
        from .tables import open_row

        source, nbytes = open_row(os.fspath(path))
        img = _open(source) if isinstance(source, str) else _open_bytes(source)
        if nbytes is not None:
            img.info["tff_file_bytes"] = nbytes
        return img
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in (".heic", ".heif"):
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:
            raise ImageRefused(f"{suffix[1:].upper()} images need the pillow-heif package (not installed); "
                               "convert them to PNG or install pillow-heif") from None
    try:
        with warnings.catch_warnings():  # a large image is refused by load_rgb, with the limit stated
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageRefused(f"{exc} (decompression-bomb guard; not decoded)") from None
    except UnidentifiedImageError:
        if suffix == ".avif":
            raise ImageRefused("this PIL cannot read AVIF (Pillow ≥ 11.3 with libavif can); convert to PNG") from None
        raise


def _open_bytes(source) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageRefused(f"{exc} (decompression-bomb guard; not decoded)") from None


def load_rgb(path: str | os.PathLike, with_info: bool = False):
    """Decode any image (grayscale, palette, RGBA, CMYK, 16-bit) to 8-bit RGB; raises on bad files, and
    :class:`ImageRefused` before decoding an image of more than :data:`MAX_PIXELS` pixels.

    ``with_info``: also return the file's metadata (format, size, JPEG quality estimate, bytes)."""
    with _open(path) as img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ImageRefused(f"{w}×{h} px ({w * h / 1e6:.1f} megapixels) is above the {MAX_PIXELS / 1e6:.1f}-"
                               "megapixel limit (decompression-bomb guard); not decoded")
        info = image_metadata(img, os.fspath(path)) if with_info else None
        if info is not None and "tff_file_bytes" in img.info:
            info["file_bytes"] = img.info["tff_file_bytes"]
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
            arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
            rgb = Image.fromarray(arr, mode="L").convert("RGB")
        elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgb = img.convert("RGBA").convert("RGB")
        else:
            rgb = img.convert("RGB")
    return (rgb, info) if with_info else rgb


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the file header, or None if it cannot be read."""
    try:
        with _open(path) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable header
        return None


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """Samples → uint8 CHW tensors (un-normalised) after perturbation and the detector's resize and crop.

    Items are ``(tensor, index, info)`` — ``info`` the image's metadata (:mod:`tffkit.imagemeta`) and whether it
    was smaller than the crop — or ``(None, index, error)`` for files that cannot be decoded;
    :func:`collate_images` separates those out so they are counted, listed and skipped. ``preset`` chooses the
    spatial part (``detector``: the preprocessing's own; ``center224``; ``full``).
    """

    samples: Sequence[Sample]
    preset: str = "detector"
    perturb: Perturbation = field(default_factory=Perturbation)
    crop: int = 224
    preprocessing: Preprocessing | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {PRESETS}")
        base = self.preprocessing or Preprocessing(crop=self.crop)
        self.spatial = base.for_preset(self.preset)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path = self.samples[index].path
        try:
            img, info = load_rgb(path, with_info=True)
            if min(img.size) < MIN_SIDE:
                raise ImageRefused(f"{img.size[0]}×{img.size[1]} px is below the {MIN_SIDE}-px minimum side; not "
                                   "scored (blown up to the crop it would be a flat frame)")
            arr, small = self.spatial.spatial(self.perturb.apply(img), index)
        except Exception as exc:  # noqa: BLE001 - report and skip any decoding failure
            return None, index, f"{type(exc).__name__}: {exc}"
        info["smaller_than_crop"] = small
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), index, info


@dataclass
class Batch:
    """A collated batch: uint8 images (B,3,H,W), dataset indices, and the files that failed."""

    images: torch.Tensor | None
    indices: torch.Tensor
    failed: list[tuple[int, str]]
    info: list[dict] | None = field(default=None, kw_only=True)  # per decoded image, when the dataset gives it

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors, so copies to the GPU run asynchronously (the DataLoader's
        ``pin_memory=True`` calls this; without it a dataclass batch is silently left pageable)."""
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v.pin_memory() for k, v in tensors.items()
                                            if isinstance(v, torch.Tensor)})


def collate_images(items: Iterable) -> Batch:
    """Stack decodable items ``(image, index[, info])``; collect ``(index, error)`` for the rest."""
    good, idx, failed, info = [], [], [], []
    for item in items:
        if item[0] is None:
            failed.append((item[1], item[2]))
        else:
            good.append(item[0])
            idx.append(item[1])
            info.append(item[2] if len(item) > 2 else None)
    images = torch.stack(good) if good else None
    return Batch(images, torch.tensor(idx, dtype=torch.long), failed,
                 info=info if any(i is not None for i in info) else None)


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
    """uint8 (B,3,H,W) → ImageNet-normalised float tensor on the same device (a detector's own constants:
    :meth:`tffkit.preprocess.Preprocessing.normalize`)."""
    return normalize_with(images, IMAGENET_MEAN, IMAGENET_STD, dtype)
