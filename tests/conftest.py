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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny models run faster (and far steadier on a shared CPU) that way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two sets: one with two classes, one flat; 4 images per label and folder, 32×32."""
    return make_tree(tmp_path / "data", {"progan": ["car", "cat"], "stylegan": []})


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny_resnet trained for a few seconds to spot the checkerboard artifact; (weights, data root).

    The data root has a training family ``progan`` and two unseen sets; training uses a separate tree.
    """
    from tffkit.data import find_samples, load_rgb
    from tffkit.detectors import save_checkpoint

    base = tmp_path_factory.mktemp("trained")
    train_root = make_tree(base / "train", {"progan": []}, n=48, seed=1)
    test_root = make_tree(base / "test", {"progan": [], "gan_b": [], "gan_c": []}, n=16, seed=2)
    samples = find_samples(train_root)
    x = torch.stack([torch.from_numpy(np.array(load_rgb(s.path))).permute(2, 0, 1) for s in samples])
    y = torch.tensor([float(s.label) for s in samples])
    return save_checkpoint(base / "tiny.pth", train_tiny(x, y)), test_root


def train_tiny(x: torch.Tensor, y: torch.Tensor, seed: int = 0, steps: int = 40) -> torch.nn.Module:
    """tiny_resnet trained by Adam on uint8 images ``x`` and 0/1 labels ``y`` (batches of 32), in eval mode."""
    from tffkit.data import normalize
    from tffkit.detectors import build_detector

    torch.manual_seed(seed)
    model = build_detector("tiny_resnet")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:32]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(normalize(x[idx])).reshape(-1), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it), so parallel runs do not collide on a fixed port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(args: list[str], nproc: int = 2, timeout: int = 300) -> None:
    """Run ``python -m tffkit ARGS`` under torchrun with ``nproc`` CPU processes (one thread each) on a free port.

    Every torchrun test goes through here. A launch costs seconds of start-up, so the default run checks each kind
    of pass (evaluate, rank, dropout, lrpmax, generator, train) once against an in-process run."""
    import os
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "tffkit", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip (with the reason shown) where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
