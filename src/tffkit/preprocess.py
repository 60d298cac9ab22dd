"""A detector's input preprocessing: normalisation constants, resize and centre crop, and small images.

Preprocessing is a property of the detector (:class:`tffkit.detectors.zoo.Detector`): Wang et al.'s ResNet-50
takes ImageNet-normalised 224-px centre crops without resizing, UnivFD and RINE take CLIP-normalised ones, NPR
resizes to 256×256, Corvi et al.'s detector takes whole images. The data pipeline applies it after any
perturbation: resize → centre crop (images smaller than the crop have their shorter side resized up to it first,
as Wang et al. advise, unless ``small_images='pad'``) → uint8 CHW; :meth:`Preprocessing.normalize` runs on the
device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRESETS = ("detector", "center224", "full")
SMALL_IMAGES = ("upscale", "pad")
CROP_MODES = ("center", "random-resized")
RANDOM_RESIZED = {"scale": (0.99, 1.0), "ratio": (0.99, 1.0)}  # the public code's ranking crop
_INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Preprocessing:
    """Normalisation, resize and centre crop of a detector's inputs.

    ``resize``: ``None`` (keep the size), an int (the shorter side is resized to it) or ``(height, width)`` (an
    exact size, aspect ratio not kept). ``crop``: the centre crop's side, or ``None`` for whole images (batched by
    size). ``small_images``: what happens to an image smaller than the crop — ``upscale`` (shorter side resized up
    to the crop first, Wang et al.'s advice) or ``pad`` (zero padding, as torchvision's ``CenterCrop``).
    ``crop_mode``: ``center``, or ``random-resized`` — the public code's ranking crop, torchvision's
    ``RandomResizedCrop(crop, scale=(0.99, 1), ratio=(0.99, 1))`` drawn per image from (``crop_seed``, dataset index),
    so reproducible and independent of the number of processes (:func:`random_resized_crop`).
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop: int | None = 224
    resize: int | tuple[int, int] | None = None
    interpolation: str = "bilinear"
    small_images: str = "upscale"
    crop_mode: str = "center"
    crop_seed: int = 0

    def __post_init__(self) -> None:
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {self.crop_mode!r}; use one of {CROP_MODES}")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; use one of {sorted(_INTERPOLATION)}")
        if self.small_images not in SMALL_IMAGES:
            raise ValueError(f"unknown small-image policy {self.small_images!r}; use one of {SMALL_IMAGES}")

    @property
    def norm_name(self) -> str:
        """``imagenet``, ``clip`` or the constants themselves."""
        if tuple(self.mean) == IMAGENET_MEAN and tuple(self.std) == IMAGENET_STD:
            return "imagenet"
        if tuple(self.mean) == CLIP_MEAN and tuple(self.std) == CLIP_STD:
            return "clip"
        return f"mean {tuple(self.mean)}, std {tuple(self.std)}"

    @property
    def batched_by_size(self) -> bool:
        """True when output sizes follow the images' sizes (no crop and no exact resize)."""
        return self.crop is None and not isinstance(self.resize, (tuple, list))

    def describe(self) -> str:
        """One line such as ``ImageNet mean/std, no resize, centre crop 224``."""
        norm = {"imagenet": "ImageNet mean/std", "clip": "CLIP mean/std"}.get(self.norm_name, self.norm_name)
        if self.resize is None:
            size = "no resize"
        elif isinstance(self.resize, int):
            size = f"shorter side → {self.resize} ({self.interpolation})"
        else:
            size = f"resize to {self.resize[0]}×{self.resize[1]} ({self.interpolation})"
        crop = f"centre crop {self.crop}" if self.crop else "whole image"
        if self.crop and self.crop_mode == "random-resized":
            crop = (f"random resized crop {self.crop} (scale 0.99–1, ratio 0.99–1, bilinear; seed {self.crop_seed} "
                    "per image)")
        return f"{norm}, {size}, {crop}"

    def to_dict(self) -> dict:
        """JSON-friendly fields (for run.json and ``tff detectors``)."""
        return {"mean": list(self.mean), "std": list(self.std), "crop": self.crop,
                "resize": list(self.resize) if isinstance(self.resize, (tuple, list)) else self.resize,
                "interpolation": self.interpolation, "small_images": self.small_images,
                **({"crop_mode": self.crop_mode, "crop_seed": self.crop_seed} if self.crop_mode != "center" else {}),
                "description": self.describe()}

    def for_preset(self, preset: str) -> Preprocessing:
        """``detector``: this preprocessing; ``center224``: no resize, centre crop 224 (Wang et al.'s evaluation);
        ``full``: no resize, whole images. Normalisation always stays the detector's."""
        if preset == "detector":
            return self
        if preset == "center224":
            return replace(self, crop=224, resize=None)
        if preset == "full":
            return replace(self, crop=None, resize=None)
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")

    def normalize(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (B, 3, H, W) → normalised float tensor on the same device."""
        return normalize_with(images, self.mean, self.std, dtype)

    def spatial(self, img: Image.Image, index: int = 0) -> tuple[np.ndarray, bool]:
        """Resize and centre-crop a PIL image → (HWC uint8 array, True when it was smaller than the crop); ``index``
        (the dataset index) seeds a random resized crop."""
        interp = _INTERPOLATION[self.interpolation]
        if isinstance(self.resize, int):
            img = resize_shorter(img, self.resize, interp)
        elif self.resize is not None:
            h, w = self.resize
            if img.size != (w, h):
                img = img.resize((int(w), int(h)), interp)
        if self.crop is not None and self.crop_mode == "random-resized":  # resizes to the crop whatever the size
            rng = np.random.default_rng([self.crop_seed, index])
            return np.asarray(random_resized_crop(img, self.crop, rng), dtype=np.uint8), False
        small = self.crop is not None and min(img.size) < self.crop
        if small and self.small_images == "upscale":
            img = resize_shorter(img, self.crop, Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        if self.crop is not None:
            arr = center_crop(arr, self.crop)
        return arr, small


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator, scale=RANDOM_RESIZED["scale"],
                            ratio=RANDOM_RESIZED["ratio"]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of torchvision's ``RandomResizedCrop.get_params``, drawn from ``rng``: ten tries at
    an area share in ``scale`` and a log-uniform aspect ratio in ``ratio``, else the whole image with the ratio
    clamped."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """The public code's ranking crop: a box of :func:`random_resized_crop_box` resized to size × size (bilinear,
    PIL), as torchvision's ``RandomResizedCrop`` does to a PIL image."""
    top, left, h, w = random_resized_crop_box(*img.size, rng)
    return img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)


