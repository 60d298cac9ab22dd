"""Training throughput: ``tff train``'s step with data loading and augmentation (from a synthetic
on-disk PNG dataset made in a temporary folder) vs a bare PyTorch loop of the same model, batch size
and autocast on tensors already on the device. Prints JSON with both images/s and their ratio (ours / bare).
On CPU the bare loop gets as many threads as our step computes with (--bare-threads to change it)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..results import link_or_copy

HELP = "training images/s: tff train's step (loading + augmentation) vs a bare PyTorch loop"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet50", help="detector architecture (any tff --arch name)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", default="off", choices=["off", "bf16"], help="bf16 autocast in both loops")
    p.add_argument("--steps", type=int, default=50, help="timed steps (after --warmup steps)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (loader workers start, cuDNN tunes)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: cores)")
    p.add_argument("--crop-size", type=int, default=224, help="RandomCrop size of the training pipeline")
    p.add_argument("--load-size", type=int, default=256, help="side of the synthetic images")
    p.add_argument("--color-robust", action="store_true", help="add RandomGrayscale(0.5) as in CR training")
    p.add_argument("--bare-threads", type=int, default=0,
                   help="CPU threads of the bare loop (0: the compute threads our step used, a like-for-like budget)")


def make_dataset(root: Path, n: int, size: int, unique: int = 128, seed: int = 0) -> Path:
    """``root/bench/{0_real,1_fake}`` with ``n`` size×size PNGs (``unique`` distinct ones, hard-linked)."""
    rng = np.random.default_rng(seed)
    unique += unique % 2
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        d = root / "bench" / ("0_real", "1_fake")[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{i:06d}.png"
        if i < unique:
            wave = np.sin(2 * np.pi * (xx * rng.uniform(0.5, 4) + yy * rng.uniform(0.5, 4)))
            img = rng.uniform(40, 215, (1, 1, 3)) + 30 * wave[..., None] + rng.normal(0, 6, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        else:
            src = d / f"{i % unique:06d}.png"  # same label: ``unique`` is even
            link_or_copy(src, path)
    return root


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def ours(root: Path, args: argparse.Namespace) -> tuple[float, dict]:
    """images/s of :class:`tffkit.train.Trainer` (loader, augmentation, normalisation, step)."""
    from .. import distributed as tdist
    from ..jobs.train import TrainOptions
    from ..train import Trainer

    options = TrainOptions(arch=args.arch, color_robust=args.color_robust, batch_size=args.batch_size, amp=args.amp,
                           crop_size=args.crop_size, load_size=args.load_size, workers=args.workers, progress=False)
    with contextlib.redirect_stdout(sys.stderr):  # the data it found: stdout carries only the JSON
        tr = Trainer(options, tdist.init(args.device), root, root)
    n, start = 0, None
    for i, batch in enumerate(tr.loader(0)):
        if i == args.warmup:
            _sync(tr.dev)
            start = time.perf_counter()
        _, k = tr.step(batch)
        n += k if start is not None else 0
    _sync(tr.dev)
    return n / (time.perf_counter() - start), {"workers": tr.workers, "threads": torch.get_num_threads(),
                                               "device": str(tr.dev)}


def bare(args: argparse.Namespace, dev: torch.device) -> float:
    """images/s of a plain loop: model, Adam, BCE-with-logits on pre-made tensors on the device."""
    from ..detectors import build_detector

    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    model = build_detector(args.arch).to(dev, memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 3, args.crop_size, args.crop_size, device=dev).contiguous(memory_format=fmt)
    y = (torch.arange(args.batch_size, device=dev) % 2).float()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            _sync(dev)
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            logits = model(x).reshape(-1)
        F.binary_cross_entropy_with_logits(logits.float(), y).backward()
        opt.step()
    _sync(dev)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> int:
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="tff-bench-train-") as tmp:
        root = make_dataset(Path(tmp), args.batch_size * (args.warmup + args.steps), args.load_size)
        ours_ips, info = ours(root, args)
    torch.set_num_threads(args.bare_threads or info["threads"])
    bare_threads = torch.get_num_threads()
    bare_ips = bare(args, torch.device(info["device"]))
    torch.set_num_threads(threads)
    from . import machine

    print(json.dumps({"benchmark": "train", "arch": args.arch, "batch_size": args.batch_size, "amp": args.amp,
                      "steps": args.steps, "crop_size": args.crop_size, **machine(torch.device(info["device"])),
                      **info, "bare_threads": bare_threads,
                      "ours_images_per_s": round(ours_ips, 2), "bare_images_per_s": round(bare_ips, 2),
                      "ratio": round(ours_ips / bare_ips, 4)}))
    return 0
