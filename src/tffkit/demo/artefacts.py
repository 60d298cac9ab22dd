"""Artefacts planted in the demo benchmark's fakes on purpose, each modelled on a cause reported for real generators.

1. **Upsampling trace** (per family): the decoder's ×2 upsampling operator (:mod:`tffkit.demo.generators`).
2. **Colour formation** (shared by every family, strength ``colour``): the generator's last layer — the one
   that writes RGB, ``toRGB`` — mixes its channels into colour unlike a camera does, so the fakes' chroma
   statistics differ from photographs'. McCloskey & Albright (arXiv:1812.08247, 2018; ICIP 2019) show a GAN's
   toRGB weights overlap and go negative, unlike camera spectral sensitivities; over-saturated colours are the
   known artefact of diffusion models sampled with strong classifier-free guidance (Saharia et al. 2022, Imagen,
   introduced dynamic thresholding against it); colour statistics are a detection cue in their own right ("Did
   You Note My Palette?", 2024). We plant it as a fixed luma-preserving linear map of the chroma (BT.601 Cb/Cr)
   folded into each trained generator's output convolution: the chroma is amplified by ``1 + colour``
   (saturation boosted; ``colour = 0`` plants nothing). Luma is unchanged, so a grayscale copy of a fake carries
   none of it (up to rounding, and where a boosted colour leaves the RGB gamut and is clipped). A *compressed*
   saturation was tried first: grayscale — zero saturation — then looks like an extreme fake and does not lower
   the detector's probability.
3. **Format shortcut** (optional, off by default): reals stored as JPEG, fakes as PNG — a dataset bias a
   detector can learn instead of any forensic feature.

Every strength is recorded in ``benchmark.json``; which image carries what is listed in ``ground_truth.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["LUMA", "PlantedArtefacts", "chroma", "chroma_stats", "color_matrix", "plant_color"]

#: ITU-R BT.601 luma weights (PIL's ``convert('L')``, hence the grayscale ablation's).
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class PlantedArtefacts:
    """Strengths of the planted artefacts (``color`` in [0, 2]: the fakes' chroma gain minus one;
    ``format_shortcut``: reals as JPEG of ``jpeg_quality``, fakes as PNG). :meth:`record` keeps benchmark.json's
    key ``colour``."""

    color: float = 0.5
    format_shortcut: bool = False
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.color) <= 2.0:
            raise ValueError(f"colour strength must be in [0, 2], got {self.color}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    def record(self) -> dict:
        """The strengths and the design constants, for ``benchmark.json``."""
        return {"colour": self.color, "format_shortcut": self.format_shortcut, "jpeg_quality": self.jpeg_quality,
                "colour_design": {"chroma_gain": 1 + float(self.color), "luma": list(LUMA),
                                  "space": "BT.601 YCbCr, luma unchanged"}}


def _rgb_to_ycc() -> np.ndarray:
    r, g, b = LUMA
    y = np.array([r, g, b])
    cb = (np.array([0.0, 0.0, 1.0]) - y) / (2 * (1 - b))
    cr = (np.array([1.0, 0.0, 0.0]) - y) / (2 * (1 - r))
    return np.stack([y, cb, cr])


def color_matrix(strength: float) -> np.ndarray:
    """The 3×3 matrix M of the planted colour formation, ``rgb' = M @ rgb``: luma kept, chroma × (1 + strength).
    Linear, so it maps the image range's centre (mid-grey, 0 in [-1, 1]) and every grey to itself."""
    fwd = _rgb_to_ycc()
    gain = 1.0 + float(strength)
    return np.linalg.inv(fwd) @ np.diag([1.0, gain, gain]) @ fwd


@torch.no_grad()
def plant_color(model: nn.Module, strength: float) -> None:
    """Fold the colour formation of ``strength`` into ``model.decoder``'s last (output) convolution, in place."""
    conv = model.decoder[-1]
    if not isinstance(conv, nn.Conv2d) or conv.out_channels != 3:
        raise TypeError("the generator's last layer must be a 3-channel convolution")
    m = torch.as_tensor(color_matrix(strength), dtype=conv.weight.dtype)
    conv.weight.copy_(torch.einsum("oc,cikl->oikl", m, conv.weight))
    if conv.bias is not None:
        conv.bias.copy_(m @ conv.bias)


def chroma(images: np.ndarray) -> np.ndarray:
    """BT.601 (Cb, Cr) of uint8 ``(..., 3)`` RGB images, in grey levels (0 = neutral): shape ``(..., 2)``."""
    x = np.asarray(images, np.float64)
    return x @ _rgb_to_ycc()[1:].T


def chroma_stats(images: np.ndarray) -> dict[str, float]:
    """Mean chroma magnitude (saturation), mean Cb and mean Cr of uint8 ``(N, H, W, 3)`` images, in grey levels."""
    c = chroma(images)
    return {"saturation": float(np.hypot(c[..., 0], c[..., 1]).mean()), "mean_cb": float(c[..., 0].mean()),
            "mean_cr": float(c[..., 1].mean())}