def normalize_with(images: torch.Tensor, mean, std, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) → ``(x/255 − mean)/std`` in ``dtype`` on the images' device."""
    m = torch.tensor(mean, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    return (images.to(dtype) / 255.0 - m) / s


def resize_shorter(img: Image.Image, size: int, interp: int = Image.BILINEAR) -> Image.Image:
    """Resize so that the shorter side is ``size`` (aspect ratio kept); unchanged when it already is."""
    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    return img.resize((max(size, round(w * scale)), max(size, round(h * scale))), interp)


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Centre crop an HWC array to size×size, zero-padding when smaller (as torchvision does)."""
    h, w = arr.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        arr = np.pad(arr, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = arr.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return arr[top:top + size, left:left + size]


def small_image_note(n_small: int, prep: Preprocessing) -> str | None:
    """The sentence stating what happened to images smaller than the crop (None when there were none)."""
    if not n_small or prep.crop is None:
        return None
    what = (f"had their shorter side resized up to {prep.crop} px (bilinear) before the centre crop, as Wang et al. "
            "advise (--small-images pad zero-pads them instead)" if prep.small_images == "upscale" else
            f"were zero-padded to {prep.crop}×{prep.crop} (--small-images pad; upscale resizes them instead)")
    return f"{n_small} image(s) smaller than the {prep.crop}-px crop {what}"
