"""A detector's input preprocessing: normalisation constants, resize and centre crop, and small images.

Preprocessing is a property of the detector (:class:`tffkit.detectors.zoo.Detector`): Wang et al.'s ResNet-50
takes ImageNet-normalised 224-px centre crops without resizing, UnivFD and RINE take CLIP-normalised ones, NPR
resizes to 256×256, Corvi et al.'s detector takes whole images. The data pipeline applies it after any
perturbation: resize → centre crop (images smaller than the crop have their shorter side resized up to it first,
as Wang et al. advise, unless ``small_images='pad'``) → uint8 CHW; :meth:`Preprocessing.normalize` runs on the
device.
"""

from __future__ import annotations

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
_INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Preprocessing:
    """Normalisation, resize and centre crop of a detector's inputs.

    ``resize``: ``None`` (keep the size), an int (the shorter side is resized to it) or ``(height, width)`` (an
    exact size, aspect ratio not kept). ``crop``: the centre crop's side, or ``None`` for whole images (batched by
    size). ``small_images``: what happens to an image smaller than the crop — ``upscale`` (shorter side resized up
    to the crop first, Wang et al.'s advice) or ``pad`` (zero padding, as torchvision's ``CenterCrop``).
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop: int | None = 224
    resize: int | tuple[int, int] | None = None
    interpolation: str = "bilinear"
    small_images: str = "upscale"

    def __post_init__(self) -> None:
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
        return f"{norm}, {size}, {crop}"

    def to_dict(self) -> dict:
        """JSON-friendly fields (for run.json and ``tff detectors``)."""
        return {"mean": list(self.mean), "std": list(self.std), "crop": self.crop,
                "resize": list(self.resize) if isinstance(self.resize, (tuple, list)) else self.resize,
                "interpolation": self.interpolation, "small_images": self.small_images,
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

    def spatial(self, img: Image.Image) -> tuple[np.ndarray, bool]:
        """Resize and centre-crop a PIL image → (HWC uint8 array, True when it was smaller than the crop)."""
        interp = _INTERPOLATION[self.interpolation]
        if isinstance(self.resize, int):
            img = resize_shorter(img, self.resize, interp)
        elif self.resize is not None:
            h, w = self.resize
            if img.size != (w, h):
                img = img.resize((int(w), int(h)), interp)
        small = self.crop is not None and min(img.size) < self.crop
        if small and self.small_images == "upscale":
            img = resize_shorter(img, self.crop, Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        if self.crop is not None:
            arr = center_crop(arr, self.crop)
        return arr, small


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
