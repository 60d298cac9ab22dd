"""``tff rank`` end to end (PNG decoding, cropping, LRP with ω taps on every layer, exact reduction) on a
synthetic on-disk dataset, against a plain input gradient of the same model on tensors already on the
device, in the same run. Prints JSON with images/s and the ratio (issue target on a GPU: ≥ 0.5)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HELP = "tff rank images/s (data loading included) vs plain gradient"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet50", help="detector architecture (any tff --arch name)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--images", type=int, default=2000, help="fakes in the synthetic dataset (ProGAN-val sized)")
    p.add_argument("--image-size", type=int, default=256, help="side of the PNGs (center224 crops 224)")
    p.add_argument("--preset", default="center224", choices=["center224", "full"],
                   help="center224: CenterCrop 224; full: whole images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=None, help="data-loading workers (default: cores minus one)")
    p.add_argument("--iters", type=int, default=10, help="timed plain-gradient iterations")


def run(args: argparse.Namespace) -> int:
    from ..analysis.rank import rank
    from ..distributed import resolve_device
    from . import machine
    from .lrp import _time, frozen_model_and_plain_step
    from .train import make_dataset

    device = resolve_device(args.device)
    crop = 224 if args.preset == "center224" else args.image_size
    model, _, plain = frozen_model_and_plain_step(args.arch, device, args.batch_size, crop)
    sec, _ = _time(plain, device, args.iters, 1)
    with tempfile.TemporaryDirectory(prefix="tff-bench-rank-") as tmp:
        root = make_dataset(Path(tmp), 2 * args.images, args.image_size)
        weights = Path(tmp) / "w.pth"
        torch.save({"model": model.state_dict()}, weights)
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # rank's data summary: stdout is this benchmark's JSON
            res = rank(args.arch, weights, root, None, min_prob=0.0, preset=args.preset, batch_size=args.batch_size,
                       device=str(device), num_workers=args.workers, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    plain_img_s = args.batch_size / sec
    rank_img_s = res.summary["fakes_used"] / elapsed
    print(json.dumps({
        "benchmark": "rank", "arch": args.arch, **machine(device), "batch_size": args.batch_size,
        "preset": args.preset,
        "images_ranked": res.summary["fakes_used"], "plain_gradient_img_s": round(plain_img_s, 2),
        "rank_end_to_end_img_s": round(rank_img_s, 2), "ratio_rank_vs_plain": round(rank_img_s / plain_img_s, 3),
        "note": "rank time includes building the explainer, decoding and the exact reduction"}, indent=2))
    return 0
