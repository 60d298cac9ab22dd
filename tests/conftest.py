"""Shared fixtures: tiny ForenSynths-like trees made on the fly, tiny detectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


def synth_image(rng: np.random.Generator, fake: bool, size: int = 32) -> np.ndarray:
    """A smooth colour field; fakes carry a faint periodic (checkerboard) upsampling artifact."""
    base = rng.uniform(40, 215, size=(3, 1, 1))
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = base + 30 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)))[None]
    img = img + rng.normal(0, 4, size=(3, size, size))
    if fake:
        checker = ((np.indices((size, size)).sum(0) % 2) * 2 - 1)[None]
        img = img + 12 * checker * np.array([1.0, 0.4, -0.6])[:, None, None]
    return np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def make_tree(root: Path, layout: dict[str, list[str]], n: int = 4, size: int = 32, seed: int = 0) -> Path:
    """Write root/<set>/[<class>/]{0_real,1_fake}/*.png; ``layout`` maps set → classes ([] = none)."""
    rng = np.random.default_rng(seed)
    for set_name, classes in layout.items():
        for cls in classes or [""]:
            for label_dir, fake in (("0_real", False), ("1_fake", True)):
                d = root / set_name / cls / label_dir
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    Image.fromarray(synth_image(rng, fake, size)).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two sets: one with two classes, one flat; 4 images per label and folder, 32×32."""
    return make_tree(tmp_path / "data", {"progan": ["car", "cat"], "stylegan": []})
